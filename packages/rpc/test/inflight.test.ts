// What one connection's peer can make the other side hold: notifications
// count against maxInFlight like calls (a peer cannot start handlers
// without bound by sending notifications instead of requests), and event
// subscriptions are capped.
import { encodeHeader } from '@afunix/framing';
import { createServer as createSocketServer, socketPair } from '@afunix/transport';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeToBuffer } from '../src/codec.js';
import { describe, expect, it } from 'vitest';
import { type CallContext, Msg, RpcCode, STREAM_WINDOW, connect, createServer } from '../src/index.js';
import { eventually } from './helpers.js';

interface Gate {
  methods: { wait(): void; add(a: number, b: number): number };
}

describe('notifications and maxInFlight', () => {
  it('past the limit they are dropped (they have no answer to carry OVERLOADED), and they take the slots of calls', async () => {
    let running = 0;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const server = createServer<Gate>({
      service: 'gate',
      maxInFlight: 4,
      handlers: {
        async wait() {
          running++;
          await gate;
        },
        add: (_ctx, a, b) => a + b,
      },
    });
    const [a, b] = socketPair();
    const served = server.serve(a);
    const client = await connect<Gate>(b);
    const conn = await served;
    for (let i = 0; i < 100; i++) client.$notify.wait();
    await eventually(() => running === 4);
    // The four running notifications hold every slot: a call is refused.
    await expect(client.add(1, 1)).rejects.toMatchObject({ code: RpcCode.OVERLOADED });
    await new Promise((r) => setTimeout(r, 50));
    expect(running).toBe(4); // the other 96 were dropped, not queued
    open();
    await eventually(async () => (await client.add(1, 1).catch(() => 0)) === 2);
    await client.$close();
    await eventually(() => conn.closed);
    await server.close({ timeout: 0 });
  });

  it("a notification's handler is aborted when the connection closes", async () => {
    let aborted = 0;
    const server = createServer<Gate>({
      service: 'gate',
      handlers: {
        wait: (ctx: CallContext) =>
          new Promise<void>((resolve) => {
            ctx.signal.addEventListener('abort', () => {
              aborted++;
              resolve();
            });
          }),
        add: (_ctx, a, b) => a + b,
      },
    });
    const [a, b] = socketPair();
    void server.serve(a);
    const client = await connect<Gate>(b);
    client.$notify.wait();
    client.$notify.wait();
    expect(await client.add(1, 2)).toBe(3); // handled in order: both waits are running
    await client.$close();
    await eventually(() => aborted === 2);
    await server.close({ timeout: 0 });
  });
});

describe('event subscriptions', () => {
  it('are capped at 4096 names per connection: past that, PROTOCOL_ERROR for that connection only', async () => {
    const server = createServer<Gate>({ service: 'gate', handlers: { wait: () => {}, add: (_ctx, a, b) => a + b } });
    const reasons: Array<string | undefined> = [];
    server.on('disconnect', (_c, reason) => reasons.push((reason as { code?: string } | null)?.code));
    const open = async () => {
      const [a, b] = socketPair();
      void server.serve(a);
      return connect<Gate>(b);
    };
    const fine = await open();
    fine.$connection!.subscribe(Array.from({ length: 4096 }, (_, i) => `e${i}`));
    expect(await fine.add(1, 1)).toBe(2);
    // (A client subscribes to nothing it has no listener for: the server holds exactly these 4096.)
    expect([...server.connections][0]!.isSubscribed('removeListener')).toBe(false);
    const greedy = await open();
    greedy.$connection!.subscribe(Array.from({ length: 4097 }, (_, i) => `e${i}`));
    await expect(greedy.add(1, 1)).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    await eventually(() => reasons.includes(RpcCode.PROTOCOL_ERROR));
    expect(await fine.add(2, 2)).toBe(4);
    await fine.$close();
    await server.close({ timeout: 0 });
  });
});

describe('event names in subscriptions', () => {
  const MAX_EVENT_NAME = 256;

  it(`are at most ${MAX_EVENT_NAME} characters: a longer one is PROTOCOL_ERROR for that connection only`, async () => {
    const server = createServer<Gate>({ service: 'gate', handlers: { wait: () => {}, add: (_ctx, a, b) => a + b } });
    const reasons: Array<string | undefined> = [];
    server.on('disconnect', (_c, reason) => reasons.push((reason as { code?: string } | null)?.code));
    const open = async () => {
      const [a, b] = socketPair();
      const served = server.serve(a);
      const client = await connect<Gate>(b);
      return { client, conn: await served };
    };
    const fine = await open();
    const longest = 'n'.repeat(MAX_EVENT_NAME);
    fine.client.$connection!.subscribe([longest]);
    expect(await fine.client.add(1, 1)).toBe(2);
    expect(fine.conn.isSubscribed(longest)).toBe(true);

    const greedy = await open();
    greedy.client.$connection!.subscribe([`${longest}n`]);
    await expect(greedy.client.add(1, 1)).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    await eventually(() => reasons.includes(RpcCode.PROTOCOL_ERROR));
    expect(greedy.conn.closed).toBe(true);
    expect(greedy.conn.isSubscribed(`${longest}n`)).toBe(false);
    expect(await fine.client.add(2, 2)).toBe(4);
    await fine.client.$close();
    await greedy.client.$close();
    await server.close({ timeout: 0 });
  });
});

describe('a stream producer that ignores credit', () => {
  it('is cut off with PROTOCOL_ERROR once more than the window is waiting to be taken', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'afunix-credit-'));
    const frame = (m: unknown[]) => {
      const bytes = encodeToBuffer(m);
      return Buffer.concat([encodeHeader(bytes.length), bytes]);
    };
    // A "server" that answers any call with 10 000 items, credit or not.
    const server = createSocketServer((socket) => {
      socket.on('error', () => {});
      let hello = false;
      socket.on('data', () => {
        if (!hello) {
          hello = true;
          socket.write(frame([Msg.HELLO, { protocol: 1, service: 'flood', streams: ['items'], maxMessageSize: 1 << 20 }]));
          return;
        }
        for (let i = 0; i < 10_000; i++) socket.write(frame([Msg.STREAM_ITEM, 1, i]));
      });
    });
    const path = join(dir, 'flood.sock');
    await server.listen(path);
    try {
      const client = await connect<{ methods: { items(): AsyncIterable<number> } }>(path);
      const lost = new Promise<unknown>((resolve) => client.$lifecycle.once('disconnect', resolve));
      const stream = client.items();
      // The consumer does not take anything: the client holds at most the window.
      expect(await lost).toMatchObject({ code: RpcCode.PROTOCOL_ERROR, message: expect.stringContaining('credit') });
      expect((stream as unknown as { buffered: number }).buffered).toBeLessThanOrEqual(STREAM_WINDOW);
      await client.$close();
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
