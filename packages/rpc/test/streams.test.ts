// Streams with credit-based backpressure, and cancellation by the consumer.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { RpcCode, RpcStream, STREAM_WINDOW, connect, createServer } from '../src/index.js';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Msg, PROTOCOL_VERSION } from '../src/protocol.js';
import { eventually, tempDir } from './helpers.js';
import { helloFrame, messageFrame } from './wire.js';
import { useLab } from './lab.js';

const lab = useLab();

describe('streams', () => {
  it('delivers every item in order with for await', async () => {
    const stream = lab.client.count(1000);
    expect(stream).toBeInstanceOf(RpcStream);
    const items: number[] = [];
    for await (const n of stream) items.push(n);
    expect(items).toEqual(Array.from({ length: 1000 }, (_, i) => i));
  });

  it('a deadline or an abort ends a stream at once: the items still buffered are not read past it', async () => {
    const controller = new AbortController();
    for (const [stream, code] of [
      [lab.client.$with({ timeout: 200 }).count(10_000), RpcCode.TIMEOUT],
      [lab.client.$with({ signal: controller.signal }).count(10_000), 'ABORT_ERR'],
    ] as const) {
      expect(await stream.next()).toEqual({ value: 0, done: false });
      await eventually(() => stream.buffered > 0); // a window's worth arrives meanwhile
      if (code === 'ABORT_ERR') controller.abort();
      else await new Promise((r) => setTimeout(r, 300));
      await expect(stream.next()).rejects.toMatchObject({ code });
      expect(stream.buffered).toBe(0);
      expect(await stream.next()).toEqual({ value: undefined, done: true });
    }
  });

  it('answers next() called several times without waiting, each in turn, and the calls past the end', async () => {
    const stream = lab.client.count(3);
    const results = await Promise.all([stream.next(), stream.next(), stream.next(), stream.next(), stream.next()]);
    expect(results).toEqual([
      { value: 0, done: false },
      { value: 1, done: false },
      { value: 2, done: false },
      { value: undefined, done: true },
      { value: undefined, done: true },
    ]);
    // Waiting when the stream fails: the next in line hears why, those after it that it ended.
    const failing = lab.client.unsendableItem(true);
    const settled = await Promise.allSettled([failing.next(), failing.next(), failing.next()]);
    expect(settled).toMatchObject([
      { status: 'fulfilled', value: { value: 1, done: false } },
      { status: 'rejected', reason: { code: 'EBADF' } },
      { status: 'fulfilled', value: { value: undefined, done: true } },
    ]);
  });

  it('bounds the producer by the consumer: a slow consumer never makes it run ahead', async () => {
    const before = (await lab.client.seen()).produced;
    const stream = lab.client.count(1_000_000);
    const it = stream[Symbol.asyncIterator]();
    for (let i = 0; i < 3; i++) expect((await it.next()).value).toBe(i);
    // Give the producer every chance to run ahead, then look.
    await new Promise((r) => setTimeout(r, 200));
    const produced = (await lab.client.seen()).produced - before;
    expect(produced).toBeGreaterThanOrEqual(3);
    expect(produced).toBeLessThanOrEqual(3 + STREAM_WINDOW + 1);
    expect(stream.buffered).toBeLessThanOrEqual(STREAM_WINDOW);
    stream.cancel();
  });

  it('cancels the stream on the server when the consumer breaks out', async () => {
    const before = await lab.client.seen();
    for await (const n of lab.client.count(1_000_000)) if (n === 5) break;
    await eventually(async () => (await lab.client.seen()).streamsCancelled > before.streamsCancelled);
    const after = await lab.client.seen();
    expect(after.produced - before.produced).toBeLessThan(1_000_000);
    // The connection carries on.
    expect(await lab.client.add(1, 1)).toBe(2);
  });

  it('ends with an empty stream for zero items', async () => {
    const items: number[] = [];
    for await (const n of lab.client.count(0)) items.push(n);
    expect(items).toEqual([]);
  });
});

describe('a handler that returns an AsyncIterable without being an async generator function', () => {
  interface Relay {
    methods: { relay(n: number): AsyncIterable<number>; count(n: number): AsyncIterable<number> };
  }

  it('fails its calls with NOT_A_STREAM (it was not announced), and its iterable is stopped', async () => {
    const dir = tempDir();
    let stopped = 0;
    let returned: AsyncGenerator<number> | null = null;
    async function* numbers(n: number) {
      try {
        for (let i = 0; i < n; i++) yield i;
      } finally {
        stopped++;
      }
    }
    const server = createServer<Relay>({
      service: 'relay',
      handlers: { relay: (_ctx, n) => (returned = numbers(n)), async *count(_ctx, n) { yield* numbers(n); } },
    });
    try {
      await server.listen(join(dir.dir, 'relay.sock'));
      const client = await connect<Relay>(join(dir.dir, 'relay.sock'));
      // Announced: a stream, as typed.
      const items: number[] = [];
      for await (const n of client.count(3)) items.push(n);
      expect(items).toEqual([0, 1, 2]);
      // Not announced: the client awaits a value, and hears why there is none.
      await expect(client.$connection!.call('relay', [3])).rejects.toMatchObject({
        code: RpcCode.NOT_A_STREAM,
        message: expect.stringContaining('async function*'),
      });
      expect(stopped).toBe(1); // count's
      expect(await returned!.next()).toEqual({ value: undefined, done: true }); // relay's, returned unstarted
      expect(await client.$describe()).toMatchObject({ methods: expect.arrayContaining([expect.objectContaining({ name: 'count', stream: true })]) });
      await client.$close();
    } finally {
      await server.close();
      dir.cleanup();
    }
  });
});

// Sends its request, reads nothing for 1 s (the server waits for room),
// reads everything for 1 s, then hangs up on a server with writes queued.
const GREEDY_CONSUMER = `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(bytes.fromhex(sys.argv[2]))
time.sleep(1)
n, until = 0, time.time() + 1
while time.time() < until:
    n += len(s.recv(1 << 16))
print(n, flush=True)
s.close()
`;

describe('a consumer that grants far more credit than it needs', () => {
  it('does not hold the server: its stream yields to the event loop, and stops when the consumer goes', async () => {
    const dir = tempDir();
    let produced = 0;
    let stopped = false;
    // Never waits on I/O: each item resolves at once.
    const server = createServer<{ methods: { count(): AsyncIterable<number>; add(a: number, b: number): number } }>({
      service: 'greedy',
      handlers: {
        async *count() {
          try {
            for (;;) yield produced++;
          } finally {
            stopped = true;
          }
        },
        add: (_ctx, a, b) => a + b,
      },
    });
    const path = join(dir.dir, 'greedy.sock');
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    try {
      await server.listen(path);
      // A consumer by hand, in another process so that it reads as fast as
      // the server writes: 2^20 items of credit 64 times over, every byte
      // read and dropped, until stdin closes.
      const request = Buffer.concat([
        helloFrame({ protocol: PROTOCOL_VERSION, service: 'greedy', streams: [] }),
        messageFrame([Msg.REQUEST, 1, 'count', []]),
        ...Array.from({ length: 64 }, () => messageFrame([Msg.CREDIT, 1, 2 ** 20])),
      ]);
      const greedy = spawn('python3', ['-c', GREEDY_CONSUMER, path, request.toString('hex')], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      greedy.stdout.on('data', (chunk: Buffer) => void (out += chunk));
      await once(greedy, 'exit');
      expect(Number(out)).toBeGreaterThan(1_000_000);
      // The server's writes now fail (EPIPE): its stream stops at once,
      // this process's timers run, and another client is served.
      await eventually(() => stopped, 3_000);
      const ticksBefore = ticks;
      await eventually(() => ticks > ticksBefore, 3_000);
      const other = await connect<{ methods: { add(a: number, b: number): number } }>(path);
      expect(await other.add(1, 2)).toBe(3);
      await other.$close();
      expect(produced).toBeLessThan(64 * 2 ** 20);
    } finally {
      clearInterval(ticker);
      await server.close({ timeout: 100 });
      dir.cleanup();
    }
  });
});

describe('a stream its caller let go of, unfinished', () => {
  it('is cancelled once collected: its producer stops and its slot on the server frees up', async () => {
    const dir = tempDir();
    try {
      const fixture = join(import.meta.dirname, 'fixtures', 'abandoned-streams.mjs');
      const child = spawn(process.execPath, ['--expose-gc', fixture, join(dir.dir, 'abandon.sock')], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => void (out += chunk));
      const [status] = await once(child, 'exit');
      expect(status).toBe(0);
      // 12 streams through a server that allows 8 calls in flight.
      expect(JSON.parse(out)).toEqual({ firsts: new Array(12).fill(0), stopped: 12, handling: 0, sum: 3 });
    } finally {
      dir.cleanup();
    }
  });
});
