// A stream that stops before its consumer took every item leaves nothing
// open: neither the fds in items already received, nor the producer's.
import { openSync } from 'node:fs';
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { Fd, RpcCode, type RpcStream, connect, createServer } from '../src/index.js';
import { addedSince, eventually, openFds } from './helpers.js';

interface Files {
  methods: {
    files(n: number): AsyncIterable<Fd>;
    ping(): number;
  };
}

const server = createServer<Files>({
  service: 'files',
  handlers: {
    async *files(_ctx, n) {
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
    const before = openFds();
    for (let round = 0; round < 3; round++) {
      const stream = client.files(100) as RpcStream<Fd>;
      await eventually(() => stream.buffered === 32); // the whole window is here
      await takeOneAndBreak(stream);
    }
    await eventually(() => addedSince(before).length === 0, SETTLES);
  });

  it('closes the fds of items received but not taken, the stream already ended', async () => {
    await client.ping();
    const before = openFds();
    for (let round = 0; round < 3; round++) {
      const stream = client.files(10) as RpcStream<Fd>;
      await eventually(() => stream.buffered === 10);
      await client.ping(); // STREAM_END came before this answer
      await takeOneAndBreak(stream);
    }
    await eventually(() => addedSince(before).length === 0, SETTLES);
  });
});

interface Awkward {
  methods: {
    awkward(kind: 'unencodable' | 'too large'): AsyncIterable<unknown>;
  };
}

describe('a stream item that cannot be sent', () => {
  const stops: Array<{ kind: string; aborted: boolean; reason: unknown }> = [];
  const server = createServer<Awkward>({
    service: 'awkward',
    handlers: {
      async *awkward(ctx, kind) {
        try {
          yield 1;
          yield kind === 'unencodable' ? { f() {} } : 'x'.repeat(10_000);
          yield 3;
        } finally {
          stops.push({ kind, aborted: ctx.signal.aborted, reason: ctx.signal.reason });
        }
      },
    },
  });
  const [a, b] = socketPair();
  void server.serve(a);
  const client = connect<Awkward>(b, { maxMessageSize: 4096 });
  afterAll(async () => {
    await (await client).$close();
    await server.close({ timeout: 100 });
  });

  it.each([
    ['unencodable', RpcCode.ENCODE_ERROR],
    ['too large', RpcCode.MESSAGE_TOO_LARGE],
  ] as const)('%s: the consumer gets %s, the generator is closed and its signal aborted', async (kind, code) => {
    const items: unknown[] = [];
    const err = await (async () => {
      for await (const item of (await client).awkward(kind)) items.push(item);
    })().catch((e: unknown) => e);
    expect(items).toEqual([1]);
    expect(err).toMatchObject({ code });
    await eventually(() => stops.some((s) => s.kind === kind), SETTLES);
    expect(stops.find((s) => s.kind === kind)).toMatchObject({ aborted: true, reason: { code } });
  });
});
