// Binding names: stale files replaced, live servers and non-sockets left
// alone, our own file removed on close (and only ours), mode in force at
// once, long paths refused whole, abstract and autobound names, and the
// errors connect() gives, shaped like Node's.
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type AfunixError, connect, createServer, listenFds, type ServerOptions, type UnixServer, type UnixSocket } from '../src/index.js';
import { destroyAll, expectOneListener, nodeChild, tempDir } from './helpers.js';
import { SETUP_GRACE_MS } from '../src/bind.js';

let dir: ReturnType<typeof tempDir>;
const servers: UnixServer[] = [];
const sockets: UnixSocket[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  await destroyAll(sockets);
  await Promise.all(servers.splice(0).map((s) => s.close()));
  dir.remove();
});

function server(options: ServerOptions = {}): UnixServer {
  const s = createServer(options);
  servers.push(s);
  s.on('connection', (c: UnixSocket) => sockets.push(c));
  return s;
}

/** Rejects with the error, or fails the test if the promise resolves. */
async function failure(p: Promise<unknown>): Promise<AfunixError> {
  try {
    await p;
  } catch (e) {
    return e as AfunixError;
  }
  throw new Error('expected a failure, but it succeeded');
}

/** Connects and checks the server really accepted this connection. */
async function reaches(s: UnixServer, address: string, type: 'stream' | 'seqpacket' = 'stream'): Promise<void> {
  const accepted = once(s, 'connection');
  const c = await connect(address, { type });
  sockets.push(c);
  await accepted;
}

/** A socket file left behind by a server process killed with SIGKILL. */
async function staleSocketFile(path: string): Promise<void> {
  const child = nodeChild('cred_child.mjs', ['listen', path]);
  expect(await child.next()).toEqual({ listening: true });
  child.kill('SIGKILL');
  expect(await child.exited).toEqual({ code: null, signal: 'SIGKILL' });
  expect(lstatSync(path).isSocket()).toBe(true);
}

describe('binding a path', () => {
  it('replaces the stale socket file of a SIGKILLed server', async () => {
    const path = join(dir.path, 'stale.sock');
    await staleSocketFile(path);
    expect((await failure(connect(path))).code).toBe('ECONNREFUSED');
    const s = server();
    await s.listen(path);
    // The path leads to the new server now (the stale file refused connections).
    await reaches(s, path);
  });

  it('two processes listening on one path at once: exactly one gets it and answers there, the other EADDRINUSE', async () => {
    // Between one server's bind() and listen() its file refuses connections,
    // as a stale one does: the other must not take it for stale then.
    const path = join(dir.path, 'race.sock');
    for (let round = 0; round < 8; round++) {
      rmSync(path, { force: true });
      await expectOneListener(path);
    }
  });

  it('a socket file made moments ago that refuses connections is waited out: replaced once old enough, or given up by close()', async () => {
    // A bound socket that never listened, its process gone: young and silent.
    const boundOnly = (path: string) =>
      execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path]);
    const path = join(dir.path, 'young.sock');
    boundOnly(path);
    const s = server();
    const started = Date.now();
    await s.listen(path);
    expect(Date.now() - started).toBeGreaterThanOrEqual(SETUP_GRACE_MS / 2); // (it waited, rather than taking it at once)
    await reaches(s, path);

    const other = join(dir.path, 'young-closed.sock');
    boundOnly(other);
    const giving = server();
    const listening = giving.listen(other);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await giving.close();
    await expect(listening).rejects.toMatchObject({ code: 'ERR_SERVER_NOT_RUNNING' });
    expect(lstatSync(other).isSocket()).toBe(true); // the other file, left alone
  });

  it('a relative path stays the same file when the process changes directory while listen() runs', async () => {
    const before = process.cwd();
    process.chdir(dir.path);
    try {
      const s = server();
      const listening = s.listen('relative.sock');
      process.chdir(before); // (listen() checks its file again after an await)
      await listening;
      await reaches(s, join(dir.path, 'relative.sock'));
      await s.close();
      expect(existsSync(join(dir.path, 'relative.sock'))).toBe(false);
      expect(existsSync(join(dir.path, 'relative.sock.afunix.lock'))).toBe(false);
    } finally {
      process.chdir(before);
    }
  });

  it('refuses a path where a live server listens (EADDRINUSE), and that server keeps working', async () => {
    const path = join(dir.path, 'live.sock');
    const first = server();
    await first.listen(path);
    const ino = lstatSync(path).ino;
    const err = await failure(server().listen(path));
    expect(err).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind', address: path });
    expect(typeof err.errno).toBe('number');
    expect(lstatSync(path).ino).toBe(ino);
    await reaches(first, path);
  });

  it('never unlinks a regular file, a symlink to a file, a dangling symlink or a symlink to a socket', async () => {
    const live = join(dir.path, 'target.sock');
    const s = server();
    await s.listen(live);
    const regular = join(dir.path, 'regular');
    writeFileSync(regular, 'precious');
    const cases = {
      regular,
      linkToFile: join(dir.path, 'link-to-file'),
      dangling: join(dir.path, 'dangling'),
      linkToSocket: join(dir.path, 'link-to-socket'),
    };
    symlinkSync(regular, cases.linkToFile);
    symlinkSync(join(dir.path, 'nothing-here'), cases.dangling);
    symlinkSync(live, cases.linkToSocket);
    for (const [name, path] of Object.entries(cases)) {
      const before = lstatSync(path);
      const err = await failure(server().listen(path));
      expect(err.code, name).toBe('EADDRINUSE');
      expect(err.address, name).toBe(path);
      const after = lstatSync(path);
      expect([after.ino, after.mode], name).toEqual([before.ino, before.mode]);
    }
    expect(readFileSync(regular, 'utf8')).toBe('precious');
    expect(lstatSync(live).isSocket()).toBe(true);
    await reaches(s, live);
  });

  it('removes its own socket file on close', async () => {
    const path = join(dir.path, 'mine.sock');
    const s = server();
    await s.listen(path);
    expect(lstatSync(path).isSocket()).toBe(true);
    await s.close();
    expect(existsSync(path)).toBe(false);
  });

  it('does not remove a file that replaced its socket', async () => {
    const path = join(dir.path, 'replaced.sock');
    const old = server();
    await old.listen(path);
    unlinkSync(path);
    const next = server();
    await next.listen(path); // a new server took the path over
    const ino = lstatSync(path).ino;
    await old.close();
    expect(lstatSync(path).ino).toBe(ino);
    await reaches(next, path);
    // And a regular file in its place is not touched either.
    await next.close();
    writeFileSync(path, 'not a socket');
    const third = server();
    const err = await failure(third.listen(path));
    expect(err.code).toBe('EADDRINUSE');
    await third.close();
    expect(readFileSync(path, 'utf8')).toBe('not a socket');
  });

  it.each([
    ['600', 0o600],
    ['660', 0o660],
    ['666', 0o666],
  ])('mode 0o%s is in force as soon as listen() resolves', async (_name, mode) => {
    const path = join(dir.path, `m${mode.toString(8)}.sock`);
    await server({ mode }).listen(path);
    expect(statSync(path).mode & 0o777).toBe(mode);
  });

  it('refuses a 200-character path with ENAMETOOLONG, never binding a truncated one', async () => {
    const path = join(dir.path, 'x'.repeat(200 - dir.path.length - 1));
    expect(path.length).toBe(200);
    const err = await failure(server().listen(path));
    expect(err).toMatchObject({ code: 'ENAMETOOLONG', syscall: 'bind', address: path });
    expect(typeof err.errno).toBe('number');
    expect(readdirSync(dir.path)).toEqual([]);
    const cerr = await failure(connect(path));
    expect(cerr).toMatchObject({ code: 'ENAMETOOLONG', syscall: 'connect', address: path });
  });

  it('accepts a path of exactly 107 bytes and refuses 108 (sun_path holds the NUL)', async () => {
    const pad = (n: number) => join(dir.path, 'p'.repeat(n - dir.path.length - 1));
    const fits = pad(107);
    const s = server();
    await s.listen(fits);
    expect(s.address()).toBe(fits);
    await reaches(s, fits);
    expect((await failure(server().listen(pad(108)))).code).toBe('ENAMETOOLONG');
  });
});

describe('abstract and autobound names', () => {
  const unique = () => `afunix-test-${process.pid}-${Math.random().toString(36).slice(2)}`;

  it('listens on @name, creates no file, and refuses the same name twice', async () => {
    const name = `@${unique()}`;
    const s = server();
    await s.listen(name);
    expect(s.address()).toBe(name);
    await reaches(s, name);
    expect((await failure(server().listen(name))).code).toBe('EADDRINUSE');
    expect(readdirSync(dir.path)).toEqual([]);
  });

  it('\\0name is the same address as @name', async () => {
    const name = unique();
    const s = server({ type: 'seqpacket' });
    await s.listen(`\0${name}`);
    expect(s.address()).toBe(`@${name}`);
    await reaches(s, `@${name}`, 'seqpacket');
    await reaches(s, `\0${name}`, 'seqpacket');
  });

  it('autobinds without an address: address() is @<kernel name>, and clients reach it', async () => {
    const s = server();
    await s.listen();
    const address = s.address();
    expect(address).toMatch(/^@.+/);
    await reaches(s, address);
    const other = server();
    await other.listen();
    expect(other.address()).not.toBe(address);
  });

  it('refuses a mode for an abstract name (it has no file to protect)', async () => {
    const err = await failure(server({ mode: 0o600 }).listen(`@${unique()}`));
    expect(err.code).toBe('ERR_INVALID_ARG_VALUE');
  });
});

describe('connect errors', () => {
  it('ENOENT when nothing is at the path', async () => {
    const path = join(dir.path, 'nobody-home.sock');
    const err = await failure(connect(path));
    expect(err).toMatchObject({ code: 'ENOENT', syscall: 'connect', address: path });
    expect(typeof err.errno).toBe('number');
    expect(err.message).toContain(path);
  });

  it('ECONNREFUSED at a stale socket file', async () => {
    const path = join(dir.path, 'stale.sock');
    await staleSocketFile(path);
    const err = await failure(connect(path));
    expect(err).toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect', address: path });
    expect(typeof err.errno).toBe('number');
  });

  it('EPROTOTYPE for a stream client at a seqpacket server, and the other way round', async () => {
    const seq = join(dir.path, 'seq.sock');
    await server({ type: 'seqpacket' }).listen(seq);
    const stream = join(dir.path, 'stream.sock');
    await server().listen(stream);
    expect(await failure(connect(seq))).toMatchObject({ code: 'EPROTOTYPE', syscall: 'connect', address: seq });
    expect(await failure(connect(stream, { type: 'seqpacket' }))).toMatchObject({ code: 'EPROTOTYPE', address: stream });
  });

  it('ECONNREFUSED for an abstract name nobody listens on', async () => {
    const name = `@afunix-test-nobody-${process.pid}`;
    expect(await failure(connect(name))).toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect', address: name });
  });
});

describe('accepting', () => {
  it('closes the rest of an accept batch when a connection listener throws', async () => {
    const child = nodeChild('throwing_listener.mjs', [join(dir.path, 'throwing.sock')]);
    const seen = await child.next<{ connections: number; thrown: number; added: number }>();
    // One connection reached the listener and stays open (it owns it); the
    // other four of the batch were closed: 5 client sockets + 1 accepted.
    expect(seen).toEqual({ connections: 1, thrown: 1, added: 6 });
    expect(await child.exited).toEqual({ code: 0, signal: null });
  });
});

describe('socket activation', () => {
  it('reads LISTEN_FDS and LISTEN_PID as digits only, as sd_listen_fds() does', () => {
    for (const bad of [' 2', '0x2', '2.0', '1e0', '', '-0']) {
      expect(() => listenFds({ LISTEN_PID: String(process.pid), LISTEN_FDS: bad }), JSON.stringify(bad)).toThrow(
        expect.objectContaining({ code: 'ERR_AFUNIX_LISTEN_FDS' }),
      );
    }
    for (const pid of [` ${process.pid}`, `${process.pid}.0`, `0x${process.pid.toString(16)}`]) {
      expect(listenFds({ LISTEN_PID: pid, LISTEN_FDS: '1' }), pid).toEqual([]);
    }
    expect(listenFds({ LISTEN_PID: String(process.pid), LISTEN_FDS: '0' })).toEqual([]);
  });
});
