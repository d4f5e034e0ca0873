// Faults, with real processes: a client SIGKILLed mid-call, a server
// SIGKILLed mid-call and restarted, the socket file deleted under a running
// server, peers half-closing, and a server out of file descriptors. The
// invariant for all: every call settles, with a result or an error with a
// code, within a bound; nothing hangs; nothing leaks. (A promise settles
// once by construction: counting its settlements would check nothing.)
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { RpcCode, type RpcClient, connect } from '../packages/rpc/src/index.js';
import {
  type RawPeer, type Target, type TargetContract, delta, eventually, fixtures, helloFrame, rawPeer, report, startTarget, tempDir,
  within,
} from './helpers.js';

const tmp = tempDir();
const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  await Promise.allSettled(cleanups.splice(0).map((c) => Promise.resolve().then(c)));
  tmp.cleanup();
});

async function target(name: string, options = {}, spawnOptions = {}): Promise<Target> {
  const t = await startTarget(join(tmp.dir, `${name}.sock`), options, spawnOptions);
  cleanups.push(() => t.kill());
  return t;
}

async function client(address: string, options: Parameters<typeof connect<TargetContract>>[1] = {}): Promise<RpcClient<TargetContract>> {
  const c = await connect<TargetContract>(address, options);
  cleanups.push(() => c.$close());
  return c;
}

interface Outcome {
  ok: boolean;
  code: string | undefined;
  ms: number;
}

/** Watches a call: when it settles, and how. */
function watch(p: Promise<unknown>): { outcome: Outcome; done: Promise<Outcome> } {
  const started = performance.now();
  const outcome: Outcome = { ok: false, code: undefined, ms: 0 };
  const done = p.then(
    () => {
      outcome.ok = true;
      outcome.ms = performance.now() - started;
      return outcome;
    },
    (err: unknown) => {
      outcome.code = (err as { code?: string }).code;
      outcome.ms = performance.now() - started;
      return outcome;
    },
  );
  return { outcome, done };
}

/** Consumes a stream to its end (or its error), as one watched call. */
function drain(stream: AsyncIterable<unknown>, pause = 0): Promise<Outcome> {
  return watch(
    (async () => {
      for await (const _ of stream) if (pause) await new Promise((r) => setTimeout(r, pause));
    })(),
  ).done;
}

function summary(outcomes: Outcome[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of outcomes) {
    const k = o.ok ? 'ok' : (o.code ?? 'NO_CODE');
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

describe('a client SIGKILLed mid-call', () => {
  it('the server aborts its handlers, closes its streams, frees every fd, and keeps serving (x10)', async () => {
    const t = await target('client-killed');
    const good = await client(t.address);
    const before = await t.stats();
    const KILLS = 10;
    // Two rounds of five clients at once: each starts its calls, then all five die together.
    for (let round = 0; round < KILLS / 5; round++) {
      const children = Array.from({ length: 5 }, () => {
        const child = spawn(process.execPath, [join(fixtures, 'client.mjs'), t.address, 'hang'], { stdio: ['ignore', 'pipe', 'inherit'] });
        cleanups.push(() => child.kill('SIGKILL'));
        return child;
      });
      for (const child of children) {
        const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
        expect(JSON.parse(line)).toMatchObject({ ready: true });
      }
      const exited = children.map((child) => once(child, 'exit'));
      for (const child of children) child.kill('SIGKILL');
      await Promise.all(exited);
    }
    // 5 delays and 2 streams per killed client, all aborted.
    let after = before;
    await eventually(async () => {
      after = await t.stats();
      return after.counts.cancelled - before.counts.cancelled === 7 * KILLS && after.fds === before.fds && after.connections === before.connections;
    }, 15_000, 'every handler of the killed clients aborted and every fd back');
    expect(await good.add(1, 2)).toBe(3);
    report('client SIGKILLed mid-call', {
      kills: KILLS, handlersAborted: after.counts.cancelled - before.counts.cancelled, serverFds: [before.fds, after.fds],
      disconnects: delta(after.counts.disconnects, before.counts.disconnects),
    });
  });
});

describe('a server SIGKILLed mid-call, and restarted', () => {
  it('every pending call and stream settles with CONNECTION_CLOSED at once; clients reconnect to the new server (x5)', async () => {
    const path = join(tmp.dir, 'restarted.sock');
    let t = await startTarget(path);
    cleanups.push(() => t.kill());
    const clients = await Promise.all(Array.from({ length: 4 }, () => client(path, { reconnect: { initialDelay: 20, maxDelay: 200 } })));
    const RESTARTS = 5;
    const all: Outcome[] = [];
    let slowest = 0;
    for (let round = 0; round < RESTARTS; round++) {
      const calls: Array<Promise<Outcome>> = [];
      for (const c of clients) {
        for (let i = 0; i < 5; i++) calls.push(watch(c.delay(60_000, i)).done);
        calls.push(watch(c.$with({ timeout: 60_000 }).delay(60_000, 0)).done);
        calls.push(drain(c.count(1_000_000, 10), 5));
      }
      await Promise.all(clients.map((c) => c.stats())); // everything is running on the server
      const killedAt = performance.now();
      await t.kill();
      const outcomes = await within(Promise.all(calls), 5_000, 'the calls pending on the killed server');
      slowest = Math.max(slowest, performance.now() - killedAt);
      for (const o of outcomes) {
        expect(o.ok).toBe(false);
        expect(o.code).toBe(RpcCode.CONNECTION_CLOSED);
      }
      all.push(...outcomes);
      // The stale socket file is replaced by the new server; the clients find it.
      const reconnected = Promise.all(clients.map((c) => once(c.$lifecycle as never, 'reconnect')));
      t = await startTarget(path);
      cleanups.push(() => t.kill());
      await within(reconnected, 10_000, 'every client reconnecting');
      for (const c of clients) expect(await c.add(round, 1)).toBe(round + 1);
    }
    report('server SIGKILLed mid-call and restarted', { restarts: RESTARTS, callsPending: all.length, outcomes: summary(all), slowestSettleMs: Math.round(slowest) });
  });
});

describe('the socket file deleted under a running server', () => {
  it('connections in place carry on, new ones fail at once with ENOENT, and closing never removes a newer socket there', async () => {
    const path = join(tmp.dir, 'deleted.sock');
    const first = await startTarget(path);
    cleanups.push(() => first.kill());
    const old = await client(path);
    unlinkSync(path);
    expect(await old.add(1, 1)).toBe(2);
    const started = performance.now();
    await expect(connect<TargetContract>(path)).rejects.toMatchObject({ code: 'ENOENT' });
    const refusedMs = performance.now() - started;
    // A reconnecting client whose server vanished keeps trying, and its calls fail at once meanwhile.
    const second = await startTarget(path); // the path is free: a new server takes it
    cleanups.push(() => second.kill());
    expect((await (await client(path)).stats()).pid).toBe(second.pid);
    // The first server shuts down gracefully: the file at the path is not its own, so it stays.
    first.child.kill('SIGTERM');
    await once(first.child, 'exit');
    expect(existsSync(path)).toBe(true);
    expect((await (await client(path)).stats()).pid).toBe(second.pid);
    await expect(watch(old.add(1, 1)).done).resolves.toMatchObject({ ok: false, code: RpcCode.CONNECTION_CLOSED });
    report('socket file deleted under a running server', { newConnectRefusedMs: Math.round(refusedMs), newerSocketKept: true });
  });
});

describe('peers half-closing', () => {
  it('a client that half-closes with calls in flight: each settles with CONNECTION_CLOSED, promptly', async () => {
    const t = await target('half-close');
    const before = await t.stats();
    const c = await client(t.address);
    const calls = Array.from({ length: 10 }, (_, i) => watch(c.delay(60_000, i)).done);
    const stream = drain(c.count(1_000_000, 10));
    await c.stats();
    c.$connection!.channel.transport.end(); // shutdown(SHUT_WR): we can still read
    const outcomes = await within(Promise.all([...calls, stream]), 5_000, 'calls after a half-close');
    for (const o of outcomes) expect(o).toMatchObject({ ok: false, code: RpcCode.CONNECTION_CLOSED });
    let after = before;
    await eventually(async () => (after = await t.stats()).counts.cancelled - before.counts.cancelled === 11 && after.fds === before.fds);
    report('client half-closes with 11 calls in flight', { outcomes: summary(outcomes), handlersAborted: 11, serverFds: [before.fds, after.fds] });
  });

  it('a peer that half-closes before its hello is dropped at once, not after the handshake timeout', async () => {
    const t = await target('half-close-hello'); // default handshake timeout: 10 s
    const before = await t.stats();
    const peers: RawPeer[] = [];
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      const p = await rawPeer(t.address);
      p.socket.end();
      peers.push(p);
    }
    await within(Promise.all(peers.map((p) => p.closed)), 3_000, 'the server dropping half-closed peers');
    const ms = performance.now() - started;
    peers.forEach((p) => p.destroy());
    const after = await t.stats();
    expect(delta(after.counts.handshakeErrors, before.counts.handshakeErrors)).toEqual({ CONNECTION_CLOSED: 20 });
    report('20 peers half-closing before their hello', { droppedWithinMs: Math.round(ms), codes: delta(after.counts.handshakeErrors, before.counts.handshakeErrors) });
  });

  it('a server closing gracefully: calls in flight finish, later ones get SHUTTING_DOWN, the rest CONNECTION_CLOSED at the deadline', async () => {
    const t = await target('graceful');
    const c = await client(t.address);
    const quick = watch(c.delay(200, 1)).done;
    const slow = watch(c.delay(60_000, 2)).done;
    await c.stats();
    t.child.kill('SIGTERM'); // the fixture closes with a 1 s deadline
    await eventually(async () => (await watch(c.add(1, 1)).done).code === RpcCode.SHUTTING_DOWN, 5_000, 'SHUTTING_DOWN');
    const [q, s] = await within(Promise.all([quick, slow]), 5_000, 'calls across a graceful close');
    expect(q).toMatchObject({ ok: true });
    expect(s).toMatchObject({ ok: false, code: RpcCode.CONNECTION_CLOSED });
  });
});

describe('EMFILE: the server runs out of file descriptors', () => {
  it('backs off instead of spinning, and serves again once fds are free', async () => {
    const LIMIT = 64;
    const t = await target('emfile', { handshakeTimeout: 60_000 }, { wrap: ['prlimit', `--nofile=${LIMIT}:${LIMIT}`] });
    const before = await t.stats();
    // Connections that never say hello: each holds a server fd until the
    // handshake timeout (a minute here). Past the limit they wait in the
    // kernel's backlog, and accept() fails with EMFILE.
    const hogs: RawPeer[] = [];
    for (let i = 0; i < LIMIT + 20; i++) hogs.push(await rawPeer(t.address));
    await eventually(async () => ((await t.stats()).counts.acceptErrors.EMFILE ?? 0) > 0, 10_000, 'accept() failing with EMFILE');
    const exhausted = await t.stats();
    expect(exhausted.fds).toBe(-1); // not even one fd left to list its fds with

    // While exhausted: measure the server's CPU time over a window.
    const WINDOW = 3_000;
    const cpu0 = (await t.stats()).cpuMicros;
    await new Promise((r) => setTimeout(r, WINDOW));
    const during = await t.stats();
    const cpuShare = (during.cpuMicros - cpu0) / 1000 / WINDOW;
    const retries = (during.counts.acceptErrors.EMFILE ?? 0) - (exhausted.counts.acceptErrors.EMFILE ?? 0);
    // A busy loop would be ~100%; a backoff of up to 1 s costs next to nothing.
    expect(cpuShare).toBeLessThan(0.1);
    expect(retries).toBeLessThanOrEqual(WINDOW / 100);

    // fds come free: the hogs leave. The server accepts again on its next
    // retry (at most a second away) and a new client gets in.
    const freedAt = performance.now();
    hogs.forEach((h) => h.destroy());
    const fresh = await within(
      (async () => {
        for (;;) {
          try {
            return await connect<TargetContract>(t.address, { timeout: 2_000 });
          } catch {
            await new Promise((r) => setTimeout(r, 50));
          }
        }
      })(),
      15_000,
      'a new client getting in after fds were freed',
    );
    cleanups.push(() => fresh.$close());
    expect(await fresh.add(20, 22)).toBe(42);
    const recoveredMs = performance.now() - freedAt;
    await eventually(async () => (await t.stats()).fds === before.fds + 1, 10_000, 'the server back to its fds plus the new client');
    report('EMFILE', {
      nofile: LIMIT, windowMs: WINDOW, cpuShareWhileExhausted: Number(cpuShare.toFixed(4)), acceptRetriesInWindow: retries,
      recoveredMs: Math.round(recoveredMs), serverFds: [before.fds, (await t.stats()).fds],
    });
  });
});
