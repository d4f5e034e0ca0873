// Every call settles: whatever the answer turns out to be, the caller's
// promise (or stream) comes to an end, never a hang.
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { FramedChannel } from '@afunix/framing';
import { RpcCode, RpcStream, connect, createServer } from '../src/index.js';
import { decode, encode } from '../src/codec.js';
import { Msg, PROTOCOL_VERSION } from '../src/protocol.js';

// A hang shows up as this test timing out: a liveness bound, not speed.
const HANG = 5_000;

interface Lists {
  methods: {
    list(n: number): AsyncIterable<number>;
  };
}

describe('a stream the caller did not know to be one', () => {
  // Our servers announce every method that streams (and refuse to stream
  // one they did not: NOT_A_STREAM), but another implementation may not:
  // this peer says hello with no streams, then streams `list` anyway.
  const [a, b] = socketPair();
  const peer = new FramedChannel(a);
  peer.onFrame = (payload) => {
    const m = decode(payload, null, () => {}).message as unknown[];
    if (m[0] === Msg.HELLO) return void peer.send(encode([Msg.HELLO, { protocol: PROTOCOL_VERSION, service: 'lists', streams: [] }]).bytes);
    if (m[0] !== Msg.REQUEST) return;
    const [, id, , args] = m as [number, number, string, number[]];
    for (let i = 0; i < args[0]!; i++) peer.send(encode([Msg.STREAM_ITEM, id, i]).bytes);
    peer.send(encode([Msg.STREAM_END, id]).bytes);
  };
  const client = connect<Lists>(b, { service: 'lists' });
  afterAll(async () => {
    await (await client).$close();
    peer.destroy();
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

interface Sizes {
  methods: {
    size(b: Buffer): number;
    slow(ms: number): string;
  };
}

async function sizes(): Promise<{ client: Awaited<ReturnType<typeof connect<Sizes>>>; close(): Promise<void> }> {
  const server = createServer<Sizes>({
    service: 'sizes',
    handlers: {
      size: (_ctx, b) => b.length,
      slow: async (_ctx, ms) => {
        await new Promise((r) => setTimeout(r, ms));
        return 'done';
      },
    },
  });
  const [a, b] = socketPair();
  void server.serve(a);
  const client = await connect<Sizes>(b);
  return {
    client,
    async close() {
      await client.$close();
      await server.close({ timeout: 100 });
    },
  };
}

describe('a burst of calls past maxOutboundBytes', () => {
  it('fails every call, the one whose send cut the connection off included', { timeout: HANG }, async () => {
    const { client, close } = await sizes();
    try {
      // 40 MiB queued at once, over the 32 MiB a connection may hold for its peer.
      const calls = Array.from({ length: 40 }, () => client.size(Buffer.alloc(1 << 20)));
      const outcomes = await Promise.allSettled(calls);
      const codes = outcomes.map((o) => (o.status === 'rejected' ? (o.reason as { code?: string }).code : 'ok'));
      expect(codes).toContain(RpcCode.CONNECTION_CLOSED);
      expect(codes.every((c) => c === 'ok' || c === RpcCode.CONNECTION_CLOSED)).toBe(true);
    } finally {
      await close();
    }
  });
});

describe('a call timeout', () => {
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.name);
  process.on('warning', onWarning);
  afterAll(() => void process.off('warning', onWarning));

  it('longer than setTimeout can wait (30 days) is a deadline far away, not 1 ms', { timeout: HANG }, async () => {
    const { client, close } = await sizes();
    try {
      expect(await client.$with({ timeout: 30 * 24 * 3600 * 1000 }).slow(50)).toBe('done');
      expect(warnings).not.toContain('TimeoutOverflowWarning');
    } finally {
      await close();
    }
  });

  it('Infinity means no deadline', { timeout: HANG }, async () => {
    const { client, close } = await sizes();
    try {
      expect(await client.$with({ timeout: Infinity }).slow(50)).toBe('done');
      expect(warnings).not.toContain('TimeoutOverflowWarning');
    } finally {
      await close();
    }
  });

  it.each([[-1], [Number.NaN], [-Infinity], ['100']])('%s fails the call with ERR_INVALID_ARG_VALUE', { timeout: HANG }, async (timeout) => {
    const { client, close } = await sizes();
    try {
      await expect(client.$with({ timeout: timeout as number }).slow(50)).rejects.toMatchObject({
        code: 'ERR_INVALID_ARG_VALUE',
        message: expect.stringContaining('timeout'),
      });
      expect(await client.slow(0)).toBe('done'); // the connection carries on
    } finally {
      await close();
    }
  });
});
