// Closing and reconnecting, where a late step could undo an earlier one: a
// reconnect that finishes after $close(), a listener added after close(),
// a server that drops every connection as soon as it is made.
import type { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connect as connectSocket, socketPair } from '@afunix/transport';
import { RpcCode, RpcError, type RpcClient, connect, createServer } from '../src/index.js';
import { type Service, addedSince, eventually, openFds, startService, tempDir } from './helpers.js';
import type { Lab } from './lab.js';
import { runFixture } from './procs.js';

interface Adder {
  methods: { add(a: number, b: number): number };
}

let dir: ReturnType<typeof tempDir>;
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  dir?.cleanup();
});

function adder() {
  dir = tempDir();
  const server = createServer<Adder>({ service: 's', handlers: { add: (_ctx, a, b) => a + b } });
  cleanups.push(() => server.close({ timeout: 100 }));
  return server;
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('closing while reconnecting', () => {
  it('$close() during a reconnect handshake brings no connection back', async () => {
    const server = adder();
    const listener = await server.listen(join(dir.dir, 'r.sock'));
    const client = await connect<Adder>(join(dir.dir, 'r.sock'), { service: 's', reconnect: { initialDelay: 10 } });
    let reconnected = 0;
    client.$lifecycle.on('reconnect', () => reconnected++);
    let closing: Promise<void> | null = null;
    // The next accepted connection is the reconnect: close the client mid-handshake.
    listener.once('connection', () => void (closing = client.$close()));
    for (const conn of server.connections) conn.close();
    while (!closing) await settle(5);
    await closing;
    await settle(200);
    expect(reconnected).toBe(0);
    expect(client.$connection).toBe(null);
    expect(server.connections.size).toBe(0);
    await expect(client.add(1, 2)).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
  });

  it('against a server that drops every connection at once, reconnects back off and stop after maxAttempts', async () => {
    const server = adder();
    await server.listen(join(dir.dir, 'flap.sock'));
    const client = await connect<Adder>(join(dir.dir, 'flap.sock'), { service: 's', reconnect: { initialDelay: 20, maxDelay: 1000, maxAttempts: 3 } });
    cleanups.push(() => client.$close());
    server.on('connection', (conn) => conn.close());
    let reconnects = 0;
    client.$lifecycle.on('reconnect', () => reconnects++);
    const gaveUp = new Promise<void>((resolve) => client.$lifecycle.once('close', () => resolve()));
    for (const conn of server.connections) conn.close();
    await gaveUp;
    expect(reconnects).toBeLessThanOrEqual(3);
  });
});

describe('a closed server', () => {
  it('refuses new listeners with SHUTTING_DOWN and leaves none behind', async () => {
    const server = adder();
    await server.close();
    await expect(server.listen(join(dir.dir, 'late.sock'))).rejects.toMatchObject({ code: RpcCode.SHUTTING_DOWN });
    await expect(connect(join(dir.dir, 'late.sock'), { service: 's' })).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it("a listener's errors reach the server's 'error' listeners", async () => {
    const server = adder();
    const errors: Array<{ code?: string }> = [];
    server.on('error', (err) => errors.push(err as { code?: string }));
    const listener = await server.listen(join(dir.dir, 'errors.sock'));
    // (An accept() that fails for good: since listenFd() refuses a socket
    // that does not listen, nothing left provokes one from outside.)
    listener.emit('error', Object.assign(new Error('accept EBADF'), { code: 'EBADF' }));
    expect(errors).toMatchObject([{ code: 'EBADF' }]);
  });
});

describe('close() in a process that exits as soon as it resolves', () => {
  interface Slow {
    methods: { slow(ms: number, bytes: number): Buffer };
  }

  it('has sent the answers of the calls it let finish, a large one too', async () => {
    dir = tempDir();
    const path = join(dir.dir, 'exits.sock');
    const proc = runFixture('closes-and-exits.mjs', [path]);
    cleanups.push(() => proc.kill());
    expect(await proc.next()).toEqual({ ready: true });
    const client = await connect<Slow>(path, { service: 'closing' });
    cleanups.push(() => client.$close());
    // A small answer and one far larger than the socket's buffer, both
    // written after close() began.
    const answers = Promise.all([client.slow(300, 10), client.slow(300, 4 << 20)]);
    await settle(50);
    proc.child.kill('SIGUSR2');
    expect(await proc.next()).toEqual({ closing: true });
    const [small, large] = await answers;
    expect(small.equals(Buffer.alloc(10, 7))).toBe(true);
    expect(large.equals(Buffer.alloc(4 << 20, 7))).toBe(true);
    expect(await proc.exited()).toEqual({ code: 0, signal: null });
  });
});

describe('close() over any Duplex', () => {
  it("settles for a Duplex made with emitClose: false, which never says 'close'", async () => {
    // Two in-memory ends, each writing into the other's readable side.
    const ends: Duplex[] = [];
    const make = (i: number) =>
      new Duplex({
        emitClose: false,
        read() {},
        write(chunk, _encoding, callback) {
          ends[1 - i]!.push(chunk);
          callback();
        },
        final(callback) {
          ends[1 - i]!.push(null);
          callback();
        },
      });
    ends.push(make(0), make(1));
    const server = createServer<Adder>({ service: 's', handlers: { add: (_ctx, a, b) => a + b } });
    void server.serve(ends[0]!).catch(() => {});
    const client = await connect<Adder>(ends[1]!, { service: 's' });
    expect(await client.add(1, 2)).toBe(3);
    const outcome = await Promise.race([server.close({ timeout: 100 }).then(() => 'closed'), settle(5_000).then(() => 'still pending')]);
    expect(outcome).toBe('closed');
    await client.$close();
  });
});

describe('close() with a client whose hello is still awaited', () => {
  it('resolves once that socket has closed too, not while its refusal waits out its grace period', async () => {
    const server = adder();
    const path = join(dir.dir, 'hello-awaited.sock');
    const before = openFds();
    await server.listen(path);
    const silent = await connectSocket(path); // says nothing, and never ends its side
    silent.on('error', () => {});
    cleanups.push(() => silent.destroy());
    await eventually(() => addedSince(before).length === 3); // the listener, its end, the server's
    await server.close();
    expect(addedSince(before)).toEqual([`${silent.fd} ${openFds().get(silent.fd)}`]); // the listener and the server's end are gone
  });
});

describe('a call that arrives once close() began', () => {
  it('is not served, even when it was sent in the same tick, while the listeners still close', async () => {
    const server = adder();
    const path = join(dir.dir, 'same-tick.sock');
    await server.listen(path);
    const client = await connect<Adder>(path, { service: 's' });
    cleanups.push(() => client.$close());
    expect(await client.add(1, 1)).toBe(2);
    const closed = server.close();
    const late = client.add(2, 2);
    // (It was served, while close() waited for its listeners.) Refused, or
    // cut off unread when the idle connection closes first.
    const err = await late.then(() => null, (e: RpcError) => e);
    expect([RpcCode.SHUTTING_DOWN, RpcCode.CONNECTION_CLOSED]).toContain(err?.code);
    await closed;
  });
});

describe('close() with a socket served after it began', () => {
  it('refuses it with SHUTTING_DOWN and resolves once it has closed too', async () => {
    const server = adder();
    await server.listen(join(dir.dir, 'late.sock'));
    const [ours, theirs] = socketPair();
    theirs.on('error', () => {}); // says nothing, and never ends its side
    cleanups.push(() => theirs.destroy());
    const closed = server.close();
    // (An accept that lands while the listeners close takes the same path.)
    await expect(server.serve(ours)).rejects.toMatchObject({ code: RpcCode.SHUTTING_DOWN });
    await closed;
    expect(ours.destroyed).toBe(true);
  });
});

describe('a call made right after the transport was destroyed', () => {
  it('fails with an RpcError CONNECTION_CLOSED, before the channel has heard of it', async () => {
    const server = adder();
    const path = join(dir.dir, 'destroyed.sock');
    await server.listen(path);
    const client = await connect<Adder>(path, { service: 's' });
    cleanups.push(() => client.$close());
    client.$connection!.channel.transport.destroy(); // its 'close' comes a tick later
    const err = await client.add(1, 2).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect(err).toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
  });
});

describe('$events once the client is closed', () => {
  interface Ticker {
    methods: { add(a: number, b: number): number };
    events: { tick(n: number): void };
  }

  async function ticker(): Promise<{ path: string; server: ReturnType<typeof createServer<Ticker>> }> {
    dir = tempDir();
    const path = join(dir.dir, 'ticks.sock');
    const server = createServer<Ticker>({ service: 't', handlers: { add: (_ctx, a, b) => a + b } });
    cleanups.push(() => server.close({ timeout: 100 }));
    await server.listen(path);
    return { path, server };
  }

  const closedError = expect.objectContaining({ name: 'RpcError', code: RpcCode.CONNECTION_CLOSED });

  it('refuses a listener after $close() with CONNECTION_CLOSED, as a call then fails, and keeps none', async () => {
    const { path } = await ticker();
    const client = await connect<Ticker>(path, { service: 't' });
    const before = () => {};
    client.$events.on('tick', before);
    await client.$close();
    await expect(client.add(1, 2)).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    const events = client.$events as unknown as EventEmitter;
    const late = () => {};
    for (const add of [events.on, events.addListener, events.once, events.prependListener, events.prependOnceListener]) {
      expect(() => add.call(events, 'tick', late)).toThrow(closedError);
    }
    expect(client.$events.listeners('tick')).toEqual([before]);
    // Taking listeners off still works, and EventEmitter's own events are no server's.
    client.$events.off('tick', before);
    expect(client.$events.listenerCount('tick')).toBe(0);
    expect(() => events.on('removeListener', late)).not.toThrow();
  });

  it('refuses one after the connection was lost for good (no reconnect)', async () => {
    const { path, server } = await ticker();
    const client = await connect<Ticker>(path, { service: 't' });
    const closed = new Promise<void>((resolve) => client.$lifecycle.once('close', () => resolve()));
    await server.close({ timeout: 100 });
    await closed;
    expect(() => client.$events.on('tick', () => {})).toThrow(closedError);
    expect(client.$events.listenerCount('tick')).toBe(0);
  });

  it('takes one while it reconnects, and subscribes it on the new connection', async () => {
    const { path, server } = await ticker();
    const client = await connect<Ticker>(path, { service: 't', reconnect: { initialDelay: 10 } });
    cleanups.push(() => client.$close());
    const ticks: number[] = [];
    let refused: unknown = null;
    // Added while the client has no connection, before it redials.
    client.$lifecycle.once('disconnect', () => {
      try {
        client.$events.on('tick', (n) => ticks.push(n));
      } catch (err) {
        refused = err;
      }
    });
    const reconnected = new Promise<void>((resolve) => client.$lifecycle.once('reconnect', () => resolve()));
    for (const conn of server.connections) conn.destroy();
    await reconnected;
    expect(refused).toBeNull();
    await eventually(() => server.publish('tick', 5) === 1);
    await eventually(() => ticks.includes(5));
  });
});

describe('$close({ timeout }) against a server that does not answer', () => {
  // A service in its own process, stopped (SIGSTOP): it never ends its side.
  async function frozen(): Promise<{ client: RpcClient<Lab>; service: Service; pending: Promise<unknown> }> {
    dir = tempDir();
    const service = await startService(join(dir.dir, 'frozen.sock'));
    cleanups.push(() => service.stop());
    const client = await connect<Lab>(service.address);
    cleanups.push(() => client.$close({ timeout: 0 }));
    expect(await client.add(1, 2)).toBe(3);
    process.kill(service.pid, 'SIGSTOP');
    cleanups.push(() => process.kill(service.pid, 'SIGCONT'));
    const pending = client.delay(10, 1).catch((err: unknown) => err);
    return { client, service, pending };
  }

  // Settled within `ms`, or still pending: the windows below sit well
  // inside the 2 s default grace, which is what they tell apart.
  const state = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => 'settled'), settle(ms).then(() => 'pending')]);

  it('timeout: 0 cuts the connection at once; the pending call fails with CONNECTION_CLOSED', async () => {
    const { client, pending } = await frozen();
    // (Resolved while the server is still stopped, well inside the default
    // 2 s grace: nothing was waited for.)
    expect(await state(client.$close({ timeout: 0 }), 1000)).toBe('settled');
    expect(await pending).toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    expect(client.$connection).toBe(null);
  });

  it('the default close waits for the server; a second $close() with a shorter timeout cuts the wait short', async () => {
    const { client } = await frozen();
    const graceful = client.$close();
    expect(await state(graceful, 300)).toBe('pending');
    const cut = client.$close({ timeout: 0 });
    expect(cut).toBe(graceful);
    // (Well before the 1.7 s left of the default grace.)
    expect(await state(cut, 1000)).toBe('settled');
  });

  it('refuses a timeout that is not a number >= 0', async () => {
    const { client } = await frozen();
    for (const timeout of [-1, Number.NaN, '5'] as unknown[]) {
      await expect(client.$close({ timeout } as { timeout: number })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    }
    expect(client.$connection).not.toBe(null);
  });
});
