// Every call settles: whatever the answer turns out to be, the caller's
// promise (or stream) comes to an end, never a hang.
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { RpcStream, connect, createServer } from '../src/index.js';

// A hang shows up as this test timing out: a liveness bound, not speed.
const HANG = 5_000;

async function* upTo(n: number): AsyncGenerator<number> {
  for (let i = 0; i < n; i++) yield i;
}

interface Lists {
  methods: {
    // A plain function returning an AsyncIterable: not announced as a stream.
    list(n: number): AsyncIterable<number>;
  };
}

describe('a stream the caller did not know to be one', () => {
  const server = createServer<Lists>({ service: 'lists', handlers: { list: (n) => upTo(n) } });
  const [a, b] = socketPair();
  void server.serve(a);
  const client = connect<Lists>(b);
  afterAll(async () => {
    await (await client).$close();
    await server.close({ timeout: 100 });
  });

  async function collect(n: number): Promise<number[]> {
    const stream = (await (await client).list(n)) as unknown as RpcStream<number>;
    expect(stream).toBeInstanceOf(RpcStream);
    const items: number[] = [];
    for await (const item of stream) items.push(item);
    return items;
  }

  it('with items: the awaited value is a stream of them that ends', { timeout: HANG }, async () => {
    expect(await collect(2)).toEqual([0, 1]);
  });

  it('empty: the awaited value is a stream that ends at once', { timeout: HANG }, async () => {
    expect(await collect(0)).toEqual([]);
  });
});
