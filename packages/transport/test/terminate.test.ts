// A worker terminated while the native side hands it a batch of fds (an
// accept batch, or a read batch carrying SCM_RIGHTS) must not leak the fds
// its JavaScript never got to adopt. The worker stops itself inside the
// delivery and waits for terminate(), so the cut lands there every time.
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect, createServer, type UnixSocket } from '../src/index.js';
import { addedSince, destroyAll, fixtures, openFds, requireDist, tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
const sockets: UnixSocket[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  await destroyAll(sockets);
  dir.remove();
});

// Node opens a few descriptors of its own the first time a worker starts.
beforeAll(async () => {
  requireDist();
  const w = new Worker(join(fixtures, 'worker_echo.mjs'));
  await once(w, 'exit');
});

const ROUNDS = 3;
const CONNECTIONS = 20;

function start(scenario: 'accept' | 'fds' | 'churn' | 'make') {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const file = join(dir.path, 'passed');
  writeFileSync(file, 'passed around');
  const w = new Worker(join(fixtures, 'worker_cut_short.mjs'), { workerData: { scenario, flag, file } });
  const exited = once(w, 'exit') as Promise<[number]>;
  const errors: Error[] = [];
  w.on('error', (e) => errors.push(e));
  const messages: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  w.on('message', (m: Record<string, unknown>) => {
    messages.push(m);
    waiters.splice(0).forEach((f) => f());
  });
  const next = async (key: string): Promise<Record<string, unknown>> => {
    for (;;) {
      const m = messages.find((x) => key in x);
      if (m) return m;
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return { w, flag, exited, errors, next };
}

// Workers of `scenario`, each terminated within 30 ms of starting its loop.
async function terminateAtRandom(scenario: 'churn' | 'make', rounds: number): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    const { w, exited, errors, next } = start(scenario);
    await next('churning');
    await new Promise((r) => setTimeout(r, Math.random() * 30));
    await w.terminate();
    expect((await exited)[0]).toBe(1);
    expect(errors).toEqual([]);
  }
}

describe('worker terminated in the middle of a delivery', () => {
  it(`an accept batch of ${CONNECTIONS}: the connections not yet adopted are closed (${ROUNDS} rounds)`, async () => {
    const before = openFds();
    for (let round = 0; round < ROUNDS; round++) {
      const { w, flag, exited, errors, next } = start('accept');
      const { address } = await next('address');
      for (let i = 0; i < CONNECTIONS; i++) sockets.push(await connect(address as string));
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
      await next('inDelivery');
      await w.terminate();
      expect((await exited)[0]).toBe(1);
      expect(errors).toEqual([]);
      await destroyAll(sockets);
    }
    // By 'exit' the worker's teardown has run: nothing is left to wait for.
    expect(addedSince(before)).toEqual([]);
  });

  it(`a read batch of 10 chunks carrying 3 fds each: the fds not yet taken are closed (${ROUNDS} rounds)`, async () => {
    const before = openFds();
    for (let round = 0; round < ROUNDS; round++) {
      const { w, exited, errors, next } = start('fds');
      await next('inDelivery');
      await w.terminate();
      expect((await exited)[0]).toBe(1);
      expect(errors).toEqual([]);
    }
    expect(addedSince(before)).toEqual([]);
  });

  // Wherever the cut lands: native calls made by a terminating worker must
  // fail quietly. One that coerced its argument (ToBoolean) or used a
  // SocketHandle whose napi_wrap had been refused aborted this whole process
  // (seen in 2 of 3 runs of 30 such workers). Its fds are not counted here:
  // its server's accepted connections close on their own schedule (the
  // next test counts the sockets a cut can strand).
  it('terminated at random moments while connecting, accepting and passing fds, the process survives', async () => {
    await terminateAtRandom('churn', 20);
  });

  it('terminated between making a socket and handing it to its handle, leaves no socket open (20 rounds)', async () => {
    // Before: 24 of 30 such workers stranded a socket pair (helper-36).
    const before = openFds();
    await terminateAtRandom('make', 20);
    expect(addedSince(before)).toEqual([]);
  });
});

describe('a worker terminated with a listening socket', () => {
  it('removes the socket files it bound, as close() would, even with a connection waiting to be accepted', async () => {
    const serverPath = join(dir.path, 'worker-server.sock');
    const datagramPath = join(dir.path, 'worker-datagram.sock');
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const w = new Worker(join(fixtures, 'worker_listens.mjs'), { workerData: { serverPath, datagramPath, flag } });
    const [message] = (await once(w, 'message')) as [{ listening: string[] }];
    expect(message.listening).toEqual([serverPath, datagramPath]);
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
    sockets.push(await connect(serverPath)); // in the backlog: the worker's loop is blocked
    expect(existsSync(serverPath) && existsSync(datagramPath)).toBe(true);
    await w.terminate();
    expect([existsSync(serverPath), existsSync(datagramPath)]).toEqual([false, false]);
  });

  it('leaves a socket file at its path alone once it is not the one the worker bound', async () => {
    const serverPath = join(dir.path, 'taken-over.sock');
    const datagramPath = join(dir.path, 'taken-over-datagram.sock');
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const w = new Worker(join(fixtures, 'worker_listens.mjs'), { workerData: { serverPath, datagramPath, flag } });
    await once(w, 'message');
    // Another server takes the path over (as one that found the file stale would).
    unlinkSync(serverPath);
    const successor = await createServer().listen(serverPath);
    try {
      await w.terminate();
      expect(existsSync(serverPath)).toBe(true);
      sockets.push(await connect(serverPath)); // the successor's, still reachable
    } finally {
      await successor.close();
    }
  });

  it('removes it when terminated inside listen(), between bind() and the handle (20 rounds)', async () => {
    // The worker listens on fresh paths in a loop, so the cut often lands
    // mid-listen (before the fix: files left in 10 of 20 rounds; helper-55).
    const left: string[] = [];
    for (let round = 0; round < 20; round++) {
      const sub = mkdtempSync(join(dir.path, 'loop-'));
      const w = new Worker(join(fixtures, 'worker_listens.mjs'), { workerData: { loopIn: sub } });
      await once(w, 'message');
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
      await w.terminate();
      left.push(...readdirSync(sub).filter((name) => name.endsWith('.sock')));
    }
    expect(left).toEqual([]);
  });
});
