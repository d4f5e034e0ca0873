// Streams with credit-based backpressure, and cancellation by the consumer.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { RpcCode, RpcStream, STREAM_WINDOW, connect, createServer } from '../src/index.js';
import { eventually, tempDir } from './helpers.js';
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
      handlers: { relay: (n) => (returned = numbers(n)), async *count(n) { yield* numbers(n); } },
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
