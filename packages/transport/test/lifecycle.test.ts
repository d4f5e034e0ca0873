// Resources over a lifetime: no fd survives 10,000 connections and 10,000
// fd passes; a socket pair crosses into a child process (fromFd); worker
// threads that close cleanly or abandon their sockets; half-close in both
// directions between two processes.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeFd, connect, createServer, fromFd, socketPair, socketPairFds, type UnixServer, type UnixSocket } from '../src/index.js';
import { addedSince, collect, destroyAll, fixtures, nodeChild, openFds, pattern, requireDist, tempDir, waitFor } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let server: UnixServer | undefined;
const sockets: UnixSocket[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  await destroyAll(sockets);
  await server?.close();
  server = undefined;
  dir.remove();
});

async function settled(before: Map<number, string>): Promise<void> {
  await waitFor(() => addedSince(before).length === 0, () => `fds still open: ${addedSince(before).join(', ')}`);
}

describe('fd accounting', () => {
  it('10,000 connections and 10,000 fd passes leave the fd table as it was', { timeout: 180_000 }, async () => {
    const before = openFds();
    const path = join(dir.path, 'many.sock');
    server = createServer((s) => {
      s.resume();
      s.on('end', () => s.end());
    });
    await server.listen(path);
    let accepted = 0;
    server.on('connection', () => accepted++);
    for (let batch = 0; batch < 50; batch++) {
      await Promise.all(
        Array.from({ length: 200 }, async () => {
          const c = await connect(path);
          const closed = once(c, 'close');
          c.resume();
          c.end('x');
          await closed;
        }),
      );
    }
    expect(accepted).toBe(10_000);
    await waitFor(() => server!.connections === 0, () => `${server!.connections} server-side sockets still open`);

    const file = join(dir.path, 'passed');
    writeFileSync(file, 'passed around');
    const fd = openSync(file, 'r');
    const [a, b] = socketPair('seqpacket');
    let received = 0;
    let wake = () => {};
    b.setReceiver((_data, fds) => {
      // Half are taken and closed by us, half are left for the socket to close.
      if (received % 2 === 0) for (const x of fds!.take()) closeSync(x);
      received++;
      wake();
    });
    for (let batch = 0; batch < 50; batch++) {
      const target = received + 200;
      const done = new Promise<void>((r) => (wake = () => received >= target && r()));
      for (let i = 0; i < 200; i++) a.send(Buffer.from('f'), [fd]);
      await done;
    }
    expect(received).toBe(10_000);
    closeSync(fd);
    await destroyAll([a, b]);
    await server.close();
    server = undefined;
    await settled(before);
  });
});

describe('a socket pair across processes', () => {
  it('a child adopts fd 3 with fromFd(), and 10 MiB go each way intact', { timeout: 120_000 }, async () => {
    requireDist();
    const [mine, theirs] = socketPairFds('stream');
    const child = spawn(process.execPath, [join(fixtures, 'pair_child.mjs')], { stdio: ['inherit', 'inherit', 'inherit', theirs] });
    const exited = once(child, 'exit');
    closeSync(theirs); // the child has its own copy; ours would keep the pair open
    const sock = fromFd(mine);
    sockets.push(sock);
    expect(sock.type).toBe('stream');
    const parts: Buffer[] = [];
    sock.on('data', (d: Buffer) => parts.push(d));
    const ended = once(sock, 'end');
    const out = pattern(10 * 1024 * 1024, 1);
    for (let off = 0; off < out.length; off += 777_777) sock.write(out.subarray(off, off + 777_777));
    sock.end();
    await ended;
    const got = Buffer.concat(parts);
    expect(got.length).toBe(10 * 1024 * 1024);
    expect(got.equals(pattern(10 * 1024 * 1024, 2))).toBe(true);
    expect(await exited).toEqual([0, null]); // the child checked what it got
  });
});

describe('half-close between two processes', () => {
  it('the child ends its side first; we still reply and it still reads', async () => {
    const path = join(dir.path, 'half.sock');
    server = createServer();
    await server.listen(path);
    const accepted = once(server, 'connection') as Promise<[UnixSocket]>;
    const child = nodeChild('halfclose_child.mjs', [path, 'child-first']);
    const [peer] = await accepted;
    sockets.push(peer);
    let got = '';
    peer.setEncoding('utf8');
    peer.on('data', (d: string) => (got += d));
    await once(peer, 'end');
    expect(got).toBe('ping from child');
    expect(peer.writable).toBe(true);
    peer.end('pong after your end');
    expect(await child.next()).toEqual({ received: 'pong after your end' });
    expect((await child.exited).code).toBe(0);
  });

  it('we end our side first; the child still replies and we still read', async () => {
    const path = join(dir.path, 'half2.sock');
    server = createServer();
    await server.listen(path);
    const accepted = once(server, 'connection') as Promise<[UnixSocket]>;
    const child = nodeChild('halfclose_child.mjs', [path, 'parent-first']);
    const [peer] = await accepted;
    sockets.push(peer);
    let got = '';
    peer.setEncoding('utf8');
    peer.on('data', (d: string) => (got += d));
    const ended = once(peer, 'end');
    await new Promise<void>((r) => peer.end('ping from parent', r));
    expect(peer.writableFinished).toBe(true);
    await ended;
    expect(got).toBe('reply after your end');
    expect(await child.next()).toEqual({ received: 'ping from parent' });
    expect((await child.exited).code).toBe(0);
  });
});

describe('worker threads', () => {
  // Node opens a few descriptors of its own the first time a worker starts;
  // one worker up front keeps them out of the accounting below.
  beforeAll(async () => {
    requireDist();
    const w = new Worker(join(fixtures, 'worker_echo.mjs'));
    await once(w, 'exit');
  });

  function start(script: string, workerData?: unknown) {
    const w = new Worker(join(fixtures, script), { workerData });
    // Listen for the end before anything else: 'exit' may follow the last
    // message within the same turn of the event loop.
    const exited = once(w, 'exit') as Promise<[number]>;
    const errors: Error[] = [];
    w.on('error', (e) => errors.push(e));
    const message = once(w, 'message') as Promise<[Record<string, unknown>]>;
    return { w, exited, errors, message };
  }

  it('a worker serves, echoes, closes everything and exits by itself', async () => {
    const before = openFds();
    const { exited, errors, message } = start('worker_echo.mjs');
    expect((await message)[0]).toEqual({ echoed: 8, connections: 0, warnings: 0 });
    expect((await exited)[0]).toBe(0);
    expect(errors).toEqual([]);
    await settled(before);
  });

  it.each(['exit', 'terminate'] as const)(
    'a worker that abandons open sockets (%s) does not take the process down, and its fds are closed',
    async (how) => {
      const before = openFds();
      const { w, exited, errors, message } = start('worker_abandon.mjs', { how, file: join(dir.path, `inflight-${how}`) });
      expect((await message)[0]).toEqual({ ready: true, open: 20 });
      if (how === 'terminate') await w.terminate();
      expect((await exited)[0]).toBe(how === 'exit' ? 0 : 1);
      expect(errors).toEqual([]);
      // Every socket of the worker, the fds queued in one of them, and the
      // file it opened for them: all closed, from this (main) thread's view.
      await settled(before);
      // This thread is still fine: a fresh socket pair works.
      const [a, b] = socketPair();
      sockets.push(a, b);
      const echoed = once(b, 'data') as Promise<[Buffer]>;
      a.write('still alive');
      expect((await echoed)[0].toString()).toBe('still alive');
    },
  );
});

describe('when a socket goes away', () => {
  it("destroy() fails the writes waiting behind a held one with ERR_STREAM_DESTROYED and runs every send()'s onSent", async () => {
    const [a, b] = socketPair();
    sockets.push(a, b);
    b.pauseReading(); // the kernel fills, then the queue holds write()'s callback
    a.on('error', () => {});
    const heard: string[] = [];
    const fd = openSync(join(dir.path, 'f'), 'w');
    a.write(Buffer.alloc(4 << 20), (err) => heard.push(`big ${(err as NodeJS.ErrnoException | null | undefined)?.code ?? 'ok'}`));
    a.send(Buffer.from('with an fd'), [fd], () => heard.push('onSent'));
    a.write(Buffer.from('tail'), (err) => heard.push(`tail ${(err as NodeJS.ErrnoException | null | undefined)?.code ?? 'ok'}`));
    await new Promise((r) => setImmediate(r));
    expect(heard).toEqual([]);
    a.destroy();
    await once(a, 'close');
    closeSync(fd);
    // The write in flight is not failed by a plain destroy() (net's is not
    // either), and the socket is not marked errored.
    expect(heard).toEqual(['big ok', 'onSent', 'tail ERR_STREAM_DESTROYED']);
    expect(a.errored).toBe(null);
  });

  it('connect(), socketPair() and createServer() refuse a bad option before making anything', async () => {
    server = createServer();
    await server.listen(join(dir.path, 'opt.sock'));
    const accepted: UnixSocket[] = [];
    server.on('connection', (s: UnixSocket) => accepted.push(s));
    const before = openFds();
    const bad = [{ highWaterMark: -1 }, { maxMessageSize: 0 }, { maxMessageSize: 2 ** 31 }, { sendBufferSize: 'big' }, { allowHalfOpen: 1 }];
    for (const options of bad as never[]) {
      const shown = JSON.stringify(options);
      await expect(connect(join(dir.path, 'opt.sock'), options), shown).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      expect(() => socketPair('stream', options), shown).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
      expect(() => createServer(options), shown).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    }
    for (const options of [{ timeout: Number.NaN }, { timeout: -1 }, { signal: {} }] as never[]) {
      await expect(connect(join(dir.path, 'opt.sock'), options), JSON.stringify(options)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    }
    expect(() => createServer({ backlog: -1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    // A signal already aborted: ABORT_ERR, as Node's own APIs say it (not a DOMException's code 20).
    await expect(connect(join(dir.path, 'opt.sock'), { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(() => createServer('x' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    // null is an option left out, as undefined is: mode too, on a path and on an abstract name.
    for (const address of [join(dir.path, 'null-mode.sock'), `@afunix-test-null-mode-${process.pid}`]) {
      const s = createServer({ mode: null as never });
      await s.listen(address);
      await s.close();
    }
    const pair = socketPair('stream', null);
    const client = await connect(join(dir.path, 'opt.sock'), null);
    await waitFor(() => accepted.length === 1, () => `${accepted.length} accepted`);
    await destroyAll([...pair, client, ...accepted]);
    await settled(before);
  });

  it("a destroyed socket's calls fail with ERR_SOCKET_CLOSED, never reaching the socket that reuses its fd number", async () => {
    const [a, b] = socketPair('seqpacket');
    sockets.push(b);
    a.destroy();
    await once(a, 'close');
    expect(a.fd).toBe(-1);
    // The lowest free fd number: most likely a's old one.
    const other = createServer();
    await other.listen(`@afunix-test-reuse-${process.pid}`);
    try {
      for (const call of [() => a.address(), () => a.remoteAddress, () => a.peerCredentials(), () => a.messageLimits(), () => a.peerPidfd()]) {
        expect(call).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' }));
      }
    } finally {
      await other.close();
    }
    expect(other.address()).toBe('');
    // A stream socket too: its messageLimits() (null while open) says it is closed.
    const [c, d] = socketPair('stream');
    sockets.push(d);
    expect(c.messageLimits()).toBeNull();
    c.destroy();
    expect(() => c.messageLimits()).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' }));
  });

  it('fromFd() and listenFd() refuse an fd a socket of this process owns with EEXIST, closeFd() with EBUSY, and the owner keeps it', async () => {
    const [a, b] = socketPair();
    sockets.push(a, b);
    expect(() => fromFd(a.fd)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(() => createServer().listenFd(b.fd)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    // (Closed under the socket, the number would be closed again when it closes, by then maybe another file's.)
    expect(() => closeFd(a.fd)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    const got = once(b, 'data') as Promise<[Buffer]>;
    a.write('still mine');
    expect((await got)[0].toString()).toBe('still mine');
  });

  it('fromFd() refuses a listening socket with EINVAL (its writes would fail later, ENOTCONN), and leaves it for listenFd()', async () => {
    // Node cannot hand us a listening fd it does not watch: python3 makes one.
    const [mine, theirs] = socketPairFds('stream');
    const path = join(dir.path, 'listening.sock');
    const script = [
      'import socket, sys',
      'l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
      'l.bind(sys.argv[1]); l.listen()',
      "socket.send_fds(socket.socket(fileno=3), [b'x'], [l.fileno()])",
    ].join('\n');
    const python = spawn('python3', ['-c', script, path], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
    closeFd(theirs);
    const carrier = fromFd(mine);
    sockets.push(carrier);
    const listening = await new Promise<number>((resolve) => carrier.setReceiver((_data, fds) => fds && resolve(fds.take()[0]!)));
    expect((await once(python, 'exit'))[0]).toBe(0);
    expect(() => fromFd(listening)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/listenFd/) }));
    server = createServer((s) => s.end('accepted'));
    server.listenFd(listening);
    const c = await connect(path);
    sockets.push(c);
    expect((await collect(c)).toString()).toBe('accepted');
  });

  it('fromFd() and listenFd() refuse what is no fd number (2 ** 32 + n would wrap onto n), and adopt nothing', () => {
    const [x, y] = socketPairFds('stream');
    try {
      for (const bad of [x + 2 ** 32, x + 0.5, -1]) {
        expect(() => fromFd(bad), String(bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
        expect(() => createServer().listenFd(bad), String(bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
      }
      // x is nobody's: it can still be adopted.
      sockets.push(fromFd(x));
    } finally {
      closeFd(y);
    }
  });

  it("socketPairFds() gives blocking fds: a program that is not Node reads its end as its stdio", async () => {
    const [mine, theirs] = socketPairFds('stream');
    const child = spawn('sh', ['-c', 'echo ready; cat <&3'], { stdio: ['ignore', 'pipe', 'pipe', theirs] });
    closeFd(theirs);
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d));
    const ready = new Promise<void>((resolve) =>
      child.stdout!.on('data', (d: Buffer) => {
        out += d;
        if (out.startsWith('ready\n')) resolve();
      }),
    );
    const exited = once(child, 'exit');
    await ready;
    await delay(100); // cat is reading by now: a non-blocking fd would fail it with EAGAIN
    const socket = fromFd(mine);
    sockets.push(socket);
    socket.end('through fd 3\n');
    const [code] = await exited;
    expect({ code, out, err }).toEqual({ code: 0, out: 'ready\nthrough fd 3\n', err: '' });
  });

  it('listenFd() on a server that listens, or was closed, is ERR_SERVER_ALREADY_LISTEN and takes nothing', async () => {
    const server = createServer();
    await server.listen(join(dir.path, 'once.sock'));
    const [x, y] = socketPairFds('stream');
    try {
      expect(() => server.listenFd(x)).toThrow(expect.objectContaining({ code: 'ERR_SERVER_ALREADY_LISTEN' }));
      await server.close();
      expect(() => server.listenFd(x)).toThrow(expect.objectContaining({ code: 'ERR_SERVER_ALREADY_LISTEN' }));
      expect(server.listening).toBe(false);
      // x is still nobody's: it can be adopted.
      sockets.push(fromFd(x));
    } finally {
      closeFd(y);
    }
  });

  it('listenFd() of a socket that does not listen (a connected one) is EINVAL and takes nothing', () => {
    const [x, y] = socketPairFds('stream');
    try {
      expect(() => createServer().listenFd(x)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('not a listening socket') }));
      // x is still nobody's, and still connected to y.
      const socket = fromFd(x);
      sockets.push(socket);
      expect(socket.remoteAddress).toBe('');
    } finally {
      closeFd(y);
    }
  });

  it('a listener that throws on the read carrying the end still sees the socket end and close', async () => {
    const child = nodeChild('throwing_reader.mjs');
    const seen = [];
    for (let i = 0; i < 4; i++) seen.push(await child.next());
    expect(seen).toEqual([
      { type: 'stream', how: 'data', ended: true, closed: true },
      { type: 'stream', how: 'receiver', ended: true, closed: true },
      { type: 'seqpacket', how: 'data', ended: true, closed: true },
      { type: 'seqpacket', how: 'receiver', ended: true, closed: true },
    ]);
    expect(await child.exited).toEqual({ code: 0, signal: null });
  });
});

describe('unref()', () => {
  it('writes still waiting for room hold the process until they have left, as net.Socket does', async () => {
    const path = join(dir.path, 'unref.sock');
    const size = 8 * 1024 * 1024;
    let received = 0;
    let ended!: () => void;
    const end = new Promise<void>((resolve) => (ended = resolve));
    let reading!: UnixSocket;
    server = createServer((s) => {
      reading = s;
      sockets.push(s);
      s.pause(); // (the child's queue fills: its writes wait for room)
      s.on('data', (d: Buffer) => (received += d.length));
      s.on('end', ended);
    });
    await server.listen(path);
    const child = nodeChild('unref_writer.mjs', [path, String(size), 'unref']);
    const said = await child.next<{ queued: number }>();
    expect(said.queued).toBeGreaterThan(0);
    // The child's main module has returned; only its socket's writes are left.
    await delay(300);
    expect(child.proc.exitCode).toBe(null);
    reading.resume();
    await end;
    expect(received).toBe(size);
    expect(await child.exited).toEqual({ code: 0, signal: null });
  });
});

