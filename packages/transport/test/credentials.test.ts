// Who is on the other end: SO_PEERCRED right after connect/accept, a pidfd
// for the peer, per-message credentials (SO_PASSCRED), and file permissions
// on the socket enforced against a process running as another user.
import { once } from 'node:events';
import { chmodSync, closeSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  connect,
  type Credentials,
  createServer,
  features,
  socketPair,
  type UnixServer,
  type UnixSocket,
} from '../src/index.js';
import { type Child, destroyAll, nodeChild, pythonChild, tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let server: UnixServer | undefined;
let child: Child | undefined;
const sockets: UnixSocket[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  child?.kill();
  child = undefined;
  await destroyAll(sockets);
  await server?.close();
  server = undefined;
  dir.remove();
});

/** Blocks this thread (the event loop included) until check() holds. */
function spinUntil(check: () => boolean, timeoutMs = 60_000): void {
  const deadline = Date.now() + timeoutMs;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the other process');
    Atomics.wait(cell, 0, 0, 1);
  }
}

const me = (): Credentials => ({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });

async function listenHere(options: { type?: 'stream' | 'seqpacket'; mode?: number; passCredentials?: boolean } = {}) {
  server = createServer(options);
  const path = join(dir.path, 'c.sock');
  await server.listen(path);
  return path;
}

describe('peer credentials', () => {
  it('both ends know each other right after connect and accept (same process)', async () => {
    const path = await listenHere();
    const accepted = once(server!, 'connection') as Promise<[UnixSocket]>;
    const client = await connect(path);
    sockets.push(client);
    expect(client.peerCredentials()).toEqual(me());
    const [peer] = await accepted;
    sockets.push(peer);
    expect(peer.peerCredentials()).toEqual(me());
  });

  it('an accepted socket names the child process that connected, and the child names us', async () => {
    const path = await listenHere();
    const accepted = once(server!, 'connection') as Promise<[UnixSocket]>;
    child = nodeChild('cred_child.mjs', ['connect', path]);
    const [peer] = await accepted;
    sockets.push(peer);
    // Read at once, before any byte is exchanged: the kernel recorded it at connect().
    expect(peer.peerCredentials()).toEqual({ pid: child.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(await child.next()).toEqual({ pid: child.pid, uid: process.getuid!(), gid: process.getgid!(), peer: me() });
    peer.resume();
    peer.end();
    expect((await child.exited).code).toBe(0);
  });

  it('a connecting socket names the child process that listens', async () => {
    const path = join(dir.path, 'child.sock');
    child = nodeChild('cred_child.mjs', ['listen', path]);
    expect(await child.next()).toEqual({ listening: true });
    const sock = await connect(path);
    sockets.push(sock);
    expect(sock.peerCredentials()).toEqual({ pid: child.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(await child.next()).toEqual({ peer: me() });
    sock.end();
    sock.resume();
    expect((await child.exited).code).toBe(0);
  });

  it('peerPidfd() is a pidfd for the peer process (or a clear error where the kernel lacks SO_PEERPIDFD)', async () => {
    const path = await listenHere();
    const accepted = once(server!, 'connection') as Promise<[UnixSocket]>;
    child = nodeChild('cred_child.mjs', ['connect', path]);
    const [peer] = await accepted;
    sockets.push(peer);
    if (!features.peerPidfd) {
      // Linux < 6.5: the probe said so, and the call must say why.
      expect(() => peer.peerPidfd()).toThrow(expect.objectContaining({ code: expect.stringMatching(/^E[A-Z]+$/) }));
      return;
    }
    const pidfd = peer.peerPidfd();
    try {
      expect(readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8')).toMatch(new RegExp(`^Pid:\\s+${child.pid}$`, 'm'));
    } finally {
      closeSync(pidfd);
    }
    peer.resume();
    peer.end();
    await child.exited;
  });
});

describe('per-message credentials (passCredentials)', () => {
  it.each(['stream', 'seqpacket'] as const)('every %s chunk from a child carries its pid, uid and gid', async (type) => {
    const path = await listenHere({ type, passCredentials: true });
    const accepted = once(server!, 'connection') as Promise<[UnixSocket]>;
    child = nodeChild('cred_child.mjs', ['connect', path, type]);
    const [peer] = await accepted;
    sockets.push(peer);
    const chunks: Array<{ data: string; credentials: Credentials | null }> = [];
    peer.setReceiver((data, _fds, credentials) => chunks.push({ data: data.toString(), credentials }));
    await once(peer, 'end');
    expect(chunks.map((c) => c.data).join('')).toBe('message 0;message 1;message 2;');
    if (type === 'seqpacket') expect(chunks.length).toBe(3);
    for (const c of chunks) expect(c.credentials).toEqual({ pid: child.pid, uid: process.getuid!(), gid: process.getgid!() });
    peer.end();
    expect((await child.exited).code).toBe(0);
  });

  it('credentials are right even for bytes that arrive between accept() and the socket setup', async () => {
    // The server accepts every pending connection in one batch, then sets up
    // a UnixSocket for each in turn. Bytes that reach a connection in
    // between must still carry the sender's credentials, not the kernel's
    // "none" (pid 0, uid/gid 65534). Flag files sequence the two processes.
    const path = await listenHere({ passCredentials: true });
    const flag = (name: string) => join(dir.path, name);
    const count = 8;
    const got: Array<Credentials | null> = [];
    let first = true;
    const all = new Promise<void>((resolve) => {
      server!.on('connection', (s: UnixSocket) => {
        sockets.push(s);
        if (first) {
          // The other connections are accepted but not set up yet: let the
          // peer write to them now.
          first = false;
          writeFileSync(flag('accepted'), '');
          spinUntil(() => existsSync(flag('written')));
        }
        s.setReceiver((_data, _fds, credentials) => {
          got.push(credentials);
          if (got.length === count) resolve();
        });
      });
    });
    child = pythonChild('py_accept_race.py', [path, String(count), dir.path]);
    // Hold the event loop until every connection is queued, so that one
    // accept batch takes them all.
    spinUntil(() => existsSync(flag('connected')));
    await all;
    const expected = { pid: child.pid, uid: process.getuid!(), gid: process.getgid!() };
    expect(got).toEqual(new Array(count).fill(expected));
    for (const s of sockets) s.end();
    expect(await child.exited).toEqual({ code: 0, signal: null });
  });

  it('without passCredentials no credentials come along', async () => {
    const [a, b] = socketPair('seqpacket');
    sockets.push(a, b);
    const got = new Promise<Credentials | null>((resolve) => b.setReceiver((_d, _f, c) => resolve(c)));
    a.write('x');
    expect(await got).toBeNull();
  });

  it('a socket pair with passCredentials names this process', async () => {
    const [a, b] = socketPair('stream', { passCredentials: true });
    sockets.push(a, b);
    const got = new Promise<Credentials | null>((resolve) => b.setReceiver((_d, _f, c) => resolve(c)));
    a.write('x');
    expect(await got).toEqual(me());
  });
});

// CI runs as root, so these run there; anywhere else they must fail loudly
// rather than pass by being skipped.
function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error('this test needs root: it spawns a child as uid/gid 65534 (nobody) to check socket file permissions');
  }
}

describe('socket file permissions against another user (uid 65534)', () => {
  async function connectAsNobody(path: string) {
    chmodSync(dir.path, 0o755); // nobody may traverse the directory, nothing more
    child = nodeChild('cred_child.mjs', ['connect', path], { uid: 65534, gid: 65534 });
    return child.next<{ error?: string; syscall?: string; address?: string; uid?: number; peer?: Credentials }>();
  }

  it('mode 0o600: the other user cannot connect (EACCES)', async () => {
    requireRoot();
    const path = await listenHere({ mode: 0o600 });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    let connections = 0;
    server!.on('connection', (s: UnixSocket) => {
      connections++;
      sockets.push(s);
    });
    const report = await connectAsNobody(path);
    expect(report).toMatchObject({ error: 'EACCES', syscall: 'connect', address: path });
    expect((await child!.exited).code).toBe(0);
    expect(connections).toBe(0);
  });

  it('mode 0o666: the other user connects, and peerCredentials() says who it is', async () => {
    requireRoot();
    const path = await listenHere({ mode: 0o666 });
    const accepted = once(server!, 'connection') as Promise<[UnixSocket]>;
    const report = await connectAsNobody(path);
    expect(report).toMatchObject({ uid: 65534, peer: me() });
    const [peer] = await accepted;
    sockets.push(peer);
    expect(peer.peerCredentials()).toEqual({ pid: child!.pid, uid: 65534, gid: 65534 });
    peer.resume();
    peer.end();
    expect((await child!.exited).code).toBe(0);
  });
});
