// Large Buffers travel as pieces of their own, never copied into the
// message, and the bytes on the wire are exactly those of the Buffer
// packed in place.
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { SPLICE_MIN, decode, encode, prepareValue } from '../src/codec.js';
import { Msg, RpcCode } from '../src/index.js';

// msgpack as any library writes it (no extension of ours is involved in
// these messages): what the pieces must add up to.
const plain = new Packr({ moreTypes: true, useRecords: false, int64AsType: 'bigint', structuredClone: false });

function bytesOf(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function wire(message: unknown[]): { joined: Buffer; pieces: Buffer[] } {
  const { bytes, length } = encode(message);
  const pieces = Array.isArray(bytes) ? bytes : [bytes];
  const joined = Buffer.concat(pieces);
  expect(joined.length).toBe(length);
  return { joined, pieces };
}

const noClose = () => {};

describe('spliced Buffers', () => {
  const cases: Array<[string, () => unknown]> = [
    ['one Buffer of SPLICE_MIN bytes (bin16)', () => [bytesOf(SPLICE_MIN, 1)]],
    ['the largest bin16 and the smallest bin32', () => [bytesOf(0xffff, 2), bytesOf(0x10000, 3)]],
    ['Buffers nested in objects and arrays, small ones between', () => [{ a: bytesOf(70_000, 4), b: [Buffer.from('small'), { c: bytesOf(20_000, 5) }] }, 'tail']],
    // Strings big enough that msgpackr moves the message to a larger buffer
    // before, between and after the spliced values.
    ['values that outgrow the encoder buffer around them', () => ['x'.repeat(100_000), bytesOf(SPLICE_MIN, 6), 'y'.repeat(300_000), bytesOf(40_000, 7), 'z'.repeat(1_000_000)]],
  ];

  for (const [name, make] of cases) {
    it(`${name}: the same bytes as packed in place, the Buffers sent as they are`, () => {
      const args = make();
      const { joined, pieces } = wire([Msg.REQUEST, 7, 'put', prepareValue(args, 'args')]);
      expect(joined.equals(plain.pack([Msg.REQUEST, 7, 'put', args]))).toBe(true);
      const large: Buffer[] = [];
      collectLarge(args, large);
      expect(large.length).toBeGreaterThan(0);
      for (const b of large) expect(pieces).toContain(b); // the caller's own Buffer, not a copy
    });
  }

  it('a prepared value can be encoded twice, and after other messages', () => {
    const big = bytesOf(50_000, 8);
    const prepared = prepareValue([big], 'args');
    const other = prepareValue([bytesOf(30_000, 9)], 'args');
    const first = wire([Msg.NOTIFY, 'other', other]).joined;
    expect(first.equals(plain.pack([Msg.NOTIFY, 'other', [bytesOf(30_000, 9)]]))).toBe(true);
    const expected = plain.pack([Msg.EVENT, 'tick', [big]]);
    expect(wire([Msg.EVENT, 'tick', prepared]).joined.equals(expected)).toBe(true);
    expect(wire([Msg.EVENT, 'tick', prepared]).joined.equals(expected)).toBe(true);
  });

  it('inside a Map, Set or Error a Buffer is packed in place and comes back whole', () => {
    const big = bytesOf(40_000, 10);
    const value = [new Map([['k', big]]), new Set([big])];
    const { joined, pieces } = wire([Msg.RESULT, 1, prepareValue(value, 'result')]);
    expect(pieces).toHaveLength(1);
    const [map, set] = (decode(joined, null, noClose).message as unknown[])[2] as [Map<string, Buffer>, Set<Buffer>];
    expect(map.get('k')!.equals(big)).toBe(true);
    expect([...set][0]!.equals(big)).toBe(true);
  });

  it('a received bin is a view of the frame, not a copy', () => {
    const payload = Buffer.from(wire([Msg.RESULT, 1, prepareValue(bytesOf(100_000, 11), 'result')]).joined);
    const got = (decode(payload, null, noClose).message as unknown[])[2] as Buffer;
    expect(Buffer.isBuffer(got)).toBe(true);
    expect(got.buffer).toBe(payload.buffer);
    expect(got.equals(bytesOf(100_000, 11))).toBe(true);
  });

  it('the extension types used only while encoding are refused when received', () => {
    for (const type of [0x7e, 0x7f]) {
      const bytes = Buffer.from([0x93, Msg.RESULT, 0x01, 0xd4, type, 0x00]);
      expect(() => decode(bytes, null, noClose)).toThrow(expect.objectContaining({ code: RpcCode.PROTOCOL_ERROR }));
    }
  });
});

function collectLarge(value: unknown, out: Buffer[]): void {
  if (Buffer.isBuffer(value)) {
    if (value.length >= SPLICE_MIN) out.push(value);
  } else if (Array.isArray(value)) {
    for (const v of value) collectLarge(v, out);
  } else if (value && typeof value === 'object') {
    for (const v of Object.values(value)) collectLarge(v, out);
  }
}

describe('received Buffers', () => {
  it('in a small message are copies: nothing decoded points into memory that the next message reuses', () => {
    const first = Buffer.from([1, 2, 3, 4]);
    const payload = Buffer.from(wire([Msg.RESULT, 1, prepareValue({ b: first, m: new Map([['k', first]]), s: new Set([first]) }, 'result')]).joined);
    const got = (decode(payload, null, noClose).message as unknown[])[2] as { b: Buffer; m: Map<string, Buffer>; s: Set<Buffer> };
    // Another message of the same size, all other bytes.
    const other = Buffer.from(wire([Msg.RESULT, 1, prepareValue({ b: Buffer.from([9, 9, 9, 9]), m: new Map([['k', Buffer.from([9, 9, 9, 9])]]), s: new Set([Buffer.from([9, 9, 9, 9])]) }, 'result')]).joined);
    expect(other.length).toBe(payload.length);
    decode(other, null, noClose);
    for (const b of [got.b, got.m.get('k')!, [...got.s][0]!]) {
      expect(Buffer.isBuffer(b)).toBe(true);
      expect([...b]).toEqual([1, 2, 3, 4]);
      expect(b.buffer).not.toBe(payload.buffer);
    }
  });

  it('typed arrays in a small message survive the next message too', () => {
    const message = (n: number) => wire([Msg.RESULT, 1, prepareValue({ f: new Float64Array([n, n]), u: new Uint8Array([n, n, n]) }, 'result')]).joined;
    const got = (decode(Buffer.from(message(1.5)), null, noClose).message as unknown[])[2] as { f: Float64Array; u: Uint8Array };
    decode(Buffer.from(message(9)), null, noClose);
    expect([...got.f]).toEqual([1.5, 1.5]);
    expect([...got.u]).toEqual([1, 1, 1]);
  });
});
