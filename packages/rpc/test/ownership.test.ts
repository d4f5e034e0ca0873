// Who a channel's events reach: a connection is found through its channel
// (its listeners are shared by every connection), so a channel carries one
// connection for good, and a server's own bookkeeping does not hang on
// listeners a user can remove.
import { once } from 'node:events';
import { FramedChannel } from '@afunix/framing';
import { socketPair } from '@afunix/transport';
import { describe, expect, it } from 'vitest';
import { RpcCode, RpcConnection, connect, createServer } from '../src/index.js';
import { eventually } from './helpers.js';

interface Adder {
  methods: { add(a: number, b: number): number };
}

describe('a channel and its connection', () => {
  it('carries one connection: a second is refused, and the first still hears the channel close', async () => {
    const [a, b] = socketPair();
    const channel = new FramedChannel(a);
    const peer = new FramedChannel(b);
    const options = { handlers: new Map() };
    const first = new RpcConnection(channel, options, { credentials: null, streams: [] });
    expect(() => new RpcConnection(channel, options, { credentials: null, streams: [] })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
    const pending = first.call('add', [1, 2]) as Promise<unknown>;
    const closed = once(first, 'close');
    peer.destroy();
    await expect(pending).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    const [reason] = await closed;
    expect(reason).toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    expect(first.closed).toBe(true);
  });
});

describe("a server's connections", () => {
  it("are forgotten, and 'disconnect' emitted, before the connection's own 'close' listeners run", async () => {
    const server = createServer<Adder>({ service: 'adder', handlers: { add: (_ctx, x, y) => x + y } });
    const order: string[] = [];
    server.on('connection', (conn) => conn.on('close', () => order.push(`close, ${server.connections.size} left`)));
    server.on('disconnect', () => order.push('disconnect'));
    const [a, b] = socketPair();
    void server.serve(a);
    const client = await connect<Adder>(b);
    expect(await client.add(2, 3)).toBe(5);
    expect(server.connections.size).toBe(1);
    await client.$close();
    await eventually(() => order.length === 2);
    expect(order).toEqual(['disconnect', 'close, 0 left']);
    await server.close({ timeout: 0 });
  });

  it("are forgotten even when every 'close' listener of the connection was removed", async () => {
    const server = createServer<Adder>({ service: 'adder', handlers: { add: (_ctx, x, y) => x + y } });
    server.on('connection', (conn) => conn.removeAllListeners('close'));
    const disconnected = once(server, 'disconnect');
    const [a, b] = socketPair();
    void server.serve(a);
    const client = await connect<Adder>(b);
    expect(await client.add(1, 1)).toBe(2);
    await client.$close();
    await disconnected;
    expect(server.connections.size).toBe(0);
    await server.close({ timeout: 0 });
  });
});
