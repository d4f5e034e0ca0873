// A stream that stops before its consumer took every item leaves nothing
// open: neither the fds in items already received, nor the producer's.
import { openSync } from 'node:fs';
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { Fd, type RpcStream, connect, createServer } from '../src/index.js';
import { eventually, openFdCount } from './helpers.js';

interface Files {
  methods: {
    files(n: number): AsyncIterable<Fd>;
    ping(): number;
  };
}

const server = createServer<Files>({
  service: 'files',
  handlers: {
    async *files(n) {
      for (let i = 0; i < n; i++) yield Fd.transfer(openSync('/dev/null', 'r'));
    },
    ping: () => 1,
  },
});
const [a, b] = socketPair();
void server.serve(a);
const client = await connect<Files>(b);
afterAll(async () => {
  await client.$close();
  await server.close({ timeout: 100 });
});

// Bound on the wait for fds to be closed: liveness, not speed.
const SETTLES = 3_000;

async function takeOneAndBreak(stream: RpcStream<Fd>): Promise<void> {
  for await (const fd of stream) {
    fd.close();
    break;
  }
}

describe('a consumer that breaks out of a stream', () => {
  it('closes the fds of items received but not taken, the stream still running', async () => {
    await client.ping(); // warm up
    const before = openFdCount();
    for (let round = 0; round < 3; round++) {
      const stream = client.files(100) as RpcStream<Fd>;
      await eventually(() => stream.buffered === 32); // the whole window is here
      await takeOneAndBreak(stream);
    }
    await eventually(() => openFdCount() === before, SETTLES);
  });

  it('closes the fds of items received but not taken, the stream already ended', async () => {
    await client.ping();
    const before = openFdCount();
    for (let round = 0; round < 3; round++) {
      const stream = client.files(10) as RpcStream<Fd>;
      await eventually(() => stream.buffered === 10);
      await client.ping(); // STREAM_END came before this answer
      await takeOneAndBreak(stream);
    }
    await eventually(() => openFdCount() === before, SETTLES);
  });
});
