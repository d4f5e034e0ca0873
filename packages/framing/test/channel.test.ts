// FramedChannel over real sockets in one process: socketpairs for the
// native stream and seqpacket paths, a raw UnixSocket as a misbehaving
// peer, and plain Duplexes for the portable path.
import { createHook } from 'node:async_hooks';
import { type EventEmitter, once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { type ReceivedFds, type UnixSocket, socketPair } from '@afunix/transport';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FrameDecoder, FramedChannel, HEADER_SIZE, encodeHeader } from '../src/index.js';
import { addedSince, openFds } from '../../transport/test/helpers.js';
import { codeOf, frameBytes, rawHeader } from './helpers.js';

let dir: string;
let file: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'afunix-framing-'));
  file = join(dir, 'content.txt');
  writeFileSync(file, 'the file behind the fd');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Everything a test opened, destroyed and waited for, so that the next
// test's fd census starts from a settled table.
const open: Array<Closable | FramedChannel> = [];
afterEach(async () => {
  await settle(...open.splice(0));
});

const MiB = 1024 * 1024;

function pair(type: 'stream' | 'seqpacket' = 'stream', limits = {}): [FramedChannel, FramedChannel] {
  const [a, b] = socketPair(type, { maxMessageSize: 2 * MiB, sendBufferSize: 4 * MiB });
  const channels: [FramedChannel, FramedChannel] = [new FramedChannel(a, limits), new FramedChannel(b, limits)];
  open.push(...channels);
  return channels;
}

/** A FramedChannel facing a raw socket the test drives byte by byte. */
function rawPeer(type: 'stream' | 'seqpacket' = 'stream', limits = {}): { raw: UnixSocket; channel: FramedChannel } {
  const [raw, b] = socketPair(type);
  const channel = new FramedChannel(b, limits);
  open.push(raw, channel);
  return { raw, channel };
}

function readFd(fd: number): string {
  const buf = Buffer.alloc(100);
  const n = readSync(fd, buf, 0, buf.length, 0);
  return buf.subarray(0, n).toString();
}

type Closable = { destroy(): void; closed: boolean; once(e: 'close', f: () => void): unknown };

// events.once() rejects on 'error'; waiting for 'close' must not. A
// channel is closed from the moment it is destroyed; its fd goes with its
// transport, so that is what to wait for.
function closed(thing: Closable | FramedChannel): Promise<void> {
  const emitter: Closable = thing instanceof FramedChannel ? (thing.transport as Closable) : thing;
  return emitter.closed ? Promise.resolve() : new Promise((resolve) => emitter.once('close', () => resolve()));
}

/** Destroys everything given and waits until each has closed. */
async function settle(...things: Array<Closable | FramedChannel>): Promise<void> {
  const all = things.map((t) => closed(t));
  for (const t of things) t.destroy();
  await Promise.all(all);
}

function nextError(channel: FramedChannel): Promise<Error & { code?: string }> {
  return once(channel, 'error').then(([err]) => err as Error & { code?: string });
}

for (const type of ['stream', 'seqpacket'] as const) {
  describe(`over ${type}`, () => {
    it('delivers frames whole, in order, with their fds', async () => {
      const [a, b] = pair(type);
      const got: Array<[string, string[]]> = [];
      b.onFrame = (payload, fds) => {
        const contents = fds ? fds.take().map((fd) => {
          const text = readFd(fd);
          closeSync(fd);
          return text;
        }) : [];
        got.push([payload.length > 20 ? `${payload.length} bytes` : payload.toString(), contents]);
      };
      const fd = openSync(file, 'r');
      a.send(Buffer.from('plain'));
      a.send([Buffer.from('with '), Buffer.from('two fds')], [fd, fd]);
      a.send(Buffer.alloc(MiB, 7));
      a.send(Buffer.alloc(0), [fd]);
      a.end();
      await once(b, 'end');
      closeSync(fd);
      expect(got).toEqual([
        ['plain', []],
        ['with two fds', ['the file behind the fd', 'the file behind the fd']],
        [`${MiB} bytes`, []],
        ['', ['the file behind the fd']],
      ]);
      expect(b.stats).toEqual({ framesIn: 4, framesOut: 0, bytesIn: 5 + 12 + MiB, bytesOut: 0 });
      expect(a.stats.framesOut).toBe(4);
    });

    it('closes the fds a handler did not take', async () => {
      const [a, b] = pair(type);
      const before = openFds();
      const fd = openSync(file, 'r');
      let seen: ReceivedFds | null = null;
      b.on('frame', (_p, fds) => {
        seen = fds;
        expect(fds!.length).toBe(1);
      });
      a.send(Buffer.from('x'), [fd]);
      await once(b, 'frame');
      closeSync(fd);
      expect(seen!.length).toBe(0);
      await delay(10);
      expect(addedSince(before)).toEqual([]);
    });

    it('refuses a second channel on the same socket: it would take the first one\'s events', async () => {
      const [a, b] = pair(type);
      expect(codeOf(() => new FramedChannel(a.transport))).toBe('ERR_INVALID_ARG_VALUE');
      a.send(Buffer.from('still the first channel'));
      const [payload] = await once(b, 'frame');
      expect(payload.toString()).toBe('still the first channel');
      // ...and after the first one closed: a transport is framed once.
      const closed = once(a, 'close');
      a.destroy();
      await closed;
      expect(codeOf(() => new FramedChannel(a.transport))).toBe('ERR_INVALID_ARG_VALUE');
    });

    it('refuses bad arguments to send() and sendCopy() with ERR_INVALID_ARG_VALUE, sends nothing, and goes on', async () => {
      const [a, b] = pair(type);
      const abc = Buffer.from('abc');
      const refusals = [
        // A range past the source's end would send the frame's uninitialised rest.
        () => a.sendCopy(abc, 0, 100),
        () => a.sendCopy(abc, 0, 2_000),
        () => a.sendCopy(abc, -1, 2),
        () => a.sendCopy(abc, 2, 1),
        () => a.sendCopy(abc, 0.5, 2),
        () => a.sendCopy('abc' as unknown as Buffer, 0, 3),
        // fds not in an array would be dropped; a bad onSent would throw after the frame left.
        () => a.send(abc, 3 as unknown as number[]),
        () => a.send(abc, null, 'done' as unknown as () => void),
      ];
      for (const refused of refusals) expect(codeOf(refused), String(refused)).toBe('ERR_INVALID_ARG_VALUE');
      expect(a.stats.framesOut).toBe(0);
      a.sendCopy(abc, 1, 3);
      const [payload] = await once(b, 'frame');
      expect(payload.toString()).toBe('bc');
    });

    it('gives stats as a snapshot, and does not print its channel when the transport is inspected', async () => {
      const [a, b] = pair(type);
      const before = a.stats;
      a.send(Buffer.from('four'));
      await once(b, 'frame');
      expect(before).toEqual({ framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0 });
      expect(a.stats).toEqual({ framesIn: 0, framesOut: 1, bytesIn: 0, bytesOut: 4 });
      expect(b.stats).toEqual({ framesIn: 1, framesOut: 0, bytesIn: 4, bytesOut: 0 });
      const mark = Object.getOwnPropertySymbols(a.transport).find((s) => s.description === 'afunix.channel');
      expect(mark).toBeDefined();
      expect(Object.prototype.propertyIsEnumerable.call(a.transport, mark!)).toBe(false);
    });

    it('holds frames over several pauses, in order, with the end after the last of them', async () => {
      const [a, b] = pair(type);
      const got: string[] = [];
      b.onFrame = (payload) => {
        got.push(payload.toString());
        // Pause after every third frame; resume from outside the handler.
        if (got.length % 3 === 0) {
          b.pause();
          setImmediate(() => b.resume());
        }
      };
      const ended = once(b, 'end');
      b.on('end', () => got.push('end'));
      for (let i = 0; i < 10; i++) a.send(Buffer.from(`f${i}`));
      a.end();
      await ended;
      expect(got).toEqual(['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9', 'end']);
    });

    it('frames held by pause() outlive a clean close of the transport: resume() delivers them, fds too, then end and close', async () => {
      const start = openFds();
      const [a, b] = pair(type);
      const got: string[] = [];
      b.on('frame', (payload: Buffer, fds: ReceivedFds | null) => {
        got.push(payload.toString() + (fds ? `+${fds.length}fd` : ''));
        if (got.length === 1) b.pause();
      });
      b.on('end', () => got.push('end'));
      const closed = once(b, 'close');
      const fd = openSync(join(dir, 'held'), 'w');
      a.send(Buffer.from('one'));
      a.send(Buffer.from('two'));
      a.send(Buffer.from('three'), [fd], () => closeSync(fd));
      a.end();
      while (got.length === 0) await delay(5);
      await delay(20); // the rest is read and held
      b.end(); // both sides have ended: the transport closes
      await once(b.transport, 'close');
      expect(b.closed).toBe(true);
      expect(got).toEqual(['one']);
      b.resume();
      await closed;
      expect(got).toEqual(['one', 'two', 'three+1fd', 'end']);
      if (!a.transport.closed) await once(a.transport, 'close');
      expect(addedSince(start)).toEqual([]); // both sockets, the sent fd and the received one
    });

    it('keeps each channel to its own limits when channels share resolved ones', async () => {
      const [small, smallPeer] = pair(type, { maxFrameSize: 1000 });
      const [large, largePeer] = pair(type);
      expect(smallPeer.limits).toBe(small.limits);
      expect(Object.isFrozen(small.limits)).toBe(true);
      expect(codeOf(() => small.send(Buffer.alloc(1001)))).toBe('FRAME_TOO_LARGE');
      large.send(Buffer.alloc(1001));
      const [payload] = await once(largePeer, 'frame');
      expect(payload.length).toBe(1001);
      expect(smallPeer.limits.maxFrameSize).toBe(1000);
      expect(largePeer.limits.maxFrameSize).toBe(16 * MiB);
    });

    it('refuses oversized frames before sending anything', async () => {
      const [a, b] = pair(type, { maxFrameSize: 1000 });
      expect(codeOf(() => a.send(Buffer.alloc(1001)))).toBe('FRAME_TOO_LARGE');
      expect(codeOf(() => a.send([Buffer.alloc(600), Buffer.alloc(401)]))).toBe('FRAME_TOO_LARGE');
      expect(a.stats.framesOut).toBe(0);
      a.send(Buffer.alloc(1000));
      const [payload] = await once(b, 'frame');
      expect(payload.length).toBe(1000);
    });

    it('a peer announcing a frame over maxFrameSize gets FRAME_TOO_LARGE', async () => {
      const { raw, channel } = rawPeer(type, { maxFrameSize: 100 });
      const error = nextError(channel);
      raw.write(type === 'stream' ? rawHeader({ length: 101 }) : frameBytes(Buffer.alloc(101)));
      expect((await error).code).toBe('FRAME_TOO_LARGE');
      await closed(channel);
      expect(channel.closed).toBe(true);
    });

    it('garbage is a PROTOCOL_ERROR', async () => {
      const { raw, channel } = rawPeer(type);
      const error = nextError(channel);
      raw.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
      expect((await error).code).toBe('PROTOCOL_ERROR');
    });

    it('another protocol version is UNSUPPORTED_VERSION', async () => {
      const { raw, channel } = rawPeer(type);
      const error = nextError(channel);
      raw.write(rawHeader({ version: 2, length: 0 }));
      expect((await error).code).toBe('UNSUPPORTED_VERSION');
    });

    it('TOO_MANY_FDS, sending and receiving, and the fds are closed', async () => {
      const before = openFds();
      const { raw, channel } = rawPeer(type, { maxFds: 1 });
      const fd = openSync(file, 'r');
      expect(codeOf(() => channel.send(Buffer.from('x'), [fd, fd]))).toBe('TOO_MANY_FDS');
      const error = nextError(channel);
      raw.send(frameBytes(Buffer.from('x'), 2), [fd, fd]);
      expect((await error).code).toBe('TOO_MANY_FDS');
      closeSync(fd);
      await settle(raw, channel);
      expect(addedSince(before)).toEqual([]);
    });

    it('send after end() or destroy() is CONNECTION_CLOSED', async () => {
      const [a] = pair(type);
      a.end();
      expect(codeOf(() => a.send(Buffer.from('late')))).toBe('CONNECTION_CLOSED');
      a.destroy();
      expect(codeOf(() => a.send(Buffer.from('later')))).toBe('CONNECTION_CLOSED');
      await expect(a.drained()).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    });

    it('pause() holds frames back until resume(), in order', async () => {
      const [a, b] = pair(type);
      const got: string[] = [];
      b.onFrame = (p) => {
        got.push(p.toString());
        if (got.length === 2) b.pause();
      };
      for (let i = 0; i < 6; i++) a.send(Buffer.from(`f${i}`));
      await delay(30);
      expect(got).toEqual(['f0', 'f1']);
      b.resume();
      await delay(30);
      expect(got).toEqual(['f0', 'f1', 'f2', 'f3', 'f4', 'f5']);
    });

    it('passes backpressure through: send() says false while the peer does not read, drain once it does', async () => {
      const [a, b] = pair(type);
      b.pause();
      const frame = Buffer.alloc(64 * 1024, 1);
      let sent = 0;
      while (a.send(frame)) {
        sent++;
        if (sent > 10_000) throw new Error('no backpressure');
      }
      sent++;
      // Memory stays bounded: what is queued is at most about one frame past the high-water mark.
      expect(a.transport.writableLength).toBeLessThan(256 * 1024);
      let received = 0;
      b.onFrame = () => received++;
      const drained = a.drained();
      b.resume();
      await drained;
      a.end();
      await once(b, 'end');
      expect(received).toBe(sent);
    });

    it('small frames too: send() says false once the peer stops reading, and drain comes exactly once', async () => {
      const [a, b] = pair(type);
      b.pause();
      const small = Buffer.alloc(64, 2);
      let sent = 0;
      while (a.send(small)) {
        sent++;
        if (sent > 1_000_000) throw new Error('no backpressure');
      }
      sent++;
      let drains = 0;
      a.on('drain', () => drains++);
      let received = 0;
      b.onFrame = () => received++;
      b.resume();
      await a.drained();
      await delay(20);
      expect(drains).toBe(1);
      a.end();
      await once(b, 'end');
      expect(received).toBe(sent);
    });

    it('onSent runs once the fds have left, so the sender may close them then', async () => {
      const [a, b] = pair(type);
      const fd = openSync(file, 'r');
      let contents = '';
      b.onFrame = (_p, fds) => {
        const [got] = fds!.take();
        contents = readFd(got!);
        closeSync(got!);
      };
      const sent = new Promise<void>((resolve) => a.send(Buffer.from('x'), [fd], () => resolve()));
      await sent;
      closeSync(fd); // safe: the kernel holds its own reference now
      await delay(20);
      expect(contents).toBe('the file behind the fd');
    });

    it('fds of a frame cut off by close are closed', async () => {
      const before = openFds();
      const { raw, channel } = rawPeer(type);
      const fd = openSync(file, 'r');
      const frame = frameBytes(Buffer.alloc(1000), 1);
      if (type === 'stream') {
        raw.send(frame.subarray(0, 500), [fd]);
        await delay(20);
        const error = nextError(channel);
        raw.end();
        expect((await error).code).toBe('TRUNCATED_FRAME');
      } else {
        // On seqpacket a frame cannot be cut: a short packet is a protocol error.
        const error = nextError(channel);
        raw.send(frame.subarray(0, 500), [fd]);
        expect((await error).code).toBe('PROTOCOL_ERROR');
      }
      closeSync(fd);
      await settle(raw, channel);
      expect(addedSince(before)).toEqual([]);
    });

    it('a handler that throws closes the channel with its error, fds closed', async () => {
      const before = openFds();
      const [a, b] = pair(type);
      const fd = openSync(file, 'r');
      b.onFrame = () => {
        throw new Error('handler bug');
      };
      const error = nextError(b);
      a.send(Buffer.from('1'), [fd]);
      a.send(Buffer.from('2'), [fd]);
      expect((await error).message).toBe('handler bug');
      closeSync(fd);
      await settle(a, b);
      expect(addedSince(before)).toEqual([]);
    });

    it("emits 'error' once, then 'close' once", async () => {
      const { raw, channel } = rawPeer(type);
      const events: string[] = [];
      channel.on('error', (e) => events.push(`error ${(e as { code?: string }).code}`));
      channel.on('close', (hadError) => events.push(`close ${hadError}`));
      raw.write(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9]));
      raw.write(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9]));
      await closed(channel);
      await delay(10);
      expect(events).toEqual(['error PROTOCOL_ERROR', 'close true']);
    });
  });
}

describe('construction', () => {
  it('refuses what is no Duplex, and a decoder without a frame handler, with ERR_INVALID_ARG_VALUE', () => {
    for (const bad of [undefined, null, {}, { on() {} }]) {
      expect(codeOf(() => new FramedChannel(bad as unknown as UnixSocket)), String(bad)).toBe('ERR_INVALID_ARG_VALUE');
    }
    expect(codeOf(() => new FrameDecoder('frames' as unknown as () => void))).toBe('ERR_INVALID_ARG_VALUE');
  });
});

describe('fd placement on a stream', () => {
  // (A large frame's rest is read straight into its buffer: the fds come
  // with bytes read there.)
  it.each([
    ['a frame', 100],
    ['a large frame, whose rest is read in place', 200_000],
  ])('fds sent with bytes in the middle of %s are a PROTOCOL_ERROR, and closed', async (_what, size) => {
    const before = openFds();
    const { raw, channel } = rawPeer('stream');
    const fd = openSync(file, 'r');
    const frame = frameBytes(Buffer.alloc(size, 3));
    const error = nextError(channel);
    raw.write(frame.subarray(0, 50));
    await delay(10);
    raw.send(frame.subarray(50), [fd]);
    expect((await error).code).toBe('PROTOCOL_ERROR');
    closeSync(fd);
    await settle(raw, channel);
    expect(addedSince(before)).toEqual([]);
  });

  it('reads the rest of a frame larger than a read batch straight into its buffer, and delivers it intact', async () => {
    const [a, b] = pair('stream');
    const socket = b.transport as UnixSocket;
    const targets: Uint8Array[] = [];
    const readInto = socket.readInto.bind(socket);
    socket.readInto = (buffer, offset, length) => {
      targets.push(buffer);
      readInto(buffer, offset, length);
    };
    const sent = Buffer.alloc(MiB);
    for (let i = 0; i < sent.length; i += 4) sent.writeUInt32LE(i, i);
    const frames: Buffer[] = [];
    b.onFrame = (payload) => void frames.push(payload);
    for (let i = 0; i < 3; i++) a.send(sent);
    while (frames.length < 3) await delay(5);
    for (const payload of frames) {
      expect(payload.equals(sent)).toBe(true);
      expect(targets.some((t) => t.buffer === payload.buffer)).toBe(true);
    }
  });

  it('a header declaring fds that did not come is a PROTOCOL_ERROR', async () => {
    const { raw, channel } = rawPeer('stream');
    const error = nextError(channel);
    raw.write(frameBytes(Buffer.from('x'), 1));
    expect((await error).code).toBe('PROTOCOL_ERROR');
  });

  it('the server side keeps its other channels when one fails', async () => {
    const { raw, channel } = rawPeer('stream');
    const [a, b] = pair('stream');
    raw.write(Buffer.from('garbage!'));
    await nextError(channel);
    a.send(Buffer.from('still here'));
    const [payload] = await once(b, 'frame');
    expect(payload.toString()).toBe('still here');
  });
});

describe('over seqpacket', () => {
  it('a packet over the socket maxMessageSize is FRAME_TOO_LARGE', async () => {
    const [raw, b] = socketPair('seqpacket', { maxMessageSize: 1024 });
    const channel = new FramedChannel(b);
    open.push(raw, channel);
    const error = nextError(channel);
    raw.write(frameBytes(Buffer.alloc(2000)));
    expect((await error).code).toBe('FRAME_TOO_LARGE');
  });

  it('each frame is one packet, boundaries from the socket', async () => {
    const [a, b] = pair('seqpacket');
    const sizes: number[] = [];
    b.transport.on('data', () => {}); // the receiver takes over; nothing reaches 'data'
    b.onFrame = (p) => sizes.push(p.length);
    for (const n of [0, 1, 100, 65536]) a.send(Buffer.alloc(n));
    await delay(30);
    expect(sizes).toEqual([0, 1, 100, 65536]);
    expect(encodeHeader(0).length).toBe(8);
  });
});

describe('shared callbacks and the listener table', () => {
  it('calls onFrame with the channel as this, and a socket receiver with the socket', async () => {
    const [a, b] = pair();
    const seen: unknown[] = [];
    b.onFrame = function (this: FramedChannel, payload) {
      seen.push(this, payload.toString());
    };
    a.send(Buffer.from('one'));
    await delay(20);
    expect(seen).toEqual([b, 'one']);

    const [x, y] = socketPair();
    open.push(x, y);
    const receivedBy = new Promise<unknown>((resolve) =>
      y.setReceiver(function (this: UnixSocket) {
        resolve(this);
      }),
    );
    x.write('hi');
    expect(await receivedBy).toBe(y);
  });

  it('lists only events with listeners, and no name finds an inherited value', () => {
    const [a] = pair();
    expect(a.eventNames()).toEqual([]);
    const f = () => {};
    a.on('drain', f);
    a.on('end', f);
    expect(a.eventNames().sort()).toEqual(['drain', 'end']);
    a.off('end', f);
    expect(a.eventNames()).toEqual(['drain']);
    // Names outside the channel's events, as any EventEmitter takes them.
    const plain = a as unknown as EventEmitter;
    for (const name of ['toString', 'constructor', 'hasOwnProperty']) expect(plain.listenerCount(name)).toBe(0);
    plain.on('__proto__', f);
    expect(plain.listenerCount('__proto__')).toBe(1);
    expect(plain.emit('__proto__')).toBe(true);
    a.removeAllListeners();
    expect(a.eventNames()).toEqual([]);
    expect(() => a.emit('error', new Error('nobody listens'))).toThrow('nobody listens');
  });
});

describe('frames written in reply to a read', () => {
  it('leave together as the handler returns, before any tick, and schedule none', async () => {
    const [a, b] = pair();
    let ticks = 0;
    const hook = createHook({ init: (_id, type) => void (type === 'TickObject' && ticks++) });
    const replies = ['one', 'two', 'three', 'x'.repeat(3000), 'four', 'y'.repeat(5000), 'five'];
    const replyBytes = replies.reduce((n, r) => n + HEADER_SIZE + r.length, 0);
    let ticksInHandler = -1;
    let writtenByFirstTick: Promise<number> | null = null;
    b.onFrame = function () {
      // Queued before the replies: it finds them gone already.
      writtenByFirstTick = new Promise((resolve) => process.nextTick(() => resolve((this.transport as UnixSocket).bytesWritten)));
      ticks = 0;
      hook.enable();
      try {
        for (const r of replies) this.send(Buffer.from(r));
      } finally {
        hook.disable();
        ticksInHandler = ticks;
      }
    };
    const got: string[] = [];
    const all = new Promise<void>((resolve) => {
      a.onFrame = (payload) => {
        got.push(payload.toString());
        if (got.length === replies.length) resolve();
      };
    });
    a.send(Buffer.from('ask'));
    await all;
    expect(got).toEqual(replies);
    expect(ticksInHandler).toBe(0);
    expect(await writtenByFirstTick).toBe(replyBytes);
  });

  it('frames an onSent callback sends while the packed ones leave are neither lost nor held back', async () => {
    // The fd frame's onSent runs inside a write of packed frames (the queue
    // flushes once 4 KiB have gathered): at the end of the turn, and when a
    // full slab is replaced.
    for (const packed of [4, 5]) {
      const [a, b] = pair();
      const fd = openSync(file, 'r');
      const got: string[] = [];
      const name = (p: Buffer): string => (p.length > 100 ? `<${p.length}>` : p.toString());
      // Fails with what did arrive rather than at the test's timeout.
      const arrived = (n: number): Promise<void> =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`${n} frames expected, got ${JSON.stringify(got)}`)), 5000);
          a.onFrame = (payload, fds) => {
            fds?.close();
            got.push(name(payload));
            if (got.length === n) resolve(clearTimeout(timer));
          };
        });
      const replies = arrived(packed + 4);
      b.onFrame = function () {
        this.send(Buffer.alloc(1000, 'a'));
        this.send(Buffer.from('fd'), [fd], () => {
          this.send(Buffer.from('x'));
          this.send(Buffer.from('y'));
        });
        for (let i = 0; i < packed; i++) this.send(Buffer.alloc(1000, 'p'));
      };
      a.send(Buffer.from('ask'));
      await replies;
      closeSync(fd);
      expect(got.filter((g) => g === 'x' || g === 'y'), `${packed} packed`).toEqual(['x', 'y']);
      expect(got.filter((g) => g === '<1000>').length, `${packed} packed`).toBe(packed + 1);
      expect(got.slice(0, 2)).toEqual(['<1000>', 'fd']);
      // Later frames from a timer go out on their own, not at the next read.
      const later = arrived(got.length + 1);
      setTimeout(() => b.send(Buffer.from('later')), 10);
      await later;
      expect(got.at(-1)).toBe('later');
    }
  });
});

describe('a channel made on a transport already closed', () => {
  it.each(['unix socket', 'Duplex'] as const)('over a destroyed %s: closed at once, send() refused, drained() rejected, one close', async (kind) => {
    const [a, b] = socketPair();
    b.destroy();
    const { PassThrough } = await import('node:stream');
    const transport = kind === 'Duplex' ? new PassThrough() : a;
    transport.destroy();
    await delay(10); // (its own 'close' long gone)
    const channel = new FramedChannel(transport);
    let closes = 0;
    channel.on('close', () => closes++);
    expect(channel.closed).toBe(true);
    expect(() => channel.send(Buffer.from('x'))).toThrow(expect.objectContaining({ code: 'CONNECTION_CLOSED' }));
    await expect(channel.drained()).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await delay(20);
    expect(closes).toBe(1);
    if (kind === 'Duplex') a.destroy();
  });

  it("whose peer had ended (its 'end' past): 'end' is said again, once, after the constructor", async () => {
    const [a, b] = socketPair();
    b.end();
    a.resume();
    await once(a, 'end');
    a.pause();
    const channel = new FramedChannel(a);
    let ends = 0;
    channel.on('end', () => ends++);
    await delay(20);
    expect(ends).toBe(1);
    expect(() => channel.send(Buffer.from('still ours to send'))).not.toThrow();
    channel.destroy();
    b.destroy();
  });

  it('destroyed with an error in the same tick: that error is reported once, then close(hadError)', async () => {
    const [a, b] = socketPair();
    a.destroy(Object.assign(new Error('reset by peer'), { code: 'ECONNRESET' }));
    const channel = new FramedChannel(a);
    const errors: Array<Error & { code?: string }> = [];
    channel.on('error', (err: Error) => errors.push(err));
    // (Not once(): it rejects at the 'error' that comes first.)
    const hadError = await new Promise<boolean>((resolve) => channel.once('close', resolve));
    await delay(10);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.code).toBe('ECONNRESET');
    expect(hadError).toBe(true);
    b.destroy();
  });
});
