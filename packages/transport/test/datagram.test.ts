// SOCK_DGRAM: bound paths and abstract names, the sender's address on every
// datagram, fds and credentials with datagrams, connected datagram sockets,
// oversized datagrams, and the errors for sending to nowhere.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, closeSync, existsSync, lstatSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type AfunixError,
  createDatagram,
  encodeAddress,
  type DatagramInfo,
  type DatagramOptions,
  fromFd,
  socketPair,
  socketPairFds,
  type UnixDatagram,
} from '../src/index.js';
import { Kind, native } from '../src/native.js';
import { addedSince, nodeChild, openFds, pattern, tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
const open: UnixDatagram[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((d) => d.close()));
  dir.remove();
});

function dgram(options?: DatagramOptions): UnixDatagram {
  const d = createDatagram(options);
  open.push(d);
  return d;
}

const unique = () => `@afunix-dgram-${process.pid}-${Math.random().toString(36).slice(2)}`;

function nextMessage(d: UnixDatagram): Promise<[Buffer, DatagramInfo]> {
  return once(d, 'message') as Promise<[Buffer, DatagramInfo]>;
}

async function failure(p: Promise<unknown>): Promise<AfunixError> {
  try {
    await p;
  } catch (e) {
    return e as AfunixError;
  }
  throw new Error('expected a failure, but it succeeded');
}

describe('datagram addressing', () => {
  it('a path and an @abstract name exchange datagrams, each seeing the other as sender', async () => {
    const pathA = join(dir.path, 'a.sock');
    const nameB = unique();
    const a = dgram().bind(pathA);
    const b = dgram().bind(nameB);
    expect(a.address()).toBe(pathA);
    expect(b.address()).toBe(nameB);
    expect(lstatSync(pathA).isSocket()).toBe(true);

    const atB = nextMessage(b);
    await a.send(Buffer.from('to the abstract name'), { address: nameB });
    const [data, info] = await atB;
    expect(data.toString()).toBe('to the abstract name');
    expect(info).toEqual({ address: pathA, fds: null, credentials: null });

    const atA = nextMessage(a);
    await b.send([Buffer.from('gathered '), Buffer.from('reply')], { address: pathA });
    const [reply, replyInfo] = await atA;
    expect(reply.toString()).toBe('gathered reply');
    expect(replyInfo.address).toBe(nameB);
  });

  it('a large maxMessageSize costs address space, not memory, until a datagram that large comes', async () => {
    const a = dgram({ maxMessageSize: 512 * 1024 * 1024 }).bind(unique());
    const b = dgram().bind(unique());
    const rss = process.memoryUsage.rss();
    const got = nextMessage(a);
    await b.send(Buffer.from('hi'), { address: a.address() });
    expect((await got)[0].toString()).toBe('hi');
    // It was resident at once, all 512 MiB of it (helper-36).
    expect(process.memoryUsage.rss() - rss).toBeLessThan(64 * 1024 * 1024);
  });

  it('keeps datagram boundaries, from 1 byte to 200 KiB, in order', async () => {
    const b = dgram().bind(unique());
    const a = dgram();
    const sizes = [1, 5, 4096, 65536, 200 * 1024, 1, 777];
    const got: Buffer[] = [];
    const all = new Promise<void>((resolve) => {
      b.on('message', (m: Buffer) => {
        got.push(Buffer.from(m));
        if (got.length === sizes.length) resolve();
      });
    });
    for (const [i, n] of sizes.entries()) await a.send(pattern(n, i), { address: b.address() });
    await all;
    expect(got.map((m) => m.length)).toEqual(sizes);
    got.forEach((m, i) => expect(m.equals(pattern(sizes[i]!, i))).toBe(true));
  });

  it('an unbound sender arrives with an empty address; an autobound one with @name', async () => {
    const b = dgram().bind(unique());
    const plain = dgram();
    let at = nextMessage(b);
    await plain.send(Buffer.from('x'), { address: b.address() });
    expect((await at)[1].address).toBe('');
    const auto = dgram().bind();
    expect(auto.address()).toMatch(/^@.+/);
    at = nextMessage(b);
    await auto.send(Buffer.from('y'), { address: b.address() });
    expect((await at)[1].address).toBe(auto.address());
  });

  it('a bound path gets its mode, and close() removes the file', async () => {
    const path = join(dir.path, 'mode.sock');
    const d = dgram().bind(path, { mode: 0o600 });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await d.close();
    expect(existsSync(path)).toBe(false);
  });

  it('bind() refuses a mode that is no integer from 0 to 0o7777 with ERR_INVALID_ARG_VALUE, and binds nothing', async () => {
    const path = join(dir.path, 'bad-mode.sock');
    const d = dgram();
    // (0o10000 went through chmod as mode 0.)
    for (const mode of [-1, 0o10000, 1.5, '600']) {
      expect(() => d.bind(path, { mode: mode as number }), String(mode)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    }
    expect(existsSync(path)).toBe(false);
    d.bind(path, { mode: 0o640 });
    expect(statSync(path).mode & 0o777).toBe(0o640);
    await d.close();
  });

  // A datagram socket receives from its bind() on: a mode applied after it
  // let another user's datagrams in for a moment (1,340 in 3,305 binds).
  it.runIf(process.getuid?.() === 0 && process.platform === 'linux' && existsSync('/usr/bin/python3'))(
    'with a mode, no datagram of another uid gets in, even while it binds (root: sends as uid 65534)',
    async () => {
      chmodSync(dir.path, 0o777);
      const path = join(dir.path, 'locked.sock');
      const before = process.umask(0); // the loosest file a bind() could make
      const spammer = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', '-c', `
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(False)
end = time.time() + 5
while time.time() < end:
    try: s.sendto(b"intruder", ${JSON.stringify(path)})
    except OSError: pass
`], { stdio: 'ignore' });
      // Binds for a second with `mode` (or none), counting the other uid's datagrams.
      const intrudersIn = async (mode: number | undefined) => {
        let intruders = 0;
        const until = Date.now() + 1000;
        while (Date.now() < until) {
          const d = createDatagram({ passCredentials: true });
          d.on('message', (_m, info) => void (info.credentials?.uid === 65534 && intruders++));
          d.bind(path, mode === undefined ? {} : { mode });
          await new Promise((r) => setTimeout(r, 1));
          await d.close();
        }
        return intruders;
      };
      try {
        await new Promise((r) => setTimeout(r, 200));
        expect(await intrudersIn(undefined)).toBeGreaterThan(0); // the sender does reach an open socket
        expect(await intrudersIn(0o600)).toBe(0);
      } finally {
        process.umask(before);
        spammer.kill();
      }
    },
  );
});

describe('datagrams with fds and credentials', () => {
  it('carries fds; those taken in the listener stay open, the rest are closed', async () => {
    const b = dgram().bind(unique());
    const a = dgram();
    const p = join(dir.path, 'f0');
    writeFileSync(p, 'datagram file');
    const file = openSync(p, 'r');
    // The second fd is one end of a socket pair: its partner sees
    // end-of-stream only once every copy of it, the received one too, is closed.
    const [marker, watch] = socketPairFds('stream');
    const watcher = fromFd(watch);
    watcher.resume();
    const watcherEnded = once(watcher, 'end');
    const got = new Promise<{ data: string; kept: number }>((resolve) => {
      b.once('message', (data: Buffer, info: DatagramInfo) => {
        expect(info.fds!.length).toBe(2);
        resolve({ data: data.toString(), kept: info.fds!.takeAt(0)! });
      });
    });
    await a.send(Buffer.from('with fds'), { address: b.address(), fds: [file, marker] });
    const { data, kept } = await got;
    expect(data).toBe('with fds');
    const buf = Buffer.alloc(64);
    expect(buf.toString('utf8', 0, readSync(kept, buf, 0, 64, 0))).toBe('datagram file');
    closeSync(kept);
    closeSync(file);
    closeSync(marker);
    await watcherEnded;
    watcher.destroy();
  });

  it('a listener that throws: the rest of the read batch is still delivered, and no fd leaks', async () => {
    const child = nodeChild('dgram_throwing_listener.mjs', [unique()]);
    const report = await child.next<{ seen: string[]; thrown: number; added: number }>();
    expect(report).toEqual({ seen: ['m0', 'm1', 'm2', 'm3', 'm4'], thrown: 1, added: 0 });
    expect(await child.exited).toEqual({ code: 0, signal: null });
  });

  it('passCredentials attaches the sender pid, uid and gid to every datagram', async () => {
    const b = dgram({ passCredentials: true }).bind(unique());
    const a = dgram();
    const creds: unknown[] = [];
    const three = new Promise<void>((resolve) => {
      b.on('message', (_m: Buffer, info: DatagramInfo) => {
        creds.push(info.credentials);
        if (creds.length === 3) resolve();
      });
    });
    for (let i = 0; i < 3; i++) await a.send(Buffer.from(`c${i}`), { address: b.address() });
    await three;
    const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
    expect(creds).toEqual([me, me, me]);
  });
});

describe('connected datagram sockets', () => {
  it('send() without an address goes to the connected peer, and only that peer may send to it', async () => {
    const pathB = join(dir.path, 'b.sock');
    const pathA = join(dir.path, 'a.sock');
    const b = dgram().bind(pathB);
    const a = dgram().bind(pathA).connect(pathB);
    const atB = nextMessage(b);
    await a.send(Buffer.from('no address needed'));
    const [data, info] = await atB;
    expect(data.toString()).toBe('no address needed');
    expect(info.address).toBe(pathA);

    const stranger = dgram();
    const err = await failure(stranger.send(Buffer.from('let me in'), { address: pathA }));
    expect(err).toMatchObject({ code: 'EPERM', syscall: 'sendmsg', address: pathA });
    // b, the connected peer, still gets through.
    const atA = nextMessage(a);
    await b.send(Buffer.from('from the peer'), { address: pathA });
    expect((await atA)[0].toString()).toBe('from the peer');
  });

  it('an oversized datagram is an EMSGSIZE error, and the socket reads on', async () => {
    const b = dgram({ maxMessageSize: 100 }).bind(unique());
    const a = dgram();
    const errored = once(b, 'error') as Promise<[AfunixError]>;
    await a.send(Buffer.alloc(101), { address: b.address() });
    expect((await errored)[0].code).toBe('EMSGSIZE');
    const next = nextMessage(b);
    await a.send(Buffer.alloc(100, 1), { address: b.address() });
    expect((await next)[0].length).toBe(100);
  });

  it('a socket error (the peer went elsewhere with our datagram unread) is one ECONNRESET, and the socket reads on', async () => {
    const xName = unique();
    const x = dgram().bind(xName);
    const y = dgram().bind(unique());
    const z = dgram().bind(unique());
    x.connect(y.address());
    y.connect(xName);
    const errors: AfunixError[] = [];
    x.on('error', (e: AfunixError) => errors.push(e));
    // Both in this tick, before y polls: y drops the datagram it has not
    // read when it connects elsewhere, and the kernel sets ECONNRESET on x.
    const sent = x.send(Buffer.from('unread by y'));
    y.connect(z.address());
    await sent;
    const next = nextMessage(x);
    await y.send(Buffer.from('after the error'), { address: xName });
    expect((await next)[0].toString()).toBe('after the error');
    // Reading SO_ERROR cleared it: one report, not one per loop turn.
    expect(errors.map((e) => `${e.code} ${e.syscall}`)).toEqual(['ECONNRESET recvmsg']);
  });
});

describe('a receiver that does not read', () => {
  it('an unconnected sender that meets EAGAIN tries again on its timer, not on every loop turn', async () => {
    // A bound socket nobody reads: its queue fills after a few datagrams.
    const name = unique();
    const rx = native!.socket(Kind.dgram);
    expect(native!.bind(rx, encodeAddress(name, 'bind'))).toBe(0);
    const write = vi.spyOn(native!, 'write');
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const tx = dgram();
      const results = Array.from({ length: 64 }, (_, i) =>
        tx.send(Buffer.from(`m${i}`), { address: name }).then(
          () => 'sent',
          (e: AfunixError) => e.code,
        ),
      );
      // send() wrote at once until the queue was full: the last write met EAGAIN.
      const blocked = write.mock.calls.length;
      expect(write.mock.results.at(-1)?.value).toBeLessThan(0);
      // The socket is writable all along (the full queue is the receiver's):
      // nothing but the retry timer, which has not run, may try again.
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      expect(write.mock.calls.length).toBe(blocked);
      // The receiver goes away; the timer's retry finds that out for the rest.
      native!.close(rx);
      await vi.advanceTimersByTimeAsync(10);
      const outcomes = await Promise.all(results);
      expect(outcomes.filter((o) => o === 'sent').length).toBe(blocked - 1);
      expect(new Set(outcomes.slice(blocked - 1))).toEqual(new Set(['ECONNREFUSED']));
    } finally {
      vi.useRealTimers();
      write.mockRestore();
    }
  });
});

describe('after close()', () => {
  it('bind(), connect() and address() throw ERR_SOCKET_CLOSED, and leave the socket that reuses the fd number alone', async () => {
    const peer = dgram().bind(unique());
    const d = createDatagram();
    await d.close();
    // Takes the lowest free fd numbers: the closed socket's among them.
    const [s1, s2] = socketPair('seqpacket');
    try {
      const closed = expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' });
      expect(() => d.bind(unique())).toThrow(closed);
      expect(() => d.connect(peer.address())).toThrow(closed);
      expect(() => d.address()).toThrow(closed);
      expect([s1.address(), s2.address()]).toEqual(['', '']);
    } finally {
      s1.destroy();
      s2.destroy();
    }
  });
});

describe('sending to nowhere', () => {
  it('ENOENT for a missing path', async () => {
    const path = join(dir.path, 'missing.sock');
    const err = await failure(dgram().send(Buffer.from('x'), { address: path }));
    expect(err).toMatchObject({ code: 'ENOENT', syscall: 'sendmsg', address: path });
    expect(typeof err.errno).toBe('number');
  });

  it('ECONNREFUSED for an abstract name nobody bound', async () => {
    const name = unique();
    expect(await failure(dgram().send(Buffer.from('x'), { address: name }))).toMatchObject({
      code: 'ECONNREFUSED',
      syscall: 'sendmsg',
      address: name,
    });
  });

  it('ECONNREFUSED for a stale socket file (bound by a process that exited)', async () => {
    const path = join(dir.path, 'stale.sock');
    const py = spawnSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind(sys.argv[1])', path]);
    expect(py.status).toBe(0);
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(await failure(dgram().send(Buffer.from('x'), { address: path }))).toMatchObject({ code: 'ECONNREFUSED', address: path });
  });

  it('connect() to nowhere throws at once with the address', () => {
    const path = join(dir.path, 'nothing.sock');
    expect(() => dgram().connect(path)).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'connect', address: path }));
  });
});

describe('datagram options', () => {
  it('bad ones are ERR_INVALID_ARG_VALUE before the socket exists; null is none', () => {
    const before = openFds();
    for (const bad of ['x', { maxMessageSize: 0 }, { maxMessageSize: 'big' }, { passCredentials: 'yes' }]) {
      expect(() => createDatagram(bad as never), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    }
    expect(addedSince(before)).toEqual([]);
    const d = createDatagram(null);
    expect(addedSince(before)).toEqual([expect.stringMatching(/^\d+ socket:\[\d+\]$/)]);
    return d.close();
  });

  it('send() fails through its promise, never by throwing: bad data, address or fds', async () => {
    const d = createDatagram();
    try {
      const attempts: Array<[string, () => Promise<void>]> = [
        ['data', () => d.send('text' as never, { address: '@afunix-test-nobody' })],
        ['address', () => d.send(Buffer.from('x'), { address: 5 as never })],
        ['address', () => d.send(Buffer.from('x'), { address: `/${'x'.repeat(200)}` })],
        ['fds', () => d.send(Buffer.from('x'), { address: '@afunix-test-nobody', fds: [-1] })],
      ];
      for (const [what, attempt] of attempts) {
        let sent: Promise<void> | undefined;
        expect(() => (sent = attempt()), what).not.toThrow();
        await expect(sent, what).rejects.toHaveProperty('code');
      }
      await expect(d.send('text' as never, { address: '@x' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    } finally {
      await d.close();
    }
  });
});
