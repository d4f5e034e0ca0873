// $unref() and $ref(): an idle client that was unref'd lets its process exit
// by itself (a CLI holding a daemon connection), and $ref() undoes it. The
// client runs in its own process (fixtures/unref-client.mjs); the server is
// here, so that the child's exit is its own doing.
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createServer as createSocketServer } from '@afunix/transport';
import { type RpcConnection, createServer } from '../src/index.js';
import { tempDir } from './helpers.js';
import { type Proc, cleanUp, runFixture } from './procs.js';

interface Service {
  methods: { add(a: number, b: number): number; delay(ms: number, value: number): number };
  events: { tick(n: number): void };
}

const cleanups: Array<() => unknown> = [];
afterEach(() => cleanUp(cleanups));

// How long a child that should stay is watched; one that should go gets
// this long to exit (a liveness bound: it goes at once).
const STAYS_MS = 1_000;
const EXITS_WITHIN_MS = 10_000;

async function serve(): Promise<{ address: string; connections: RpcConnection[]; close(): Promise<void> }> {
  const tmp = tempDir();
  const address = join(tmp.dir, 'unref.sock');
  const connections: RpcConnection[] = [];
  const server = createServer<Service>({
    service: 'unref',
    handlers: {
      add: (_ctx, a, b) => a + b,
      delay: async (ctx, ms, value) => {
        await sleep(ms, undefined, { signal: ctx.signal });
        return value;
      },
    },
  });
  server.on('connection', (conn) => connections.push(conn));
  await server.listen(address);
  const close = () => server.close({ timeout: 100 });
  cleanups.push(async () => {
    await close();
    tmp.cleanup();
  });
  return { address, connections, close };
}

function client(address: string, mode: string, env: NodeJS.ProcessEnv = process.env): Proc {
  const proc = runFixture('unref-client.mjs', [address, mode], { env });
  cleanups.push(() => proc.kill());
  return proc;
}

/** 'exited' with its status, or 'running' if it is still there after `ms`. */
async function within(proc: Proc, ms: number): Promise<string> {
  return Promise.race([proc.exited().then(({ code, signal }) => `exited ${code} ${signal}`), sleep(ms).then(() => 'running')]);
}

async function started(proc: Proc): Promise<void> {
  expect(await proc.next()).toEqual({ sum: 3 });
  expect(await proc.next()).toEqual({ unrefd: true });
}

describe('$unref()', () => {
  it('lets the process of an idle client exit by itself, subscribed to events and all', async () => {
    const { address } = await serve();
    const proc = client(address, 'idle');
    await started(proc);
    expect(await within(proc, EXITS_WITHIN_MS)).toBe('exited 0 null');
  });

  it('does so over the node:net fallback too', async () => {
    const { address } = await serve();
    const proc = client(address, 'idle', { ...process.env, AFUNIX_FORCE_FALLBACK: '1' });
    await started(proc);
    expect(await within(proc, EXITS_WITHIN_MS)).toBe('exited 0 null');
  });

  it('is undone by $ref(): the process stays until it is killed', async () => {
    const { address } = await serve();
    const proc = client(address, 'ref');
    await started(proc);
    expect(await within(proc, STAYS_MS)).toBe('running');
  });

  it('still holds the process for a call awaiting its answer', async () => {
    const { address } = await serve();
    const proc = client(address, 'pending');
    await started(proc);
    expect(await proc.next()).toEqual({ result: 7 });
    expect(await within(proc, EXITS_WITHIN_MS)).toBe('exited 0 null');
  });

  it('still holds the process until $close() resolves', async () => {
    const { address } = await serve();
    const proc = client(address, 'close');
    await started(proc);
    expect(await proc.next()).toEqual({ closed: true });
    expect(await within(proc, EXITS_WITHIN_MS)).toBe('exited 0 null');
  });

  it("is kept by the connection a reconnect brings, which holds the process only for a call", async () => {
    const { address, connections } = await serve();
    const proc = client(address, 'reconnect');
    await started(proc);
    // The child's own timer holds it until it has reconnected; then nothing must.
    connections[0]!.destroy();
    expect(await proc.next()).toEqual({ disconnected: true });
    expect(await proc.next()).toEqual({ reconnected: true });
    expect(await proc.next()).toEqual({ result: 7 });
    expect(connections).toHaveLength(2);
    expect(await within(proc, EXITS_WITHIN_MS)).toBe('exited 0 null');
  });

  it('lets the process exit during a reconnect backoff', async () => {
    const { address, connections } = await serve();
    const proc = client(address, 'backoff'); // (a 60 s backoff)
    await started(proc);
    connections[0]!.destroy();
    expect(await proc.next()).toEqual({ disconnected: true });
    expect(await within(proc, EXITS_WITHIN_MS)).toBe('exited 0 null');
  });

  it('lets the process exit while a reconnect waits for a hello', async () => {
    const { address, close } = await serve();
    const proc = client(address, 'silent');
    await started(proc);
    // Another listener takes the path, and never answers a hello.
    await close();
    expect(await proc.next()).toEqual({ disconnected: true });
    const silent = createSocketServer();
    const redialled = new Promise<void>((resolve) => silent.once('connection', () => resolve()));
    await silent.listen(address);
    cleanups.push(() => silent.close());
    await redialled;
    proc.child.kill('SIGUSR2'); // the child's own timer goes: only its handshake is left
    expect(await within(proc, EXITS_WITHIN_MS)).toBe('exited 0 null');
  });
});
