// The lock a server holds beside its socket path (`<path>.lock`): what
// makes replacing a stale socket file safe when several servers start on
// one path at once. Its life (taken at listen, gone at close, dropped by
// the kernel when a server is killed), what a held lock means to another
// server, and the files that must not be mistaken for it.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, lstatSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { bindSafely, isStartingThere, SETUP_GRACE_MS } from '../src/bind.js';
import { connect, createDatagram, createServer, type UnixServer } from '../src/index.js';
import { Kind, native } from '../src/native.js';
import { nodeChild, tempDir } from './helpers.js';

// unlinkSync passes through, except that a test may run something just
// before one unlink: the moment another server could act in.
const hooks = vi.hoisted(() => ({ beforeUnlink: null as ((path: string) => void) | null }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const unlinkSync = (path: import('node:fs').PathLike) => {
    const hook = hooks.beforeUnlink;
    hooks.beforeUnlink = null;
    hook?.(String(path));
    fs.unlinkSync(path);
  };
  return { ...fs, default: { ...fs, unlinkSync }, unlinkSync };
});

let dir: ReturnType<typeof tempDir>;
const servers: UnixServer[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  hooks.beforeUnlink = null;
  await Promise.all(servers.splice(0).map((s) => s.close()));
  dir.remove();
});

function server(): UnixServer {
  const s = createServer((c) => c.destroy());
  servers.push(s);
  return s;
}

/** A socket file nobody listens on, old enough to count as stale. */
async function staleFiles(...paths: string[]): Promise<void> {
  for (const path of paths) {
    const fd = native!.socket(Kind.stream);
    expect(native!.bind(fd, Buffer.from(path))).toBe(0);
    native!.close(fd);
  }
  await sleep(SETUP_GRACE_MS + 100);
}

async function answers(path: string): Promise<boolean> {
  try {
    (await connect(path)).destroy();
    return true;
  } catch {
    return false;
  }
}

/** Another process holding the lock of `path` with flock(), until killed. */
async function foreignLockHolder(path: string) {
  const child = spawn('python3', ['-c', 'import fcntl,sys; f=open(sys.argv[1],"a"); fcntl.flock(f,fcntl.LOCK_EX); print("locked",flush=True); sys.stdin.read()', `${path}.lock`]);
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  expect(line).toBe('locked');
  return child;
}

describe('the lock beside a socket path', () => {
  it('is taken at listen(), not inherited by child processes, and removed with the socket file at close()', async () => {
    const path = join(dir.path, 'app.sock');
    const s = await server().listen(path);
    const lock = lstatSync(`${path}.lock`);
    expect(lock.isFile()).toBe(true);
    expect(lock.mode & 0o777).toBe(0o600); // (whoever can open it can hold it)
    if (process.platform === 'linux') {
      // A child that inherited it would keep the path locked after we exit.
      const childFds = execFileSync('sh', ['-c', 'ls -l /proc/$$/fd/'], { encoding: 'utf8' });
      expect(childFds).not.toContain('.lock');
    }
    await s.close();
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  it('of a SIGKILLed server is free again: the next server replaces the stale socket file', async () => {
    const path = join(dir.path, 'killed.sock');
    const child = nodeChild('cred_child.mjs', ['listen', path]);
    expect(await child.next()).toEqual({ listening: true });
    child.kill('SIGKILL');
    await child.exited;
    expect(existsSync(`${path}.lock`)).toBe(true); // left behind, but held by nobody
    await sleep(SETUP_GRACE_MS + 100);
    await server().listen(path);
    expect(await answers(path)).toBe(true);
  });

  it('held by another process: a stale socket file is left to it, and listen() fails with EADDRINUSE until it lets go', async () => {
    const path = join(dir.path, 'held.sock');
    await staleFiles(path);
    const stale = lstatSync(path).ino;
    const holder = await foreignLockHolder(path);
    try {
      const err = await server()
        .listen(path)
        .then(() => null, (e: unknown) => e);
      expect(err).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
      expect(String((err as Error).message)).toContain('.lock');
      expect(lstatSync(path).ino).toBe(stale);
    } finally {
      holder.kill('SIGKILL');
      await once(holder, 'exit');
    }
    await server().listen(path);
    expect(await answers(path)).toBe(true);
  });

  it('held by a server whose socket file was deleted: a new server may still bind the free path', async () => {
    const path = join(dir.path, 'deleted.sock');
    const old = await server().listen(path);
    unlinkSync(path);
    const next = await server().listen(path);
    expect(await answers(path)).toBe(true);
    await old.close(); // (its lock goes; the new server's file stays)
    expect(lstatSync(path).isSocket()).toBe(true);
    await next.close();
    expect(existsSync(path)).toBe(false);
  });

  it('keeps a second server off the stale file the first is replacing (both used to believe they listened)', async () => {
    const path = join(dir.path, 'contested.sock');
    await staleFiles(path);
    // The second server runs at the worst moment: after the first has
    // probed the stale file and just before it unlinks it.
    let second: unknown = null;
    let secondFd = -1;
    hooks.beforeUnlink = (unlinking) => {
      expect(unlinking).toBe(path);
      secondFd = native!.socket(Kind.stream);
      try {
        second = bindSafely(secondFd, Kind.stream, path);
      } catch (err) {
        second = err;
      }
    };
    const first = await server().listen(path);
    native!.close(secondFd);
    expect(second).toMatchObject({ code: 'EADDRINUSE' });
    expect(isStartingThere(second)).toBe(true); // (worth another try once the first listens)
    expect(await answers(path)).toBe(true);
    expect(first.listening).toBe(true);
  });

  it('two processes on a path with an old stale file: exactly one listens and answers there, in every round', async () => {
    const rounds = 6;
    const paths = Array.from({ length: rounds }, (_, i) => join(dir.path, `race-${i}.sock`));
    await staleFiles(...paths);
    for (const path of paths) {
      const startAt = String(Date.now() + 250);
      const racers = [nodeChild('listen_race.mjs', [path, startAt]), nodeChild('listen_race.mjs', [path, startAt])];
      const said = (await Promise.all(racers.map((r) => r.next()))) as Array<{ pid: number; listen: string; answeredBy?: number }>;
      await Promise.all(racers.map((r) => r.exited));
      const winners = said.filter((s) => s.listen === 'ok');
      expect(winners, JSON.stringify(said)).toHaveLength(1);
      expect(winners[0]!.answeredBy).toBe(winners[0]!.pid);
      expect(said.find((s) => s !== winners[0])!.listen).toBe('EADDRINUSE');
    }
  });

  it('a symlink or a FIFO where the lock file goes is neither followed nor waited on: the server listens without a lock', async () => {
    const linked = join(dir.path, 'linked.sock');
    const target = join(dir.path, 'not-to-be-created');
    symlinkSync(target, `${linked}.lock`);
    const fifo = join(dir.path, 'fifo.sock');
    execFileSync('mkfifo', [`${fifo}.lock`]);
    for (const path of [linked, fifo]) {
      const s = await server().listen(path);
      expect(await answers(path)).toBe(true);
      await s.close();
      expect(existsSync(path)).toBe(false);
    }
    expect(existsSync(target)).toBe(false);
    expect(lstatSync(`${linked}.lock`).isSymbolicLink()).toBe(true);
    expect(lstatSync(`${fifo}.lock`).isFIFO()).toBe(true);
  });

  it('is held by a bound datagram socket too, and let go at its close()', async () => {
    const path = join(dir.path, 'dgram.sock');
    const d = createDatagram().bind(path);
    expect(lstatSync(`${path}.lock`).isFile()).toBe(true);
    await d.close();
    expect(existsSync(`${path}.lock`)).toBe(false);
    expect(existsSync(path)).toBe(false);
  });
});
