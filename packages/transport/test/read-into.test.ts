// readInto(): a receiver names where the next bytes of a stream belong, and
// gets them there, as a view, instead of a copy.
import { openSync, closeSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { type ReceivedFds, socketPair, type UnixSocket } from '../src/index.js';
import { addedSince, destroyAll, openFds, pattern, waitFor } from './helpers.js';

const open: UnixSocket[] = [];
afterEach(() => destroyAll(open));

function pair(type: 'stream' | 'seqpacket' = 'stream'): [UnixSocket, UnixSocket] {
  const sockets = socketPair(type);
  open.push(...sockets);
  return sockets;
}

/** Everything the receiver gets, chunk by chunk. */
function receive(socket: UnixSocket): Array<{ data: Buffer; fds: number }> {
  const got: Array<{ data: Buffer; fds: number }> = [];
  socket.setReceiver((data, fds: ReceivedFds | null) => {
    got.push({ data, fds: fds?.length ?? 0 });
    fds?.close();
  });
  return got;
}

const total = (got: Array<{ data: Buffer }>) => got.reduce((n, c) => n + c.data.length, 0);
const isViewOf = (data: Buffer, target: Buffer, offset: number) => data.buffer === target.buffer && data.byteOffset === target.byteOffset + offset;

describe('readInto()', () => {
  it('puts the next read where it is asked, and hands the receiver a view of that place', async () => {
    const [a, b] = pair();
    const target = Buffer.alloc(100_000, 0xee);
    const got = receive(b);
    b.readInto(target, 1000, 50_000);
    const sent = pattern(50_000, 7);
    a.write(sent);
    await waitFor(() => total(got) === sent.length, () => `${total(got)} bytes in`);
    const first = got[0]!.data;
    expect(isViewOf(first, target, 1000)).toBe(true);
    expect(first.equals(sent.subarray(0, first.length))).toBe(true);
    expect(Buffer.concat(got.map((c) => c.data)).equals(sent)).toBe(true);
    // Nothing outside the named range was touched.
    expect(target.subarray(0, 1000).every((x) => x === 0xee)).toBe(true);
    expect(target.subarray(1000 + first.length).every((x) => x === 0xee)).toBe(true);
  });

  it('serves one read only: the bytes after it arrive as usual', async () => {
    const [a, b] = pair();
    const target = Buffer.alloc(64, 0xee);
    const got = receive(b);
    b.readInto(target, 0, 64);
    a.write(pattern(64, 1));
    await waitFor(() => total(got) === 64, () => `${total(got)} bytes in`);
    a.write(pattern(64, 2));
    await waitFor(() => total(got) === 128, () => `${total(got)} bytes in`);
    expect(isViewOf(got[0]!.data, target, 0)).toBe(true);
    expect(got.slice(1).every((c) => c.data.buffer !== target.buffer)).toBe(true);
    expect(target.equals(pattern(64, 1))).toBe(true);
  });

  it('brings the fds of a read into it with its bytes, and leaks none', async () => {
    const [a, b] = pair();
    const before = openFds();
    const target = Buffer.alloc(4096);
    const got = receive(b);
    b.readInto(target, 0, 4096);
    const fd = openSync('/dev/null', 'r');
    a.send(pattern(100, 3), [fd]);
    await waitFor(() => total(got) === 100, () => `${total(got)} bytes in`);
    closeSync(fd);
    expect(got[0]!.fds).toBe(1);
    expect(isViewOf(got[0]!.data, target, 0)).toBe(true);
    expect(addedSince(before)).toEqual([]);
  });

  it('is dropped unused by a read that cannot take it, and never written after', async () => {
    const [a, b] = pair();
    const got = receive(b);
    // A read with fds makes the next reads a batch of messages, which
    // cannot go to one named place.
    const fd = openSync('/dev/null', 'r');
    a.send(pattern(10, 4), [fd]);
    await waitFor(() => total(got) === 10, () => `${total(got)} bytes in`);
    closeSync(fd);
    const target = Buffer.alloc(256, 0xee);
    b.readInto(target, 0, 256);
    a.write(pattern(100, 5));
    await waitFor(() => total(got) === 110, () => `${total(got)} bytes in`);
    a.write(pattern(100, 6));
    await waitFor(() => total(got) === 210, () => `${total(got)} bytes in`);
    expect(got.every((c) => c.data.buffer !== target.buffer)).toBe(true);
    expect(target.every((x) => x === 0xee)).toBe(true);
  });

  it('is ignored on seqpacket, whose messages arrive whole as always', async () => {
    const [a, b] = pair('seqpacket');
    const target = Buffer.alloc(1024, 0xee);
    const got = receive(b);
    b.readInto(target, 0, 1024);
    a.write(pattern(100, 8));
    await waitFor(() => got.length === 1, () => `${total(got)} bytes in`);
    expect(got[0]!.data.equals(pattern(100, 8))).toBe(true);
    expect(target.every((x) => x === 0xee)).toBe(true);
  });

  it('drops a target whose memory was transferred away, and reads as usual', async () => {
    const [a, b] = pair();
    const target = new Uint8Array(new ArrayBuffer(1024));
    const got = receive(b);
    b.readInto(target, 0, 1024);
    structuredClone(target.buffer, { transfer: [target.buffer] }); // detaches it
    a.write(pattern(100, 9));
    await waitFor(() => total(got) === 100, () => `${total(got)} bytes in`);
    expect(got[0]!.data.equals(pattern(100, 9))).toBe(true);
  });

  it('refuses a range outside the buffer, or no buffer, with ERR_INVALID_ARG_VALUE, and names nothing', async () => {
    const [a, b] = pair();
    const target = Buffer.alloc(16, 0xee);
    const got = receive(b);
    for (const [offset, length] of [[8, 16], [-1, 4], [0, 0], [Number.NaN, 4], [0.5, 4]] as const) {
      expect(() => b.readInto(target, offset, length), `${offset}, ${length}`).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' }));
    }
    expect(() => b.readInto([1, 2] as unknown as Uint8Array, 0, 1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    a.write(pattern(32, 10));
    await waitFor(() => total(got) === 32, () => `${total(got)} bytes in`);
    expect(target.every((x) => x === 0xee)).toBe(true);
  });
});
