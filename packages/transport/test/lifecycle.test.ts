// Resources over a lifetime: no fd survives 10,000 connections and 10,000
// fd passes; a socket pair crosses into a child process (fromFd); worker
// threads that close cleanly or abandon their sockets; half-close in both
// directions between two processes.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect, createServer, fromFd, socketPair, socketPairFds, type UnixServer, type UnixSocket } from '../src/index.js';
import { addedSince, destroyAll, fixtures, nodeChild, openFds, pattern, requireDist, tempDir, waitFor } from './helpers.js';

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
    expect(await child.next()).toEqual({ received: 'pong after your end', writableEnded: true });
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
    expect(await child.next()).toEqual({ received: 'ping from parent', wroteAfterPeerEnded: true });
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
