// Lifecycle with real processes: a server or client killed mid-call, a
// client reconnecting to a restarted service, and a graceful server close.
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { socketPair } from '@afunix/transport';
import { type CallContext, MAX_EVENT_NAME, MAX_SUBSCRIPTIONS, Msg, RpcCode, type RpcClient, connect, createServer } from '../src/index.js';
import { type Service, eventually, startService, tempDir } from './helpers.js';
import type { Lab } from './lab.js';
import { cleanUp, runFixture } from './procs.js';
import { helloFrame, messageFrame, rawPeer } from './wire.js';

const tmp = tempDir();
const cleanups: Array<() => Promise<unknown> | unknown> = [];

afterAll(async () => {
  await cleanUp(cleanups);
  tmp.cleanup();
});

async function service(name: string): Promise<Service> {
  const s = await startService(join(tmp.dir, `${name}.sock`));
  cleanups.push(() => s.stop());
  return s;
}

async function client(address: string, options: Parameters<typeof connect<Lab>>[1] = {}): Promise<RpcClient<Lab>> {
  const c = await connect<Lab>(address, options);
  cleanups.push(() => c.$close());
  return c;
}

describe('a server killed mid-call', () => {
  it('fails every pending call with CONNECTION_CLOSED', async () => {
    const s = await service('killed');
    const c = await client(s.address);
    const lifecycle: string[] = [];
    c.$lifecycle.on('disconnect', () => lifecycle.push('disconnect'));
    c.$lifecycle.on('close', () => lifecycle.push('close'));
    const outcomes = Promise.allSettled(Array.from({ length: 20 }, (_, i) => c.delay(10_000, i)));
    // Calls are handled in order: once seen() answers, all 20 are running there.
    await c.seen();
    expect(c.$connection!.stats.inFlightOut).toBe(20);

    await s.stop(); // SIGKILL
    const results = await outcomes;
    expect(results).toHaveLength(20);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    }
    // Without reconnect the client is done for good.
    await eventually(() => lifecycle.includes('close'));
    expect(lifecycle).toEqual(['disconnect', 'close']);
    expect(c.$connection).toBeNull();
  });
});

describe('a client killed mid-call', () => {
  it('aborts the handler signal on the server, which keeps serving others', async () => {
    const s = await service('client-killed');
    const observer = await client(s.address);
    const before = (await observer.seen()).aborted;

    const doomed = runFixture('lab-client.mjs', [s.address, 'hang']);
    cleanups.push(() => doomed.kill());
    expect(await doomed.next()).toMatchObject({ started: true });
    await doomed.kill('SIGKILL');

    await eventually(async () => (await observer.seen()).aborted === before + 1);
    expect(await observer.add(20, 22)).toBe(42);
    const fresh = await client(s.address);
    expect(await fresh.delay(1, 5)).toBe(5);
    expect((await fresh.seen()).aborted).toBe(before + 1);
  });
});

describe('reconnect', () => {
  it('survives the service being killed and restarted, and restores subscriptions', async () => {
    const path = join(tmp.dir, 'restart.sock');
    const first = await startService(path);
    cleanups.push(() => first.stop());
    const c = await client(path, { service: 'lab', reconnect: { initialDelay: 20 } });
    const ticks: number[] = [];
    const lifecycle: string[] = [];
    c.$events.on('tick', (n) => ticks.push(n));
    c.$lifecycle.on('disconnect', () => lifecycle.push('disconnect'));
    c.$lifecycle.on('reconnect', () => lifecycle.push('reconnect'));
    c.$lifecycle.on('close', () => lifecycle.push('close'));
    // The event frame comes before the result frame on the same connection.
    expect(await c.publish(1)).toBe(1);
    expect(ticks).toEqual([1]);
    const pending = c.delay(10_000, 0).then(
      () => null,
      (err: unknown) => err,
    );
    await c.seen();

    const disconnected = once(c.$lifecycle as never, 'disconnect');
    await first.stop(); // SIGKILL: the socket file stays behind, stale
    await disconnected;
    expect(await pending).toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    expect(c.$connection).toBeNull();
    // While disconnected, calls fail (how they fail is the next test's business).
    await expect(Promise.resolve().then(() => c.add(1, 1))).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    expect(existsSync(path)).toBe(true);

    const reconnected = once(c.$lifecycle as never, 'reconnect');
    const second = await startService(path); // replaces the stale socket file
    cleanups.push(() => second.stop());
    await reconnected;
    expect(lifecycle).toEqual(['disconnect', 'reconnect']);
    expect(c.$peer?.pid).toBe(second.pid);
    expect(await c.add(2, 3)).toBe(5);
    // The subscription was restored on the new connection.
    expect(await c.publish(2)).toBe(1);
    expect(ticks).toEqual([1, 2]);
  });
});

describe('reconnect keeps a process alive', () => {
  it('a client that only listens to events outlives a server restart, and its process ends once it closes', async () => {
    const path = join(tmp.dir, 'listening.sock');
    const first = await startService(path);
    cleanups.push(() => first.stop());
    const listener = runFixture('listening-client.mjs', [path]);
    cleanups.push(() => listener.kill());
    expect(await listener.next()).toEqual({ listening: true });
    await first.stop();
    expect(await listener.next()).toEqual({ disconnected: true });
    // Nothing but the redial is left to keep it running: still up 500 ms on.
    const exitedEarly = await Promise.race([listener.exited(), new Promise((r) => setTimeout(() => r(null), 500))]);
    expect(exitedEarly).toBeNull();
    const second = await startService(path);
    cleanups.push(() => second.stop());
    expect(await listener.next()).toEqual({ reconnected: true });
    const c = await client(path);
    await eventually(async () => (await c.publish('last' as unknown as number)) === 1);
    expect(await listener.exited()).toEqual({ code: 0, signal: null });
  });
});

describe('$close() during a reconnect backoff', () => {
  it('ends the backoff: the process exits at once, not when the delay is over', async () => {
    const path = join(tmp.dir, 'backoff.sock');
    const s = await startService(path);
    cleanups.push(() => s.stop());
    const listener = runFixture('listening-client.mjs', [path, 'close-on-disconnect']);
    cleanups.push(() => listener.kill());
    expect(await listener.next()).toEqual({ listening: true });
    await s.stop();
    expect(await listener.next()).toEqual({ disconnected: true });
    // Its backoff is a minute long: within the test's 30 s only if $close() ended it.
    expect(await listener.exited()).toEqual({ code: 0, signal: null });
  });
});

describe('client options', () => {
  it('refuses a timeout or reconnect option it could not keep with ERR_INVALID_ARG_VALUE, before dialling', async () => {
    const s = await service('options');
    const bad: Array<Parameters<typeof connect<Lab>>[1]> = [
      { timeout: Number.NaN },
      { timeout: -1 },
      { timeout: 'abc' as unknown as number },
      { reconnect: { initialDelay: '5' as unknown as number } },
      { reconnect: { initialDelay: -1 } },
      { reconnect: { initialDelay: 0 } },
      { reconnect: { maxDelay: 2 ** 31 } },
      { reconnect: { maxAttempts: 1.5 } },
      { reconnect: 'yes' as unknown as boolean },
    ];
    for (const options of bad) {
      await expect(connect<Lab>(s.address, options), JSON.stringify(options)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    }
    await expect(connect<Lab>(s.address, { timeout: {} as unknown as number })).rejects.toThrow(/received an object$/);
    const c = await client(s.address, { timeout: Infinity, reconnect: { initialDelay: 1, maxDelay: 2 ** 31 - 1, maxAttempts: 0 } });
    expect(await c.add(1, 2)).toBe(3);
    // null, as a config file would give it, is "not given": the defaults.
    const unset = null as unknown as undefined;
    const d = await client(s.address, { timeout: unset, reconnect: unset });
    expect(await d.$with({ timeout: unset }).delay(50, 7)).toBe(7);
  });

  it("says 'close' once, however often $close() is called and after giving up reconnecting", async () => {
    const s = await service('close-once');
    const c = await client(s.address);
    const said: string[] = [];
    c.$lifecycle.on('close', () => said.push('close'));
    await Promise.all([c.$close(), c.$close()]);
    await c.$close();
    expect(said).toEqual(['close']);

    const gone = await service('close-once-gone');
    const giving = await client(gone.address, { reconnect: { initialDelay: 10, maxAttempts: 2 } });
    const saidToo: string[] = [];
    giving.$lifecycle.on('close', () => saidToo.push('close'));
    await gone.stop();
    await eventually(() => saidToo.length === 1);
    await giving.$close();
    expect(saidToo).toEqual(['close']);
  });
});

// A client whose service is gone: it is in a (minute-long) reconnect backoff.
async function reconnecting(name: string): Promise<RpcClient<Lab>> {
  const s = await service(name);
  const c = await client(s.address, { reconnect: { initialDelay: 60_000 } });
  const disconnected = once(c.$lifecycle as never, 'disconnect');
  await s.stop();
  await disconnected;
  return c;
}

describe('a client that is not connected', () => {
  it('fails calls with a rejected promise, not a synchronous throw, while reconnecting and after close', async () => {
    const c = await reconnecting('not-connected');
    // A typed method returns a promise: `c.add(1, 1).catch(...)` must catch this.
    let call: Promise<number> | undefined;
    expect(() => (call = c.add(1, 1))).not.toThrow();
    await expect(call).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    await c.$close();
    expect(() => (call = c.add(1, 1))).not.toThrow();
    await expect(call).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
  });

  it('answers a stream method with a stream that fails, while reconnecting and after close', async () => {
    const c = await reconnecting('not-connected-stream');
    const drain = async (stream: AsyncIterable<number>) => {
      for await (const _ of stream) throw new Error('no item can come');
    };
    // (A promise here would fail `for await` with a TypeError, and its
    // rejection would go unhandled and end the process.)
    await expect(drain(c.count(3))).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    await c.$close();
    await expect(drain(c.count(3))).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    // Stopped by its consumer first, it is only done, as any stream would be.
    const stopped = c.count(3);
    await stopped.return();
    expect(await stopped.next()).toEqual({ value: undefined, done: true });
  });
});

describe('$describe() on a client that is not connected', () => {
  it('rejects with CONNECTION_CLOSED, as calls do, instead of throwing', async () => {
    const s = await service('describe-closed');
    const c = await client(s.address);
    expect(await c.$describe()).toMatchObject({ service: 'lab' });
    await c.$close();
    let described: Promise<unknown> | undefined;
    expect(() => (described = c.$describe())).not.toThrow();
    await expect(described).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
  });
});

interface Closing {
  methods: {
    gated(value: number): number;
    hang(): never;
    add(a: number, b: number): number;
  };
}

describe('server.close({ timeout })', () => {
  it('finishes calls in flight, refuses new ones, cuts off the rest at the deadline, removes the socket', async () => {
    const path = join(tmp.dir, 'closing.sock');
    const running = new Set<string>();
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    let hangAborted = false;
    const server = createServer<Closing>({
      service: 'closing',
      handlers: {
        async gated(_ctx, value) {
          running.add('gated');
          await gate;
          return value;
        },
        hang(ctx: CallContext) {
          running.add('hang');
          return new Promise<never>((_, reject) => {
            ctx.signal.addEventListener('abort', () => {
              hangAborted = true;
              reject(ctx.signal.reason);
            });
          });
        },
        add: (_ctx, a, b) => a + b,
      },
    });
    await server.listen(path);
    cleanups.push(() => server.close({ timeout: 0 }));
    const c = await connect<Closing>(path);
    cleanups.push(() => c.$close());
    expect(existsSync(path)).toBe(true);

    const settle = (p: Promise<unknown>) => p.then((value) => ({ value }), (error: unknown) => ({ error }));
    const gated = settle(c.gated(7));
    const hang = settle(c.hang());
    await eventually(() => running.size === 2);
    const serverClosed = once(server as never, 'close');

    const closing = server.close({ timeout: 2_000 });
    // New calls are refused once the server drains its connections.
    await eventually(async () => {
      const r = await settle(c.add(1, 1));
      if ('value' in r) return false;
      expect(r.error).toMatchObject({ code: RpcCode.SHUTTING_DOWN });
      return true;
    });
    // Nobody new gets in: the socket file went with the listener.
    expect(existsSync(path)).toBe(false);
    await expect(connect(path)).rejects.toMatchObject({ code: 'ENOENT' });

    openGate();
    expect(await gated).toEqual({ value: 7 }); // finished within the deadline
    expect((await hang as { error: unknown }).error).toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    await closing;
    await serverClosed;
    expect(hangAborted).toBe(true);
    expect(server.connections.size).toBe(0);
    expect(existsSync(path)).toBe(false);
  });
});

describe('server.close() while a handshake is under way', () => {
  const closingServer = () =>
    createServer<Closing>({ service: 'closing', handlers: { gated: (_ctx, v) => v, hang: () => new Promise<never>(() => {}), add: (_ctx, a, b) => a + b } });

  it('refuses an accepted connection that has not said hello with SHUTTING_DOWN, and never serves it', async () => {
    const path = join(tmp.dir, 'closing-handshake.sock');
    const server = closingServer();
    cleanups.push(() => server.close({ timeout: 0 }));
    const listener = await server.listen(path);
    const adopted: unknown[] = [];
    const refused: Array<string | undefined> = [];
    server.on('connection', (conn) => adopted.push(conn));
    server.on('handshakeError', (err) => refused.push((err as { code?: string }).code));
    const accepted = once(listener as never, 'connection');
    const peer = await rawPeer(path);
    cleanups.push(() => peer.destroy());
    await accepted; // the server has it, waiting for its hello

    await server.close({ timeout: 0 });
    peer.send(helloFrame());
    peer.send(messageFrame([Msg.REQUEST, 1, 'add', [1, 2]]));
    expect(await peer.nextMessage()).toMatchObject([Msg.HELLO, { error: { code: RpcCode.SHUTTING_DOWN } }]);
    await peer.closed;
    expect(peer.received).toEqual([]); // no answer to the call
    expect(adopted).toEqual([]);
    expect(refused).toEqual([RpcCode.SHUTTING_DOWN]); // reported once, though the channel closed afterwards
    expect(server.connections.size).toBe(0);
  });

  it('rejects serve() of a transport whose hello had not come with SHUTTING_DOWN', async () => {
    const server = closingServer();
    const [ours, theirs] = socketPair();
    let outcome = 'pending';
    const served = server.serve(ours).then(
      () => (outcome = 'served'),
      (err: { code?: string }) => (outcome = err.code ?? 'no code'),
    );
    // (close() resolves once the refused socket has closed: the client, which
    // reads the refusal, closes it.)
    const closing = server.close({ timeout: 0 });
    await new Promise((resolve) => setImmediate(resolve));
    expect(outcome).toBe(RpcCode.SHUTTING_DOWN);
    await expect(connect<Closing>(theirs)).rejects.toMatchObject({ code: RpcCode.SHUTTING_DOWN });
    await closing;
    await served;
    expect(server.connections.size).toBe(0);
  });
});

describe('a socket already ended or destroyed before connect() or serve()', () => {
  it('fails the handshake with CONNECTION_CLOSED, not HANDSHAKE_TIMEOUT', async () => {
    for (const state of ['peer ended', 'destroyed'] as const) {
      for (const side of ['connect', 'serve'] as const) {
        const [a, b] = socketPair();
        if (state === 'peer ended') {
          b.end();
          a.resume();
          await once(a, 'end');
          a.pause();
        } else {
          a.destroy();
        }
        const attempt = side === 'connect' ? connect(a, { timeout: 10_000 }) : createServer({ service: 'x', handlers: {}, handshakeTimeout: 10_000 }).serve(a);
        // (Not HANDSHAKE_TIMEOUT, 10 s later.)
        await expect(attempt, `${state}, ${side}`).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
        a.destroy();
        b.destroy();
      }
    }
  });
});

describe('a peer that sends our own hello back', () => {
  it('is no server: connect() fails with PROTOCOL_ERROR at once, and calls nothing', async () => {
    const dir = tempDir();
    const path = join(dir.dir, 'echo.sock');
    const echo = runFixture('echo-bytes.mjs', [path]);
    try {
      expect(await echo.next()).toEqual({ ready: true });
      const started = Date.now();
      for (const service of [undefined, 'svc']) {
        await expect(connect(path, { service, timeout: 10_000 }), String(service)).rejects.toMatchObject({
          code: RpcCode.PROTOCOL_ERROR,
          message: expect.stringContaining('sent our own hello back'),
        });
      }
      expect(Date.now() - started).toBeLessThan(9_000); // (not the handshake timeout)
    } finally {
      await echo.kill();
      dir.cleanup();
    }
  });

  it('nor is another client: two clients on one socketpair both fail with PROTOCOL_ERROR', async () => {
    // Their hellos differ (another limit), and neither names a service.
    const [a, b] = socketPair();
    const outcomes = await Promise.allSettled([connect(a, { timeout: 10_000 }), connect(b, { timeout: 10_000, maxMessageSize: 64 * 1024 })]);
    for (const outcome of outcomes) {
      expect(outcome).toMatchObject({ status: 'rejected', reason: { code: RpcCode.PROTOCOL_ERROR, message: expect.stringContaining('names no service') } });
    }
    a.destroy();
    b.destroy();
  });
});

describe('what a peer may send, and when', () => {
  interface Audited {
    methods: { transfer(amount: number): string; ping(): string };
    clientEvents: { audit(what: string): void; error(what: string): void };
    events: { error(what: string): void; tick(): void };
  }

  function audited(ran: string[]) {
    const server = createServer<Audited>({
      service: 'audited',
      handlers: {
        transfer: (_ctx, amount) => {
          ran.push(`transfer ${amount}`);
          return 'ok';
        },
        ping: () => 'pong',
      },
    });
    server.clientEvents.on('audit', (_conn, what) => ran.push(`audit ${what}`));
    cleanups.push(() => server.close({ timeout: 0 }));
    return server;
  }

  /** An audited server, and a raw peer it has said hello to. */
  async function helloed(name: string) {
    const ran: string[] = [];
    const server = audited(ran);
    const path = join(tmp.dir, `${name}.sock`);
    await server.listen(path);
    const peer = await rawPeer(path);
    cleanups.push(() => peer.destroy());
    peer.send(helloFrame());
    await peer.nextMessage();
    return { ran, server, peer };
  }

  it('a connection the server closed runs nothing its peer sends after: no handler, no event listener', async () => {
    const { ran, server, peer } = await helloed('after-close');
    peer.send(messageFrame([Msg.REQUEST, 1, 'transfer', [1]]));
    expect(await peer.nextMessage()).toEqual([Msg.RESULT, 1, 'ok']);
    const [conn] = server.connections;
    conn!.close(); // waits up to 2 s for the peer to end its side
    await peer.closed; // the server's end
    peer.send(messageFrame([Msg.REQUEST, 2, 'transfer', [100]]));
    peer.send(messageFrame([Msg.NOTIFY, 'transfer', [200]]));
    peer.send(messageFrame([Msg.EVENT, 'audit', ['after close']]));
    // Our end lets the server's channel close: by then it has read all of the above.
    const gone = once(conn!.channel, 'close');
    peer.socket.end();
    await gone;
    expect(ran).toEqual(['transfer 1']);
    expect(peer.received.filter((m) => m[0] === Msg.RESULT)).toEqual([]);
  });

  it('an event with more arguments than a call may take is dropped; the connection goes on', async () => {
    const { ran, peer } = await helloed('many-args');
    // (Spread into the listener's call, 300,000 of them overflowed the stack, and the connection closed.)
    peer.send(messageFrame([Msg.EVENT, 'audit', new Array(300_000).fill(0)]));
    peer.send(messageFrame([Msg.EVENT, 'audit', ['after it']]));
    peer.send(messageFrame([Msg.REQUEST, 1, 'ping', []]));
    expect(await peer.nextMessage()).toEqual([Msg.RESULT, 1, 'pong']);
    expect(ran).toEqual(['audit after it']);
  });

  it('an event named "error" that nobody listens to is dropped, on either side; the connection goes on', async () => {
    const ran: string[] = [];
    const server = audited(ran);
    const path = join(tmp.dir, 'error-event.sock');
    await server.listen(path);
    const disconnects: string[] = [];
    server.on('disconnect', (_conn, reason) => disconnects.push(String((reason as { code?: string }).code)));
    const client = await connect<Audited>(path, { service: 'audited' });
    cleanups.push(() => client.$close());
    // EventEmitter throws an 'error' event with no listener: it took the connection down.
    client.$emit('error', 'from the client');
    client.$emit('audit', 'after it');
    expect(await client.ping()).toBe('pong');
    await eventually(() => ran.includes('audit after it'));
    // The client subscribes to 'error' while it listens; the event may be on its way when it stops.
    const heard: string[] = [];
    const onError = (what: string) => heard.push(what);
    client.$events.on('error', onError);
    client.$events.on('tick', () => {});
    await client.ping(); // the subscriptions have reached the server
    server.publish('error', 'first');
    await eventually(() => heard.length === 1);
    client.$events.off('error', onError);
    server.publish('error', 'second'); // sent before the unsubscription arrives, or not at all
    expect(await client.ping()).toBe('pong');
    expect(client.$connection?.closed).toBe(false);
    expect(disconnects).toEqual([]);
  });

  it('$events.on() refuses a name no server would take: too long, or one subscription too many', async () => {
    const ran: string[] = [];
    const server = audited(ran);
    const path = join(tmp.dir, 'names.sock');
    await server.listen(path);
    const client = await connect<Audited>(path, { service: 'audited' });
    cleanups.push(() => client.$close());
    const events = client.$events as unknown as import('node:events').EventEmitter;
    const badName = expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(() => events.on('x'.repeat(MAX_EVENT_NAME + 1), () => {})).toThrow(badName);
    events.on('x'.repeat(MAX_EVENT_NAME), () => {});
    for (let i = 1; i < MAX_SUBSCRIPTIONS; i++) events.on(`e${i}`, () => {});
    expect(() => events.on('one too many', () => {})).toThrow(badName);
    events.on('e1', () => {}); // a second listener is no new subscription
    expect(await client.ping()).toBe('pong'); // the server took them all
    expect(client.$connection?.closed).toBe(false);
  });
});
