import { createHook } from 'node:async_hooks';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connect, createServer, socketPair, type UnixServer, type UnixSocket } from '../src/index.js';
import { pattern, waitFor } from './helpers.js';

let dir: string;
let server: UnixServer | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'afunix-'));
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  rmSync(dir, { recursive: true, force: true });
});

function collect(sock: UnixSocket): Promise<Buffer> {
  const parts: Buffer[] = [];
  sock.on('data', (d: Buffer) => parts.push(d));
  return once(sock, 'end').then(() => Buffer.concat(parts));
}

describe('stream sockets', () => {
  it('echoes bytes through a server', async () => {
    server = createServer((s) => s.pipe(s));
    await server.listen(join(dir, 's.sock'));
    const c = await connect(join(dir, 's.sock'));
    const got = collect(c);
    c.end('hello world');
    expect((await got).toString()).toBe('hello world');
  });

  it('half-closes: end() shuts our side, the other direction stays open', async () => {
    const [a, b] = socketPair();
    const closed = Promise.all([once(a, 'close'), once(b, 'close')]);
    const fromA = collect(b);
    a.end('ping');
    expect((await fromA).toString()).toBe('ping');
    // b can still talk to a after a has ended its side.
    const fromB = collect(a);
    b.end('pong');
    expect((await fromB).toString()).toBe('pong');
    await closed;
  });

  it('applies backpressure: write() returns false, drain comes only once the peer reads', async () => {
    const [a, b] = socketPair('stream', { highWaterMark: 16 * 1024 });
    const chunk = Buffer.alloc(64 * 1024, 7);
    let sent = 0;
    // Nobody reads b, so the kernel buffers fill and the writer must be told.
    for (let i = 0; i < 200; i++) {
      sent += chunk.length;
      if (!a.write(chunk)) {
        const drained = await Promise.race([once(a, 'drain').then(() => true), delay(50).then(() => false)]);
        if (!drained) break;
      }
    }
    expect(sent).toBeLessThan(200 * chunk.length);
    expect(a.writableLength).toBeGreaterThan(0);
    let received = 0;
    b.on('data', (d: Buffer) => (received += d.length));
    await once(a, 'drain');
    const finished = once(b, 'end');
    a.end();
    await finished;
    expect(received).toBe(sent);
    a.destroy();
    b.destroy();
  });

  it('keeps order when large writes (sent at once) and small ones (queued for the tick) mix, also past a full kernel buffer', async () => {
    const [a, b] = socketPair('stream', { sendBufferSize: 32 * 1024 });
    const pieces: Buffer[] = [];
    for (let i = 0; i < 40; i++) pieces.push(pattern(i % 3 === 1 ? 70_000 + i : 10 + i, i));
    const expected = Buffer.concat(pieces);
    const got = collect(b);
    // Written in two ticks: in each, a large chunk may go straight to the
    // kernel only while nothing written before it is still queued.
    for (const p of pieces.slice(0, 20)) a.write(p);
    await new Promise((r) => setImmediate(r));
    for (const p of pieces.slice(20)) a.write(p);
    a.end();
    const data = await got;
    expect(data.length).toBe(expected.length);
    expect(data.equals(expected)).toBe(true);
    expect(a.bytesWritten).toBe(expected.length);
    a.destroy();
    b.destroy();
  });

  it("what a 'connection' listener or a receiver writes leaves as it returns, before any tick, and schedules none", async () => {
    // Counts the ticks scheduled while `run` runs (process.nextTick makes a TickObject).
    let ticks = 0;
    const hook = createHook({ init: (_id, type) => void (type === 'TickObject' && ticks++) });
    const ticksDuring = (run: () => void): number => {
      ticks = 0;
      hook.enable();
      try {
        run();
      } finally {
        hook.disable();
      }
      return ticks;
    };
    const seen: Array<{ ticks: number; writtenByFirstTick: Promise<number> }> = [];
    const writeTwice = (s: UnixSocket, a: string, b: string): void => {
      // A tick queued before the writes: it finds them gone already.
      const writtenByFirstTick = new Promise<number>((resolve) => process.nextTick(() => resolve(s.bytesWritten)));
      seen.push({ ticks: ticksDuring(() => (s.write(a), s.write(b))), writtenByFirstTick });
    };
    server = createServer((s) => {
      writeTwice(s, 'hello ', 'there;');
      s.setReceiver(function (data) {
        writeTwice(this, ' got ', data.toString());
        this.end();
      });
    });
    await server.listen(join(dir, 'b.sock'));
    const c = await connect(join(dir, 'b.sock'));
    const got = collect(c);
    c.end('ping');
    expect((await got).toString()).toBe('hello there; got ping');
    expect(seen.map((s) => s.ticks)).toEqual([0, 0]);
    expect(await Promise.all(seen.map((s) => s.writtenByFirstTick))).toEqual([12, 21]);
  });

  it('a write made in a send() callback while the queue is being written goes out once, in order', async () => {
    // onSent runs while the queue is written; what it writes (enough to
    // trigger an early flush) must not send the entry being written again.
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b] = socketPair(type);
      const fd = openSync(join(dir, 'f'), 'w');
      const first = pattern(2000, 1);
      const second = pattern(5000, 2);
      const received: Buffer[] = [];
      let total = 0;
      const enough = new Promise<void>((resolve) => {
        b.setReceiver((data, fds) => {
          fds?.close();
          received.push(Buffer.from(data));
          total += data.length;
          if (total >= first.length + second.length) setTimeout(resolve, 20); // and anything extra
        });
      });
      a.send(first, [fd], () => a.write(second));
      await enough;
      closeSync(fd);
      const all = Buffer.concat(received);
      expect(all.length, type).toBe(first.length + second.length);
      expect(all.equals(Buffer.concat([first, second])), type).toBe(true);
      if (type === 'seqpacket') expect(received.map((m) => m.length)).toEqual([2000, 5000]);
      a.destroy();
      b.destroy();
    }
  });

  it('works with pipeline() end to end, 8 MiB intact', async () => {
    const [a, b] = socketPair();
    const data = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    const parts: Buffer[] = [];
    const sink = new Writable({
      write(chunk, _e, cb) {
        parts.push(chunk);
        cb();
      },
    });
    await Promise.all([
      pipeline(Readable.from([data.subarray(0, 3_000_001), data.subarray(3_000_001)]), a),
      pipeline(b, sink),
    ]);
    expect(Buffer.concat(parts).equals(data)).toBe(true);
  });

  it('setReceiver() after a read: what the Readable held comes first, on the next tick (stream and seqpacket)', async () => {
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b] = socketPair(type);
      a.write('HELLO');
      a.write('rest');
      // (readableLength counts bytes on a stream, messages on seqpacket.)
      while (b.readableLength < (type === 'stream' ? 9 : 2)) await once(b, 'readable');
      const greeting = String(type === 'stream' ? b.read(5) : b.read());
      const got: string[] = [];
      b.setReceiver((d) => got.push(d.toString()));
      expect(got, type).toEqual([]);
      const ended = once(b, 'end');
      a.end('|second');
      await ended;
      expect({ greeting, after: got.join('') }, type).toEqual({ greeting: 'HELLO', after: 'rest|second' });
      a.destroy();
      b.destroy();
    }
  });

  it('small reads are views of a shared pool (as Buffer.allocUnsafe): each keeps its bytes, the pool cannot be transferred away', async () => {
    const [a, b] = socketPair();
    const got: Buffer[] = [];
    // One message in flight at a time, so each is a read of its own: 300 x 100
    // bytes run through several 8 KiB pools.
    for (let i = 0; i < 300; i++) {
      const next = once(b, 'data') as Promise<[Buffer]>;
      a.write(Buffer.alloc(100, i & 0xff));
      got.push((await next)[0]);
    }
    const { port1, port2 } = new MessageChannel();
    // The first and the last: the environment's first pool is copied out
    // (into Node's own pool), later ones are views of ours.
    for (const read of [got[0]!, got[299]!]) {
      try {
        // Ignored (Node 20) or refused (later): either way the memory stays.
        port1.postMessage(read.buffer, [read.buffer as ArrayBuffer]);
      } catch {}
    }
    port1.close();
    port2.close();
    got.forEach((d, i) => {
      expect(Buffer.isBuffer(d)).toBe(true);
      expect(d.equals(Buffer.alloc(100, i & 0xff))).toBe(true);
    });
    a.destroy();
    b.destroy();
  });
});

describe('send() straight to the queue', () => {
  it('calls every onSent, with fds or without, on stream and seqpacket', async () => {
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b] = socketPair(type);
      const fd = openSync(join(dir, 'f'), 'w');
      b.setReceiver((_data, fds) => fds?.close());
      const heard: string[] = [];
      a.send(Buffer.from('one'), null, () => heard.push('one'));
      a.send(Buffer.from('two'), [], () => heard.push('two'));
      a.send(Buffer.from('three'), [fd], () => heard.push('three'));
      a.send([Buffer.from('fo'), Buffer.from('ur')], null, () => heard.push('four'));
      await delay(50);
      closeSync(fd);
      expect(heard, type).toEqual(['one', 'two', 'three', 'four']);
      a.destroy();
      b.destroy();
    }
  });

  it("counts what it queued in writableLength, returns false at the mark, and 'drain' follows once the peer reads", async () => {
    const [a, b] = socketPair('stream', { highWaterMark: 16 * 1024, sendBufferSize: 16 * 1024 });
    const sent: Buffer[] = [];
    // Nobody reads b: the kernel fills, then the queue.
    let ok = true;
    for (let i = 0; ok && i < 1000; i++) {
      const piece = pattern(3000, i);
      sent.push(piece);
      ok = a.send(piece);
    }
    expect(ok).toBe(false);
    expect(a.writableNeedDrain).toBe(true);
    expect(a.writableLength).toBeGreaterThanOrEqual(16 * 1024);
    const drained = once(a, 'drain');
    const got = collect(b);
    await drained;
    expect(a.writableNeedDrain).toBe(false);
    a.end();
    expect((await got).equals(Buffer.concat(sent))).toBe(true);
    expect(a.writableLength).toBe(0);
    a.destroy();
    b.destroy();
  });

  it('keeps its place among write()s: corked, behind a held write, and past a full kernel buffer', async () => {
    const [a, b] = socketPair('stream', { highWaterMark: 8 * 1024, sendBufferSize: 8 * 1024 });
    const expected: Buffer[] = [];
    const write = (p: Buffer): void => void (a.write(p), expected.push(p));
    const send = (p: Buffer): void => void (a.send(p), expected.push(p));
    let n = 0;
    a.cork();
    write(pattern(100, n++));
    send(pattern(200, n++)); // corked: it waits behind the write
    a.uncork();
    // Fill the kernel and the queue until write() holds its callback; what
    // send() adds meanwhile goes behind it, through the Writable.
    for (let i = 0; i < 40; i++) {
      write(pattern(20_000 + i, n++));
      send(pattern(10 + i, n++));
      send(pattern(50_000 + i, n++));
    }
    const got = collect(b);
    a.end();
    const data = await got;
    const all = Buffer.concat(expected);
    expect(data.length).toBe(all.length);
    expect(data.equals(all)).toBe(true);
    expect(a.bytesWritten).toBe(all.length);
    a.destroy();
    b.destroy();
  });

  it('takes more pieces than one sendmsg can (IOV_MAX), on stream and seqpacket', async () => {
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b] = socketPair(type);
      const received: Buffer[] = [];
      b.setReceiver((data) => void received.push(Buffer.from(data)));
      const small = Array.from({ length: 2000 }, (_, i) => Buffer.from([i & 0xff]));
      const large = Array.from({ length: 2000 }, (_, i) => pattern(16, i)); // 32 KB: a send that leaves at once
      a.send(small);
      a.send(large);
      const expected = type === 'stream' ? [Buffer.concat([...small, ...large])] : [Buffer.concat(small), Buffer.concat(large)];
      await waitFor(
        () => Buffer.concat(received).length === 2000 + 32_000,
        () => `${type}: ${Buffer.concat(received).length} bytes`,
        5000,
      );
      expect(a.destroyed, type).toBe(false);
      if (type === 'stream') expect(Buffer.concat(received).equals(expected[0]!)).toBe(true);
      else expect(received).toEqual(expected);
      a.destroy();
      b.destroy();
    }
  });

  it("with a high-water mark of 0, every write and send leaves and 'drain' comes once for each full episode", async () => {
    const [a, b] = socketPair('stream', { highWaterMark: 0 });
    const got = collect(b);
    let drains = 0;
    a.on('drain', () => drains++);
    // The send() fills the queue (its 'drain' is owed), then the write()
    // is held back by the Writable (which owes one too): one 'drain' comes.
    expect(a.send(Buffer.from('one'))).toBe(false);
    expect(a.write('two')).toBe(false);
    await once(a, 'drain');
    await new Promise((r) => setImmediate(r));
    expect(drains).toBe(1);
    a.end();
    expect((await got).toString()).toBe('onetwo');
    a.destroy();
    b.destroy();
  });

  it('refuses data that is not bytes with ERR_INVALID_ARG_VALUE, and sends nothing', async () => {
    const [a, b] = socketPair();
    for (const bad of ['text', 42, null, [Buffer.from('x'), 'y']]) {
      expect(() => a.send(bad as unknown as Uint8Array)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' }));
    }
    // fds that are no list (0 would have been sent as none), an onSent that is no function.
    for (const fds of [0, 5, '12', { fd: 0 }, new Set([0])]) {
      expect(() => a.send(Buffer.from('x'), fds as never), String(fds)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    }
    expect(() => a.send(Buffer.from('x'), null, 'done' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => b.setReceiver('x' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    const got = collect(b);
    a.end('ok');
    expect((await got).toString()).toBe('ok');
    a.destroy();
    b.destroy();
  });

  it('after end() fails as write() does, with ERR_STREAM_WRITE_AFTER_END', async () => {
    const [a, b] = socketPair();
    b.resume();
    a.end();
    const failed = once(a, 'error') as Promise<[NodeJS.ErrnoException]>;
    a.send(Buffer.from('late'));
    const [err] = await failed;
    expect(err.code).toBe('ERR_STREAM_WRITE_AFTER_END');
    a.destroy();
    b.destroy();
  });
});

describe('a write that fails', () => {
  it('calls back in any case: with the error for a large one, sent at once (it never called back), as net does', async () => {
    for (const size of [100, 64 * 1024]) {
      const [a, b] = socketPair();
      b.destroy();
      await once(b, 'close');
      const failed = once(a, 'error');
      const heard = new Promise<Error | null | undefined>((resolve) => a.write(Buffer.alloc(size), resolve));
      // A small write is queued, and its callback says so before the
      // sendmsg fails; the failure is the socket's 'error'.
      if (size >= 64 * 1024) expect((await heard)?.message, `${size} bytes`).toMatch(/EPIPE/);
      else await heard;
      expect(((await failed)[0] as Error & { code?: string }).code).toBe('EPIPE');
    }
  });
});
