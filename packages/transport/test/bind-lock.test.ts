// The lock a server takes beside its socket path (`<path>.afunix.lock`)
// while it binds and starts listening: what makes replacing a stale socket
// file safe when several servers start on one path at once. What a held lock
// means to another server, that none outlives listen(), and the files
// that must not be mistaken for it.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chownSync, existsSync, lstatSync, readdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { bindSafely, isStartingThere, SETUP_GRACE_MS } from '../src/bind.js';
import { connect, createDatagram, createServer, type UnixServer } from '../src/index.js';
import { uv } from '../src/errors.js';
import { Kind, native } from '../src/native.js';
import { addedSince, expectOneListener, nodeChild, openFds, tempDir } from './helpers.js';

// unlinkSync passes through, except that a test may run something just
// before one unlink: the moment another server could act in. fchmodSync
// may be made to fail, as on a file system that refuses modes.
const hooks = vi.hoisted(() => ({ beforeUnlink: null as ((path: string) => void) | null, fchmodFails: false }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const unlinkSync = (path: import('node:fs').PathLike) => {
    const hook = hooks.beforeUnlink;
    hooks.beforeUnlink = null;
    hook?.(String(path));
    fs.unlinkSync(path);
  };
  const fchmodSync = (fd: number, mode: import('node:fs').Mode) => {
    if (hooks.fchmodFails) throw Object.assign(new Error('EPERM: operation not permitted, fchmod'), { code: 'EPERM' });
    fs.fchmodSync(fd, mode);
  };
  return { ...fs, default: { ...fs, unlinkSync, fchmodSync }, unlinkSync, fchmodSync };
});

let dir: ReturnType<typeof tempDir>;
const servers: UnixServer[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  hooks.beforeUnlink = null;
  hooks.fchmodFails = false;
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
  const child = spawn('python3', ['-c', 'import fcntl,os,sys; fd=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT,0o600); fcntl.flock(fd,fcntl.LOCK_EX); print("locked",flush=True); sys.stdin.read()', `${path}.afunix.lock`]);
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  expect(line).toBe('locked');
  return child;
}

describe('the lock beside a socket path', () => {
  it('lasts only while listen() binds: no lock file is left once it listens, nor after close()', async () => {
    const path = join(dir.path, 'app.sock');
    await staleFiles(path); // (the path taken over under the lock)
    const s = await server().listen(path);
    expect(await answers(path)).toBe(true);
    expect(existsSync(`${path}.afunix.lock`)).toBe(false);
    await s.close();
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.afunix.lock`)).toBe(false);
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
      expect(String((err as Error).message)).toContain(`${path}.afunix.lock`);
      expect(lstatSync(path).ino).toBe(stale);
    } finally {
      holder.kill('SIGKILL');
      await once(holder, 'exit');
    }
    // The lock file of a holder that died is taken over, and removed.
    await server().listen(path);
    expect(await answers(path)).toBe(true);
    expect(existsSync(`${path}.afunix.lock`)).toBe(false);
  });

  it('is not held by a server that lost its path: after the next one there dies, a third replaces its stale file', async () => {
    const path = join(dir.path, 'lost.sock');
    const first = await server().listen(path);
    unlinkSync(path); // (a tmp cleaner, an operator's rm)
    const child = nodeChild('cred_child.mjs', ['listen', path]);
    expect(await child.next()).toEqual({ listening: true });
    child.kill('SIGKILL');
    await child.exited;
    await sleep(SETUP_GRACE_MS + 100);
    const third = await server().listen(path);
    expect(await answers(path)).toBe(true);
    expect(first.listening).toBe(true);
    await first.close(); // (the file is the third server's: left alone)
    expect(lstatSync(path).isSocket()).toBe(true);
    await third.close();
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
      await expectOneListener(path);
      expect(existsSync(`${path}.afunix.lock`)).toBe(false);
    }
  });

  it("a file at the lock's path that is not ours (a symlink, a FIFO, one with data, another mode, another user's) is neither used nor removed", async () => {
    const target = join(dir.path, 'not-to-be-created');
    const cases = {
      symlink: (lock: string) => symlinkSync(target, lock),
      fifo: (lock: string) => execFileSync('mkfifo', [lock]),
      data: (lock: string) => writeFileSync(lock, 'pid=1234'),
      // (empty, ours, but not the 0600 this library makes: another tool's)
      otherMode: (lock: string) => writeFileSync(lock, '', { mode: 0o644 }),
      // (needs root, as the credentials tests do)
      otherUser: (lock: string) => {
        writeFileSync(lock, '');
        chownSync(lock, 65534, 65534);
      },
    };
    for (const [name, make] of Object.entries(cases)) {
      const path = join(dir.path, `${name}.sock`);
      make(`${path}.afunix.lock`);
      const s = await server().listen(path);
      expect(await answers(path)).toBe(true);
      await s.close();
      expect(existsSync(path)).toBe(false);
      expect(lstatSync(`${path}.afunix.lock`, { throwIfNoEntry: false }), name).toBeDefined();
    }
    expect(existsSync(target)).toBe(false);
    expect(readFileSync(join(dir.path, 'data.sock.afunix.lock'), 'utf8')).toBe('pid=1234');
    expect(lstatSync(join(dir.path, 'otherUser.sock.afunix.lock')).uid).toBe(65534);
  });

  it("a socket file that cannot be probed (another user's, connect() EACCES) is left alone, and the error says so", async () => {
    const path = join(dir.path, 'unprobed.sock');
    await staleFiles(path);
    const n = native as unknown as { connect: (fd: number, address: Uint8Array) => number };
    const realConnect = n.connect;
    n.connect = () => uv.EACCES!;
    try {
      await expect(server().listen(path)).rejects.toMatchObject({
        code: 'EADDRINUSE',
        message: expect.stringContaining('it could not be probed: connect gave EACCES; it was left alone'),
      });
    } finally {
      n.connect = realConnect;
    }
    expect(lstatSync(path).isSocket()).toBe(true);
  });

  it('where flock() fails (NFS without lockd, say), binds without a lock and leaves no lock file behind', async () => {
    const n = native as unknown as { tryLock: (fd: number) => number };
    const realTryLock = n.tryLock;
    n.tryLock = () => uv.ENOLCK!;
    try {
      const path = join(dir.path, 'nolock.sock');
      await staleFiles(path);
      const s = await server().listen(path);
      expect(await answers(path)).toBe(true);
      expect(existsSync(`${path}.afunix.lock`)).toBe(false);
      await s.close();
      const d = createDatagram().bind(join(dir.path, 'nolock.dgram'));
      await d.close();
      expect(readdirSync(dir.path)).toEqual([]);
    } finally {
      n.tryLock = realTryLock;
    }
  });

  it('a lock file whose mode cannot be set is not used, and is neither left behind nor left open', async () => {
    // (A umask without the owner's write bit makes the new file 0400; then
    // the fchmod to 0600 fails, as on a file system that refuses modes.)
    const path = join(dir.path, 'nomode.sock');
    const fdsBefore = openFds();
    hooks.fchmodFails = true;
    const umask = process.umask(0o277);
    let s: UnixServer;
    try {
      s = await server().listen(path);
    } finally {
      process.umask(umask);
    }
    expect(readdirSync(dir.path)).toEqual(['nomode.sock']);
    expect(addedSince(fdsBefore)).toEqual([expect.stringMatching(/^\d+ socket:\[\d+\]$/)]); // (the listening socket alone)
    await s.close();
  });

  it('orders datagram sockets too: a stale file under a held lock is left alone, then replaced', async () => {
    const path = join(dir.path, 'dgram.sock');
    await staleFiles(path);
    const holder = await foreignLockHolder(path);
    const refused = createDatagram();
    try {
      expect(() => refused.bind(path)).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }));
      expect(existsSync(path)).toBe(true);
    } finally {
      await refused.close();
      holder.kill('SIGKILL');
      await once(holder, 'exit');
    }
    const d = createDatagram().bind(path);
    expect(existsSync(`${path}.afunix.lock`)).toBe(false);
    await d.close();
    expect(existsSync(path)).toBe(false);
  });
});
