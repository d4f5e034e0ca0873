// A client that stops reading while the server emits: the server's queue
// for it is capped, it is cut off with SLOW_CONSUMER, and others go on.
// A client's own queue has a cap it can raise; a subscriber that cannot
// take an event does not keep it from the others.
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { socketPair } from '@afunix/transport';
import { RpcCode, type RpcConnection, RpcServer, connect } from '../src/index.js';
import { eventually, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

interface Feed {
  methods: { ping(): string; len(data: Buffer): number };
  events: { chunk(data: Buffer): void };
}

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('slow consumers', () => {
  it('cuts off a client that stops reading once its queue passes the cap; others are unaffected', async () => {
    const cap = 4 * 1024 * 1024;
    const server = new RpcServer<Feed>({ service: 'feed', maxOutboundBytes: cap, handlers: { ping: () => 'pong', len: (_ctx, d) => d.length } });
    const path = join(tmp.dir, 'feed.sock');
    await server.listen(path);
    const stuck = await connect<Feed>(path);
    const healthy = await connect<Feed>(path);
    let healthyGot = 0;
    stuck.$events.on('chunk', () => {});
    healthy.$events.on('chunk', () => healthyGot++);
    await stuck.ping(); // the subscriptions have arrived
    await healthy.ping();
    stuck.$connection!.channel.pause(); // stops reading from the socket: the kernel buffers fill

    const [stuckConn] = [...server.connections].filter((c) => c.stats.callsIn === 1 && c.isSubscribed('chunk')).slice(0, 1);
    const reasons: Error[] = [];
    server.on('disconnect', (_conn: RpcConnection, reason) => reason && reasons.push(reason));
    const chunk = Buffer.alloc(64 * 1024, 1);
    let sent = 0;
    while (server.connections.size === 2 && sent < 4096) {
      server.publish('chunk', chunk);
      sent++;
      // The healthy client keeps up: wait until it has everything so far.
      await eventually(() => healthyGot === sent);
    }
    expect(server.connections.size).toBe(1);
    expect(reasons.map((r) => (r as { code?: string }).code)).toContain(RpcCode.SLOW_CONSUMER);
    expect(stuckConn).toBeDefined();
    // Nowhere near all of it was queued: 4 MiB cap, 64 KiB each.
    expect(sent).toBeLessThan(4096);
    expect(await healthy.ping()).toBe('pong');
    expect(healthyGot).toBeGreaterThan(0);
    await healthy.$close();
    const closed = once(stuck.$lifecycle as never, 'close');
    await stuck.$close();
    await closed;
    await server.close();
  });
});

describe('a client that starts many large calls at once', () => {
  it('is not cut off when its maxOutboundBytes allows the burst', async () => {
    const server = new RpcServer<Feed>({ service: 'feed', handlers: { ping: () => 'pong', len: (_ctx, d) => d.length } });
    const path = join(tmp.dir, 'burst.sock');
    await server.listen(path);
    // 40 MiB queued at once: over the default cap of 32 MiB, under this one.
    const c = await connect<Feed>(path, { maxOutboundBytes: 64 * MiB });
    const lost = new Promise<unknown>((resolve) => c.$lifecycle.once('disconnect', (reason) => resolve({ lost: reason })));
    const arg = Buffer.alloc(MiB, 1);
    const calls = Promise.all(Array.from({ length: 40 }, () => c.len(arg)));
    expect(await Promise.race([calls, lost])).toEqual(Array(40).fill(MiB));
    await c.$close();
    await server.close({ timeout: 0 });
  });
});

describe('publish to a subscriber that cannot take the event', () => {
  it('skips and reports that one; the others get the event, and its connection lives', async () => {
    const server = new RpcServer<Feed>({ service: 'feed', handlers: { ping: () => 'pong', len: (_ctx, d) => d.length } });
    const open = async (maxMessageSize?: number) => {
      const [a, b] = socketPair();
      const served = server.serve(a);
      const client = await connect<Feed>(b, { maxMessageSize });
      const got: number[] = [];
      client.$events.on('chunk', (data) => got.push(data.length));
      await client.ping(); // the subscription has arrived
      return { client, conn: await served, got };
    };
    // First in line, so that it is met before the other.
    const small = await open(MiB);
    const large = await open();
    const failures: Array<{ code?: string; conn: RpcConnection; event: string }> = [];
    server.on('publishError', (err, conn, event) => failures.push({ code: (err as { code?: string }).code, conn, event }));

    expect(server.publish('chunk', Buffer.alloc(2 * MiB))).toBe(1);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ code: RpcCode.MESSAGE_TOO_LARGE, event: 'chunk' });
    expect(failures[0]!.conn).toBe(small.conn);
    await eventually(() => large.got.length === 1);

    expect(server.publish('chunk', Buffer.alloc(1024))).toBe(2);
    await eventually(() => small.got.length === 1 && large.got.length === 2);
    expect(small.got).toEqual([1024]);
    expect(large.got).toEqual([2 * MiB, 1024]);
    expect(small.conn.closed).toBe(false);
    await small.client.$close();
    await large.client.$close();
    await server.close({ timeout: 0 });
  });

  it('still throws ENCODE_ERROR for arguments that cannot travel at all', async () => {
    const server = new RpcServer<Feed>({ service: 'feed', handlers: { ping: () => 'pong', len: (_ctx, d) => d.length } });
    const [a, b] = socketPair();
    const served = server.serve(a);
    const client = await connect<Feed>(b);
    client.$events.on('chunk', () => {});
    await client.ping();
    await served;
    expect(() => (server.publish as (name: string, ...args: unknown[]) => number)('chunk', () => {})).toThrow(
      expect.objectContaining({ code: RpcCode.ENCODE_ERROR }),
    );
    await client.$close();
    await server.close({ timeout: 0 });
  });
});
