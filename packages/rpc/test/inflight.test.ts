// Notifications count against maxInFlight like calls: a peer cannot start
// handlers without bound by sending notifications instead of requests.
import { socketPair } from '@afunix/transport';
import { describe, expect, it } from 'vitest';
import { type CallContext, RpcCode, connect, createServer } from '../src/index.js';
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
        add: (a, b) => a + b,
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
        add: (a, b) => a + b,
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
