// fd passing (SCM_RIGHTS): which chunk fds come with on a stream, every kind
// of descriptor, the 253-fd limit, and ownership (unclaimed fds are closed,
// taken ones stay open).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, fstatSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type ConnectionType,
  closeFd,
  createServer,
  fromFd,
  MAX_FDS,
  type ReceivedFds,
  socketPair,
  socketPairFds,
  type UnixSocket,
} from '../src/index.js';
import { addedSince, destroyAll, fdTarget, fixtures, isOpen, openFds, pattern, tempDir, waitFor } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
const sockets: UnixSocket[] = [];
const opened: number[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  await destroyAll(sockets);
  for (const fd of opened.splice(0)) if (isOpen(fd)) closeSync(fd);
  dir.remove();
});

/** Closes fds the test owns and forgets them, so afterEach never closes a reused number. */
function release(fds: number[]): void {
  for (const fd of fds) {
    closeSync(fd);
    const i = opened.indexOf(fd);
    if (i >= 0) opened.splice(i, 1);
  }
}

function pair(type: ConnectionType): [UnixSocket, UnixSocket] {
  const p = socketPair(type);
  sockets.push(...p);
  return p;
}

/** A file holding `text`, opened for reading (closed after the test). */
function fileWith(name: string, text: string): number {
  const p = join(dir.path, name);
  writeFileSync(p, text);
  const fd = openSync(p, 'r');
  opened.push(fd);
  return fd;
}

function readAll(fd: number, position: number | null = 0): string {
  const buf = Buffer.alloc(4096);
  const n = readSync(fd, buf, 0, buf.length, position);
  return buf.toString('utf8', 0, n);
}

interface Got {
  data: Buffer;
  fds: number[];
}

/** Takes every chunk with its fds (taken, so the test owns and closes them). */
function receiveAll(sock: UnixSocket, out: Got[]): void {
  sock.setReceiver((data, fds) => {
    const taken = fds ? fds.take() : [];
    opened.push(...taken);
    out.push({ data: Buffer.from(data), fds: taken });
  });
}

describe('fds over a stream socket', () => {
  it('a receiver whose fd table is full fails with ERR_SOCKET_CTRUNC, and the bytes that lost their fds are not delivered', async () => {
    // (They were: a framing layer reading them blamed the peer, "fds out of place".)
    const path = join(dir.path, 'ctrunc.sock');
    const file = fileWith('given.txt', 'given');
    const server = createServer((socket) => {
      sockets.push(socket);
      socket.on('error', () => {});
      for (let i = 0; i < 200; i++) socket.send(Buffer.from('x'), [file]);
    });
    await server.listen(path);
    try {
      const child = spawn('prlimit', ['--nofile=48', process.execPath, join(fixtures, 'ctrunc_child.mjs'), path], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => void (out += d));
      const [status] = await once(child, 'exit');
      const report = JSON.parse(out) as { code: string; kept: number; bytes: number };
      expect({ status, code: report.code }).toEqual({ status: 0, code: 'ERR_SOCKET_CTRUNC' });
      expect(report.kept).toBeGreaterThan(0);
      expect(report.bytes).toBe(report.kept);
    } finally {
      await server.close();
    }
  });

  it('in lockstep, fds arrive with exactly the bytes they were sent with', async () => {
    const [a, b] = pair('stream');
    let chunks: Got[] = [];
    let bytes = 0;
    let wanted = 0;
    let wake = () => {};
    b.setReceiver((data, fds) => {
      const taken = fds ? fds.take() : [];
      opened.push(...taken);
      chunks.push({ data: Buffer.from(data), fds: taken });
      bytes += data.length;
      if (bytes >= wanted) wake();
    });
    for (let i = 0; i < 30; i++) {
      const body = pattern(1 + ((i * 997) % 5000), i);
      const withFds = i % 3 !== 2;
      chunks = [];
      bytes = 0;
      wanted = body.length;
      const arrived = new Promise<void>((r) => (wake = r));
      if (withFds) a.send(body, [fileWith(`l${i}`, `file ${i}`)]);
      else a.write(body);
      await arrived;
      // Nothing else was in flight, so the fds come with the first chunk of
      // exactly these bytes (the kernel may still split them, never glue).
      expect(Buffer.concat(chunks.map((c) => c.data)).equals(body), `bytes of message ${i}`).toBe(true);
      expect(chunks[0]!.fds.map((fd) => readAll(fd)), `fds of message ${i}`).toEqual(withFds ? [`file ${i}`] : []);
      expect(chunks.slice(1).every((c) => c.fds.length === 0)).toBe(true);
    }
  });

  it('a chunk with fds never swallows the bytes written before them into a different chunk', async () => {
    // Written before the receiver reads anything: the fd message first, then
    // plain bytes. The fds must come with the chunk that starts at their first byte.
    const [a, b] = pair('stream');
    a.send(Buffer.from('with-fd|'), [fileWith('w', 'the fd')]);
    await new Promise((r) => setImmediate(r));
    a.write('plain bytes after it');
    a.end();
    const got: Got[] = [];
    receiveAll(b, got);
    await once(b, 'end');
    expect(got[0]!.data.subarray(0, 8).toString()).toBe('with-fd|');
    expect(got[0]!.fds.map((fd) => readAll(fd))).toEqual(['the fd']);
    expect(got.slice(1).every((g) => g.fds.length === 0)).toBe(true);
    expect(Buffer.concat(got.map((g) => g.data)).toString()).toBe('with-fd|plain bytes after it');
  });

  it('in a burst, each set of fds arrives in order with the chunk holding its first byte', async () => {
    // The kernel may glue bytes written earlier in front of an fd-carrying
    // write into one read (it never glues across two fd writes, and never
    // moves fds past their first byte), so that is the guarantee to check.
    const [a, b] = pair('stream');
    const sends: Array<{ offset: number; length: number; tag: string | null }> = [];
    let offset = 0;
    for (let i = 0; i < 300; i++) {
      const body = pattern(1 + ((i * 7919) % 3000), 5000 + i);
      const tag = i % 4 === 0 ? null : `burst ${i}`;
      if (tag) a.send(body, [fileWith(`b${i}`, tag)]);
      else a.write(body);
      sends.push({ offset, length: body.length, tag });
      offset += body.length;
      if (i % 10 === 0) await new Promise((r) => setImmediate(r));
    }
    a.end();
    const got: Got[] = [];
    receiveAll(b, got);
    await once(b, 'end');
    expect(Buffer.concat(got.map((g) => g.data)).length).toBe(offset);
    // Where each received chunk starts in the byte stream.
    const starts: number[] = [];
    let at = 0;
    for (const g of got) {
      starts.push(at);
      at += g.data.length;
    }
    const tagged = sends.filter((s) => s.tag !== null);
    const arrivals = got.flatMap((g, i) => g.fds.map((fd) => ({ chunk: i, tag: readAll(fd) })));
    expect(arrivals.map((x) => x.tag)).toEqual(tagged.map((s) => s.tag));
    arrivals.forEach((x, k) => {
      const first = tagged[k]!.offset;
      const c = x.chunk;
      expect(first >= starts[c]! && first < starts[c]! + got[c]!.data.length, `${x.tag} arrived with its first byte`).toBe(true);
    });
  });
});

describe('fds in batches', () => {
  it('hundreds of small sends with fds in one tick each arrive with their own first byte', async () => {
    // Small fd-carrying writes leave many to a sendmmsg, and a receiver that
    // saw fds reads many to a recvmmsg: each still a message of its own.
    const [a, b] = pair('stream');
    const bodies: Buffer[] = [];
    for (let i = 0; i < 400; i++) {
      const body = pattern(1 + ((i * 131) % 1024), 9000 + i);
      a.send(body, [fileWith(`s${i}`, `small ${i}`)]);
      bodies.push(body);
    }
    a.end();
    const got: Got[] = [];
    receiveAll(b, got);
    await once(b, 'end');
    expect(Buffer.concat(got.map((g) => g.data)).equals(Buffer.concat(bodies))).toBe(true);
    let at = 0;
    const firstBytes = bodies.map((body) => ((at += body.length), at - body.length));
    let start = 0;
    const arrivals: Array<{ tag: string; start: number; end: number }> = [];
    for (const g of got) {
      for (const fd of g.fds) arrivals.push({ tag: readAll(fd), start, end: start + g.data.length });
      start += g.data.length;
    }
    expect(arrivals.map((x) => x.tag)).toEqual(bodies.map((_, i) => `small ${i}`));
    arrivals.forEach((x, i) => expect(firstBytes[i]! >= x.start && firstBytes[i]! < x.end, x.tag).toBe(true));
  });
});

// An fd number that is open nowhere in this process: the kernel answers EBADF.
const NOT_OPEN = 999_999;

describe('fds the kernel refuses', () => {
  for (const type of ['stream', 'seqpacket'] as const) {
    it(`${type}: a send whose fd is not open fails alone through onSent, and the sends around it arrive intact`, async () => {
      const [a, b] = pair(type);
      const got: Got[] = [];
      receiveAll(b, got);
      const refused: Array<Error & { code?: string; syscall?: string }> = [];
      const sent: string[] = [];
      // In one tick: the three leave together (a sendmmsg), the bad one in the middle.
      a.send(Buffer.from('before'), [fileWith('before', 'before fd')], (err) => (err ? refused.push(err) : sent.push('before')));
      a.send([Buffer.from('bad '), Buffer.from('one')], [NOT_OPEN], (err) => (err ? refused.push(err) : sent.push('bad')));
      a.send(Buffer.from('after'), [fileWith('after', 'after fd')], (err) => (err ? refused.push(err) : sent.push('after')));
      a.send(Buffer.from('plain'));
      const text = () => Buffer.concat(got.map((g) => g.data)).toString();
      await waitFor(() => text().length >= 'beforeafterplain'.length, () => `received ${JSON.stringify(text())}`);
      expect(refused.map((e) => [e.code, e.syscall])).toEqual([['EBADF', 'sendmsg']]);
      expect(sent).toEqual(['before', 'after']);
      expect(text()).toBe('beforeafterplain');
      expect(got.flatMap((g) => g.fds.map((fd) => readAll(fd)))).toEqual(['before fd', 'after fd']);
      expect(a.destroyed).toBe(false);
      // And the socket goes on.
      a.send(Buffer.from('!'));
      await waitFor(() => text().endsWith('!'), () => `received ${JSON.stringify(text())}`);
    });
  }

  it('a send held behind the Writable (corked) is refused whole, pieces and all', async () => {
    const [a, b] = pair('stream');
    const got: Got[] = [];
    receiveAll(b, got);
    let refused: (Error & { code?: string }) | undefined;
    a.cork();
    a.write('first ');
    a.send([Buffer.from('bad '), Buffer.from('pieces '), Buffer.alloc(20_000, 0x78)], [NOT_OPEN], (err) => (refused = err));
    a.write('last');
    a.uncork();
    const text = () => Buffer.concat(got.map((g) => g.data)).toString();
    await waitFor(() => text().endsWith('last'), () => `received ${JSON.stringify(text())}`);
    expect(refused?.code).toBe('EBADF');
    expect(text()).toBe('first last');
    expect(a.destroyed).toBe(false);
  });

  it('a send with fds waiting in the Writable counts every byte of it', async () => {
    // It waits there as one chunk (so that a refusal takes all of it back),
    // and writableLength, the Writable's high-water mark among them, sees
    // all of its bytes, not only one piece's.
    const [a, b] = pair('stream');
    const got: Got[] = [];
    receiveAll(b, got);
    a.cork();
    const before = a.writableLength;
    const pieces = Array.from({ length: 10 }, (_, i) => Buffer.alloc(10_000, 0x30 + i));
    a.send(pieces, [fileWith('counted', 'counted fd')]);
    expect(a.writableLength - before).toBe(100_000);
    a.uncork();
    await waitFor(() => got.reduce((n, g) => n + g.data.length, 0) === 100_000, () => `${got.length} chunks`);
    expect(Buffer.concat(got.map((g) => g.data)).equals(Buffer.concat(pieces))).toBe(true);
    expect(got.flatMap((g) => g.fds.map((fd) => readAll(fd)))).toEqual(['counted fd']);
  });

  it('without an onSent to hear it, the socket fails with EBADF rather than lose the send unnoticed', async () => {
    const [a] = pair('stream');
    a.send(Buffer.from('bad'), [NOT_OPEN]);
    const [err] = (await once(a, 'error')) as [Error & { code?: string }];
    expect(err.code).toBe('EBADF');
    expect(a.destroyed).toBe(true);
  });
});

describe('fds over seqpacket and limits', () => {
  it('carries 253 fds in one message, on stream and on seqpacket', async () => {
    expect(MAX_FDS).toBe(253);
    const src = fileWith('many', 'many copies');
    const ino = fstatSync(src).ino;
    const many = Array.from({ length: MAX_FDS }, () => {
      const fd = openSync(join(dir.path, 'many'), 'r');
      opened.push(fd);
      return fd;
    });
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b] = pair(type);
      const got: Got[] = [];
      const arrived = new Promise<void>((resolve) => {
        b.setReceiver((data, fds) => {
          got.push({ data: Buffer.from(data), fds: fds ? fds.take() : [] });
          opened.push(...got[got.length - 1]!.fds);
          resolve();
        });
      });
      a.send(Buffer.from('M'), many);
      await arrived;
      expect(got[0]!.fds.length, type).toBe(253);
      expect(new Set(got[0]!.fds).size).toBe(253);
      expect(got[0]!.fds.every((fd) => fstatSync(fd).ino === ino)).toBe(true);
      release(got[0]!.fds);
    }
  });

  it('refuses 254 fds with ERR_INVALID_ARG_VALUE, and sends nothing', async () => {
    const [a, b] = pair('seqpacket');
    const fd = fileWith('x', 'x');
    const tooMany = new Array<number>(MAX_FDS + 1).fill(fd);
    let err: (Error & { code?: string }) | undefined;
    try {
      a.send(Buffer.from('too many'), tooMany);
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe('ERR_INVALID_ARG_VALUE');
    expect(err?.message).toMatch(/254 fds.*253/);
    const first = once(b, 'data') as Promise<[Buffer]>;
    a.write('the next message');
    expect((await first)[0].toString()).toBe('the next message');
  });

  it('refuses fd numbers the kernel could not hold (2 ** 32 + n would wrap onto n), and sends nothing', async () => {
    const [a, b] = pair('seqpacket');
    const fd = fileWith('w', 'wrapped');
    expect(() => a.send(Buffer.from('x'), [fd + 2 ** 32])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    const got = once(b, 'data') as Promise<[Buffer]>;
    a.send(Buffer.from('after'));
    expect((await got)[0].toString()).toBe('after');
  });

  it('passes any kind of fd: regular file, pipe, socket, memfd', async () => {
    // Node can make neither a pipe nor a memfd, so a python3 child makes
    // them and hands them over first (that hop is over our stream socket too).
    const [mine, theirs] = socketPairFds('stream');
    const factory = spawn('python3', [join(fixtures, 'fd_factory.py')], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
    closeSync(theirs);
    const fromPython = fromFd(mine);
    sockets.push(fromPython);
    const made: Got[] = [];
    receiveAll(fromPython, made);
    await once(fromPython, 'end');
    expect((await once(factory, 'exit'))[0]).toBe(0);
    const [pipeFd, memfd] = made[0]!.fds;

    const file = fileWith('regular', 'through a regular file');
    const [sockA, sockB] = socketPair('stream');
    sockets.push(sockA, sockB);
    const sockBData = once(sockB, 'data') as Promise<[Buffer]>;
    const kinds = { file, pipe: pipeFd!, socket: sockA.fd, memfd: memfd! };
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b] = pair(type);
      const got: Got[] = [];
      const arrived = new Promise<void>((resolve) => {
        b.setReceiver((data, fds) => {
          got.push({ data: Buffer.from(data), fds: fds!.take() });
          opened.push(...got[0]!.fds);
          resolve();
        });
      });
      a.send(Buffer.from(type), Object.values(kinds));
      await arrived;
      const [f, p, s, m] = got[0]!.fds as [number, number, number, number];
      expect(fdTarget(f)).toBe(join(dir.path, 'regular'));
      expect(fdTarget(p)).toMatch(/^pipe:\[\d+\]$/);
      expect(fdTarget(s)).toMatch(/^socket:\[\d+\]$/);
      expect(fdTarget(m)).toMatch(/^\/memfd:afunix-test/);
      expect(readAll(f)).toBe('through a regular file');
      expect(readAll(m)).toBe('through a memfd');
      if (type === 'stream') {
        // The pipe has its data once (a pipe is consumed by reading).
        expect(readAll(p, null)).toBe('through an anonymous pipe');
        writeSync(s, 'through a socket');
      }
    }
    expect((await sockBData)[0].toString()).toBe('through a socket');
    sockA.destroy();
  });
});

describe('ownership of received fds', () => {
  it('closes every fd that nobody took, whether or not an fds listener looked', async () => {
    const [a, b] = pair('seqpacket');
    const fd = fileWith('o', 'owned');
    const before = openFds();
    let count = 0;
    let seen = 0;
    b.on('fds', (fds: ReceivedFds) => (seen += fds.length)); // looks, takes nothing
    const done = new Promise<void>((resolve) => {
      b.on('data', () => {
        if (++count === 200) setImmediate(resolve); // after the last delivery's close
      });
    });
    for (let i = 0; i < 200; i++) a.send(Buffer.from(`m${i}`), [fd, fd, fd]);
    await done;
    expect(seen).toBe(600);
    await waitFor(() => addedSince(before).length === 0, () => `still open: ${addedSince(before).join(', ')}`);
    expect(addedSince(before)).toEqual([]);
  });

  it('closeFd closes a descriptor, ignores one not open, and refuses what is not an fd number', () => {
    const [x, y] = socketPairFds('stream');
    // (The addon reads an Int32: x + 0.5 and x + 2 ** 32 would close x.)
    for (const bad of [x + 0.5, x + 2 ** 32, -1, Number.NaN, '3' as unknown as number]) {
      expect(() => closeFd(bad), String(bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    }
    expect(isOpen(x)).toBe(true);
    closeFd(x);
    closeFd(y);
    expect([isOpen(x), isOpen(y)]).toEqual([false, false]);
    expect(() => closeFd(x)).not.toThrow(); // closed already: no error
  });

  it('fds taken in an fds listener stay open and readable after the event', async () => {
    const [a, b] = pair('stream');
    const kept: number[] = [];
    const got = new Promise<void>((resolve) => {
      b.on('fds', (fds: ReceivedFds, data: Buffer) => {
        expect(data.toString()).toBe('take these');
        kept.push(...fds.take());
        opened.push(...kept);
        expect(fds.length).toBe(0);
        resolve();
      });
    });
    b.resume();
    a.send(Buffer.from('take these'), [fileWith('t1', 'first taken'), fileWith('t2', 'second taken')]);
    await got;
    // A later turn of the event loop: the delivery is long over.
    await new Promise((r) => setTimeout(r, 1));
    expect(kept.map((fd) => readAll(fd))).toEqual(['first taken', 'second taken']);
  });
});
