// The decoder on what a peer controls: the cost of extension values, how
// deep they nest, and the forms an Fd index may take.
import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decode, encode, encodeToBuffer, prepareValue } from '../src/codec.js';
import { Fd, Msg, RemoteAggregateError, RpcCode, RpcError } from '../src/index.js';

function ext(type: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head =
    n < 0x100 ? Buffer.from([0xc7, n, type])
    : n < 0x10000 ? Buffer.from([0xc8, n >> 8, n & 0xff, type])
    : Buffer.from([0xc9, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, type]);
  return Buffer.concat([head, payload]);
}

const noClose = () => {};
const roundTrip = (value: unknown): unknown => (decode(encodeToBuffer([Msg.RESULT, 1, prepareValue(value, 'result')]), null, noClose).message as unknown[])[2];

describe('extension values cost what their bytes cost', () => {
  it('decodes 32 000 Maps in one message in linear time (it was quadratic: every Map copied the whole message)', () => {
    const value = Array.from({ length: 32_000 }, (_, i) => new Map([[i, `v${i}`]]));
    const bytes = encodeToBuffer([Msg.RESULT, 1, prepareValue(value, 'result')]);
    const started = performance.now();
    const { message } = decode(bytes, null, noClose);
    const ms = performance.now() - started;
    const back = (message as unknown[])[2] as Array<Map<number, string>>;
    expect(back).toHaveLength(32_000);
    expect(back[31_999]!.get(31_999)).toBe('v31999');
    // Before the fix this took ~35 s (8.7 s for 16 000); linear it is well under 1 s.
    // The bound is a liveness check on a shared machine, not a benchmark.
    expect(ms).toBeLessThan(5_000);
  });

  it('decodes Maps nested 20 000 deep without running out of stack', () => {
    let inner: Buffer = Buffer.from([0xc0]); // nil
    for (let i = 0; i < 20_000; i++) inner = ext(1, Buffer.concat([Buffer.from([0x92, 0x01]), inner])); // Map {1 => inner}
    const bytes = Buffer.concat([Buffer.from([0x93, Msg.RESULT, 0x01]), inner]);
    const { message } = decode(bytes, null, noClose);
    let depth = 0;
    for (let v = (message as unknown[])[2]; v instanceof Map; v = v.get(1)) depth++;
    expect(depth).toBe(20_000);
  });

  it('fills Sets and Errors in place, with everything an error carries', () => {
    const cause = new TypeError('inner');
    const err = new RpcError('outer', { code: 'E_OUTER', data: { set: new Set([1, new Set([2])]) }, cause });
    const bytes = encodeToBuffer([Msg.RESULT, 1, prepareValue([err, new Set(['a'])], 'result')], true);
    const [got, set] = (decode(bytes, null, noClose).message as unknown[])[2] as [RpcError & { remoteStack?: string }, Set<string>];
    expect(got).toBeInstanceOf(RpcError);
    expect(got).toMatchObject({ name: 'RpcError', message: 'outer', code: 'E_OUTER' });
    expect(got.data).toEqual({ set: new Set([1, new Set([2])]) });
    expect(got.cause).toMatchObject({ name: 'TypeError', message: 'inner' });
    expect(Object.keys(got)).not.toContain('cause'); // not enumerable, as the Error constructor makes it
    expect(got.remoteStack).toContain('outer');
    expect(got.stack!.split('\n')[0]).toBe('RpcError: outer');
    expect(set).toEqual(new Set(['a']));
  });

  it('a malformed Map or Set payload is a PROTOCOL_ERROR', () => {
    const odd = Buffer.concat([Buffer.from([0x93, Msg.RESULT, 0x01]), ext(1, Buffer.from([0x91, 0x01]))]);
    expect(() => decode(odd, null, noClose)).toThrow(expect.objectContaining({ code: RpcCode.PROTOCOL_ERROR }));
    const notList = Buffer.concat([Buffer.from([0x93, Msg.RESULT, 0x01]), ext(4, Buffer.from([0x01]))]);
    expect(() => decode(notList, null, noClose)).toThrow(expect.objectContaining({ code: RpcCode.PROTOCOL_ERROR }));
  });
});

describe('Fd indexes', () => {
  const closed: number[] = [];
  const fdMessage = (payload: number[]) => Buffer.concat([Buffer.from([0x93, Msg.RESULT, 0x01]), ext(3, Buffer.from(payload))]);

  it.each([
    ['a positive fixint', [0x01]],
    ['a uint8', [0xcc, 0x01]],
    ['a uint16', [0xcd, 0x00, 0x01]],
    ['an int8', [0xd0, 0x01]],
  ])('accepts the index as %s', (_form, payload) => {
    const { message, fds } = decode(fdMessage(payload), [1000, 1001], (fd) => closed.push(fd));
    const fd = (message as unknown[])[2] as Fd;
    expect(fd).toBeInstanceOf(Fd);
    expect(fd.take()).toBe(1001);
    expect(fds).toHaveLength(1);
    expect(closed.splice(0)).toEqual([1000]); // the fd nobody referred to
  });

  it.each([
    ['a negative int8', [0xd0, 0xff]],
    ['a string', [0xa1, 0x30]],
    ['nil', [0xc0]],
    ['trailing bytes', [0x01, 0x01]],
    ['an index that did not come with the message', [0x05]],
  ])('refuses %s with PROTOCOL_ERROR and closes every fd', (_form, payload) => {
    expect(() => decode(fdMessage(payload), [1000, 1001], (fd) => closed.push(fd))).toThrow(
      expect.objectContaining({ code: RpcCode.PROTOCOL_ERROR }),
    );
    expect(closed.splice(0).sort()).toEqual([1000, 1001]);
  });
});

describe('the hand-written envelope', () => {
  it('reads back what it writes at the edges of ids and names, byte for byte what msgpackr writes', async () => {
    const { encodeMessage, readMessage } = await import('../src/envelope.js');
    const joined = (e: { bytes: Buffer | Buffer[] }) => (Array.isArray(e.bytes) ? Buffer.concat(e.bytes) : e.bytes);
    const ids = [0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff];
    // 246 characters is the longest name that fits with a 5-byte id; 247
    // and more go through msgpackr whole, as any other message.
    const names = ['', 'm', 'm'.repeat(31), 'm'.repeat(32), 'm'.repeat(246), 'm'.repeat(247), 'm'.repeat(300), 'né'];
    for (const id of ids) {
      for (const name of names) {
        const value = prepareValue([{ id, name }], 'args');
        const bytes = joined(encodeMessage(Msg.REQUEST, id, name, value));
        expect(bytes.equals(encodeToBuffer([Msg.REQUEST, id, name, value])), `id ${id}, name of ${name.length}`).toBe(true);
        const back = readMessage(bytes, null, noClose) ?? { id: -1, name: '', value: decode(bytes, null, noClose).message };
        const message = back.id === -1 ? (back.value as unknown[]) : [Msg.REQUEST, back.id, back.name, back.value];
        expect(message).toEqual([Msg.REQUEST, id, name, [{ id, name }]]);
      }
    }
  });
});

describe('an error whose cause is an error value (ext 2), as PROTOCOL.md 2.4 allows', () => {
  it('keeps the cause, filled in, however deep the chain', () => {
    // Our encoder sends a cause as a plain record; another implementation
    // may send it as an error value of its own: built here byte by byte.
    const errorValue = (record: Record<string, unknown>, cause?: Buffer): Buffer => {
      const packed = encodeToBuffer((cause ? { ...record, cause: 'CAUSE!' } : record) as never);
      const at = cause ? packed.indexOf(Buffer.from('\xa6CAUSE!', 'latin1')) : -1;
      return ext(2, cause ? Buffer.concat([packed.subarray(0, at), cause, packed.subarray(at + 7)]) : packed);
    };
    let chain = errorValue({ name: 'TypeError', message: 'level 0', code: 'E_0' });
    for (let i = 1; i < 5; i++) chain = errorValue({ name: 'Error', message: `level ${i}`, code: `E_${i}` }, chain);
    let err = decode(chain, null, noClose).message as Error & { code?: string };
    for (let i = 4; i >= 0; i--) {
      expect(err).toBeInstanceOf(Error);
      expect({ name: err.name, message: err.message, code: err.code }).toEqual({ name: i === 0 ? 'TypeError' : 'Error', message: `level ${i}`, code: `E_${i}` });
      err = err.cause as Error & { code?: string };
    }
    expect(err).toBe(undefined);
  });

  it('stops a chain of them at 8 causes, as a chain of records (a peer sent 20 000)', () => {
    const errorValue = (record: Record<string, unknown>, cause?: Buffer): Buffer => {
      const packed = encodeToBuffer((cause ? { ...record, cause: 'CAUSE!' } : record) as never);
      const at = cause ? packed.indexOf(Buffer.from('\xa6CAUSE!', 'latin1')) : -1;
      return ext(2, cause ? Buffer.concat([packed.subarray(0, at), cause, packed.subarray(at + 7)]) : packed);
    };
    let chain = errorValue({ name: 'Error', message: 'level 0' });
    for (let i = 1; i < 30; i++) chain = errorValue({ name: 'Error', message: `level ${i}` }, chain);
    let depth = 0;
    for (let err = decode(chain, null, noClose).message as Error | undefined; err; err = err.cause as Error | undefined) depth++;
    expect(depth).toBe(9); // the error and 8 causes
  });
});

describe("an AggregateError's errors", () => {
  // An error value (ext 2) around any record, as a peer may send it.
  const errorValue = (record: unknown): Buffer => ext(2, encodeToBuffer(record as never));
  const received = (bytes: Buffer): unknown => (decode(Buffer.concat([Buffer.from([0x93, Msg.RESULT, 0x01]), bytes]), null, noClose).message as unknown[])[2];

  it('travel, each an error again, nested ones AggregateErrors again; what is not an error as it was', () => {
    const inner = new AggregateError([new TypeError('bad type'), 'a string', 7], 'inner');
    const sent = Object.assign(new AggregateError([new RpcError('one', { code: 'E_ONE', data: { id: 1 } }), inner], 'all failed', { cause: new Error('why') }), { code: 'E_ALL' });
    const got = roundTrip(sent) as AggregateError & { code: string };
    expect(got).toBeInstanceOf(AggregateError);
    expect(got).toBeInstanceOf(RemoteAggregateError);
    expect(got).toMatchObject({ name: 'AggregateError', message: 'all failed', code: 'E_ALL' });
    expect(got.cause).toMatchObject({ message: 'why' });
    expect(Object.keys(got)).not.toContain('errors'); // own and not enumerable, as AggregateError makes it
    const [one, nested] = got.errors as [RpcError, AggregateError & { code: string }];
    expect(one).toBeInstanceOf(RpcError);
    expect(one).toMatchObject({ name: 'RpcError', message: 'one', code: 'E_ONE', data: { id: 1 } });
    expect(nested).toBeInstanceOf(AggregateError);
    expect(nested).toMatchObject({ name: 'AggregateError', message: 'inner', code: RpcCode.INTERNAL });
    expect(nested.errors[0]).toMatchObject({ name: 'TypeError', message: 'bad type', code: RpcCode.INTERNAL });
    expect(nested.errors.slice(1)).toEqual(['a string', 7]);
  });

  it('an AggregateError among the causes, and one whose errors are empty, stay AggregateErrors', () => {
    const got = roundTrip(new Error('top', { cause: new AggregateError([], 'none') })) as Error;
    expect(got).not.toBeInstanceOf(AggregateError);
    expect(got.cause).toBeInstanceOf(AggregateError);
    expect((got.cause as AggregateError).errors).toEqual([]);
  });

  it('nested deeper than 8 levels (with the causes), the rest is left out, as a chain of causes is', () => {
    let deep: Error = new Error('bottom');
    for (let i = 0; i < 12; i++) deep = new AggregateError([deep], `level ${i}`);
    let levels = 0;
    let got = roundTrip(deep) as Error;
    for (; got instanceof AggregateError; got = got.errors[0] as Error) levels++;
    expect(levels).toBe(8);
    expect(got).toMatchObject({ name: 'AggregateError', message: 'level 3' }); // the ninth, without its errors
  });

  it('an AggregateError that contains itself fails with ENCODE_ERROR and the path, directly or through a cause', () => {
    const self = new AggregateError([new Error('fine')], 'self');
    self.errors.push(self);
    expect(() => roundTrip(self)).toThrow(expect.objectContaining({ code: RpcCode.ENCODE_ERROR, data: { path: '.error.errors[1]' } }));
    const outer = new AggregateError([], 'outer');
    outer.errors.push(new Error('wraps it', { cause: outer }));
    expect(() => roundTrip({ e: outer })).toThrow(expect.objectContaining({ code: RpcCode.ENCODE_ERROR, data: { path: '.error.errors[0].cause.errors[0]' } }));
  });

  it('the same error listed many times at each level fails with ENCODE_ERROR past 10 000 errors, at once', () => {
    let wide: Error = new Error('leaf');
    for (let i = 0; i < 6; i++) wide = new AggregateError(Array.from({ length: 10 }, () => wide), `fan ${i}`); // 10^6 leaves
    const started = performance.now();
    expect(() => roundTrip(wide)).toThrow(expect.objectContaining({ code: RpcCode.ENCODE_ERROR, message: expect.stringContaining('more than 10000 errors') }));
    expect(performance.now() - started).toBeLessThan(5_000); // liveness, not speed
    // A list of 10 000 distinct errors (the error itself makes 10 001) is over too; 9 999 are not.
    expect(() => roundTrip(new AggregateError(Array.from({ length: 10_000 }, () => new Error('x'))))).toThrow(expect.objectContaining({ code: RpcCode.ENCODE_ERROR }));
    expect((roundTrip(new AggregateError(Array.from({ length: 9_999 }, () => new Error('x')))) as AggregateError).errors).toHaveLength(9_999);
  });

  it('from a peer: errors that are not a list are ignored, the error arrives without them', () => {
    for (const errors of ['nope', 42, null, { 0: { message: 'x' } }, true]) {
      const got = received(errorValue({ name: 'AggregateError', message: 'odd', errors })) as Error;
      expect(got).toBeInstanceOf(RpcError);
      expect(got).not.toBeInstanceOf(AggregateError);
      expect(got).toMatchObject({ name: 'AggregateError', message: 'odd', code: RpcCode.INTERNAL });
      expect('errors' in got).toBe(false);
    }
  });

  it('from a peer: errors as error values (ext 2) are filled in, and count towards the depth limit', () => {
    // Built inside out: each level's errors hold the level below as an error value.
    let bytes = errorValue({ name: 'Error', message: 'bottom' });
    for (let i = 0; i < 20; i++) {
      const record = encodeToBuffer({ name: 'AggregateError', message: `level ${i}`, errors: ['PLACE'] } as never);
      const at = record.indexOf(Buffer.from('\xa5PLACE', 'latin1'));
      bytes = ext(2, Buffer.concat([record.subarray(0, at), bytes, record.subarray(at + 6)]));
    }
    let levels = 0;
    let got = received(bytes) as Error;
    for (; got instanceof AggregateError; got = got.errors[0] as Error) levels++;
    expect(levels).toBe(8);
    expect(got).toMatchObject({ message: 'level 11' });
  });

  it('from a peer: a list as long as the message allows is taken in one linear pass', () => {
    const many = 200_000;
    const records = errorValue({ name: 'AggregateError', message: 'many', errors: Array.from({ length: many }, (_, i) => (i % 2 ? { message: `${i}` } : i)) });
    const started = performance.now();
    const got = received(records) as AggregateError;
    expect(performance.now() - started).toBeLessThan(5_000); // liveness, not speed
    expect(got.errors).toHaveLength(many);
    expect(got.errors[1]).toBeInstanceOf(RpcError);
    expect(got.errors[2]).toBe(2);
  });
});

describe("msgpackr's standard extension types from a peer (PROTOCOL.md 2.3)", () => {
  const u32 = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  const i64 = (n: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(n);
    return [...b];
  };
  const ts64 = (nanoseconds: number, seconds: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE((BigInt(nanoseconds) << 34n) | BigInt(seconds));
    return [...b];
  };
  const fixext = (type: number, payload: number[]) => Buffer.from([{ 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[payload.length]!, type, ...payload]);
  // The value as a RESULT's, in a small message (decoded from a copy) and in
  // one past 1 KiB (decoded where it is): the two ways a message is read.
  const inMessage = (value: Buffer, large: boolean): Buffer =>
    large
      ? Buffer.concat([Buffer.from([0x94, Msg.RESULT, 0x01]), value, Buffer.from([0xda, 0x08, 0x00]), Buffer.alloc(2048, 0x61)])
      : Buffer.concat([Buffer.from([0x93, Msg.RESULT, 0x01]), value]);
  const decoded = (value: Buffer, large = false): unknown => (decode(inMessage(value, large), null, noClose).message as unknown[])[2];

  it.each([
    ['a timestamp of 0 bytes', ext(0xff, Buffer.alloc(0))],
    ['a timestamp of 1 byte other than 0xff', fixext(0xff, [0x00])],
    ['a timestamp of 2 bytes', fixext(0xff, [0, 0])],
    ['a timestamp of 5 bytes', ext(0xff, Buffer.from([0, 0, 0, 0, 1]))],
    ['a timestamp of 16 bytes', fixext(0xff, Array(16).fill(1))],
    ['a 64-bit timestamp with 1e9 nanoseconds (msgpackr: the next second)', fixext(0xff, ts64(1e9, 1))],
    ['a 64-bit timestamp with 2^30 - 1 nanoseconds', fixext(0xff, ts64(2 ** 30 - 1, 1))],
    ['a 96-bit timestamp with 1e9 nanoseconds', ext(0xff, Buffer.from([...u32(1e9), ...i64(0n)]))],
    ['a 96-bit timestamp with 2^32 - 1 nanoseconds (msgpackr: -1 ns, a sign error)', ext(0xff, Buffer.from([...u32(0xffffffff), ...i64(0n)]))],
    ['a 96-bit timestamp of 2^48 + 5 s (msgpackr: 5 s, the high bits dropped)', ext(0xff, Buffer.from([...u32(0), ...i64(2n ** 48n + 5n)]))],
    ['a 96-bit timestamp past what a Date holds (msgpackr: an Invalid Date)', ext(0xff, Buffer.from([...u32(0), ...i64(8_640_000_000_001n)]))],
    ['a 96-bit timestamp before what a Date holds', ext(0xff, Buffer.from([...u32(0), ...i64(-8_640_000_000_001n)]))],
    ['a BigInt of 0 bytes', ext(0x42, Buffer.alloc(0))],
    ['undefined with 0 bytes (msgpackr: undefined)', ext(0, Buffer.alloc(0))],
    ['undefined with 2 bytes', fixext(0, [0, 0])],
    ['undefined with 5 bytes', ext(0, Buffer.from([1, 2, 3, 4, 5]))],
    ['a typed array of 0 bytes', ext(0x74, Buffer.alloc(0))],
    ['an Int32Array of 3 bytes', ext(0x74, Buffer.from([5, 1, 2, 3]))],
    ['a Float64Array of 12 bytes', ext(0x74, Buffer.from([8, ...Array(12).fill(1)]))],
    ['a BigUint64Array of 9 bytes', ext(0x74, Buffer.from([10, ...Array(9).fill(1)]))],
    ['a typed array of unknown type 11', ext(0x74, Buffer.from([11, 1]))],
    ["msgpackr's Error (0x65), its record after it (msgpackr: an Error)", Buffer.from([0xd4, 0x65, 0x00, 0x93, 0xa1, 0x58, 0xa1, 0x6d, 0xc0])],
    ["msgpackr's Error named constructor (msgpackr: a String object)", Buffer.concat([Buffer.from([0xd4, 0x65, 0x00, 0x93, 0xab]), Buffer.from('constructor'), Buffer.from([0xa1, 0x6d, 0xc0])])],
    ["msgpackr's Error reading past its 2-byte payload", Buffer.from([0xc7, 0x02, 0x65, 0x09, 0x09, 0x93, 0xa1, 0x58, 0xa1, 0x6d, 0xc0])],
    ["msgpackr's Set (0x73), its members after it", Buffer.from([0xd4, 0x73, 0x00, 0x92, 0x01, 0x02])],
    ["msgpackr's bundled strings (0x62)", Buffer.from([0xd6, 0x62, 0x00, 0x00, 0x00, 0x06, 0xa1, 0x61, 0xa1, 0x62])],
    ['a RegExp followed by a number (msgpackr: /(?:)/)', Buffer.from([0xd4, 0x78, 0x00, 0x05])],
    ['a RegExp followed by bad flags', Buffer.from([0xd4, 0x78, 0x00, 0x92, 0xa1, 0x61, 0xa1, 0x51])],
    ['a RegExp with its value inside a payload', ext(0x78, Buffer.from([0x92, 0xa1, 0x61, 0xa1, 0x67]))],
  ])('%s is a PROTOCOL_ERROR', (_what, value) => {
    for (const large of [false, true]) {
      expect(() => decoded(value, large)).toThrow(expect.objectContaining({ name: 'RpcError', code: RpcCode.PROTOCOL_ERROR }));
    }
  });

  it('timestamps: the three forms, as a Date; msgpackr\'s Invalid Date; the edges of what a Date holds', () => {
    const cases: Array<[Buffer, number]> = [
      [fixext(0xff, u32(1e9)), 1e12],
      [fixext(0xff, u32(0xffffffff)), 0xffffffff * 1000],
      [fixext(0xff, ts64(999_999_999, 1)), 1999],
      [fixext(0xff, ts64(0, 2 ** 34 - 1)), (2 ** 34 - 1) * 1000],
      [ext(0xff, Buffer.from([...u32(500_000_000), ...i64(-2n)])), -1500],
      [ext(0xff, Buffer.from([...u32(0), ...i64(8_640_000_000_000n)])), 8.64e15],
      [ext(0xff, Buffer.from([...u32(0), ...i64(-8_640_000_000_000n)])), -8.64e15],
    ];
    for (const [bytes, ms] of cases) {
      for (const large of [false, true]) expect((decoded(bytes, large) as Date).getTime()).toBe(ms);
    }
    expect(Number.isNaN((decoded(fixext(0xff, [0xff])) as Date).getTime())).toBe(true);
    // What an afunix sender writes, read back: msgpackr chooses the form.
    for (const date of [new Date(0), new Date(1_700_000_000_123), new Date(-1), new Date(8.64e15), new Date(-8.64e15), new Date(NaN)]) {
      expect(roundTrip(date)).toEqual(date);
    }
  });

  it('BigInts: any length from 1 byte, two\'s complement, as msgpackr writes them and shorter', () => {
    expect(decoded(fixext(0x42, [0x07]))).toBe(7n);
    expect(decoded(ext(0x42, Buffer.from([0xff, 0x00, 0x01])))).toBe(-65535n);
    expect(decoded(ext(0x42, Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0, 0])))).toBe(-(2n ** 71n));
    const values = [2n ** 64n, -(2n ** 63n) - 1n, 2n ** 127n, -(2n ** 128n), 2n ** 65_535n, -(2n ** 65_536n) + 1n, 3n ** 50_000n, -(7n ** 30_000n)];
    for (const n of values) expect(roundTrip(n)).toBe(n);
  });

  it('undefined: fixext 1 with any byte (not looked at), or any form with a payload of 1 byte', () => {
    for (const byte of [0x00, 0x07, 0xff]) expect(decoded(fixext(0, [byte]))).toBe(undefined);
    expect(decoded(ext(0, Buffer.from([0x00])))).toBe(undefined);
  });

  it('typed arrays: every type, empty ones, ArrayBuffer and DataView', () => {
    const views = [new Int8Array([-1]), new Uint8Array([1, 2]), new Uint8ClampedArray([3]), new Int16Array([-2]), new Uint16Array([2]), new Int32Array([-3]),
      new Uint32Array([3]), new Float32Array([0.5]), new Float64Array([0.25]), new BigInt64Array([-4n]), new BigUint64Array([4n]), new Float64Array(0)];
    for (const view of views) expect(roundTrip(view)).toEqual(view);
    expect(decoded(fixext(0x74, [3]))).toEqual(new Int16Array(0));
    expect(Buffer.from(roundTrip(new Uint8Array([9, 8]).buffer) as ArrayBuffer)).toEqual(Buffer.from([9, 8]));
    const view = roundTrip(new DataView(new Uint8Array([7, 6]).buffer)) as DataView;
    expect(view).toBeInstanceOf(DataView);
    expect(view.getUint8(1)).toBe(6);
  });

  it('a RegExp is refused both ways: compiling a peer\'s pattern costs what it will (a \\p{L} ~0.2 ms)', () => {
    expect(() => prepareValue([/a+b/gu], 'args')).toThrow(expect.objectContaining({ code: RpcCode.ENCODE_ERROR, message: expect.stringContaining('RegExp') }));
    const written = Buffer.from([0xd4, 0x78, 0x00, 0x92, 0xa1, 0x61, 0xa1, 0x67]); // msgpackr's /a/g
    expect(() => decoded(written)).toThrow(expect.objectContaining({ code: RpcCode.PROTOCOL_ERROR }));
  });

  it("leaves another msgpackr user in the process msgpackr's own readings of its Error, Set and RegExp", () => {
    const other = new Unpackr({ moreTypes: true });
    const after = (ext: number, value: unknown[]) => Buffer.concat([Buffer.from([0xd4, ext, 0x00]), new Packr({ useRecords: false }).pack(value)]);
    expect(other.unpack(after(0x73, [1, 2]))).toEqual(new Set([1, 2]));
    expect(other.unpack(after(0x78, ['a+', 'g']))).toEqual(/a+/g);
    const err = other.unpack(after(0x65, ['TypeError', 'bad', null])) as Error;
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toBe('bad');
    const named = other.unpack(after(0x65, ['constructor', 'odd', null])) as Error;
    expect(named).toBeInstanceOf(Error);
    expect(named.name).toBe('constructor');
    // (The same bytes in an afunix message are refused: see above.)
    expect(() => decoded(after(0x73, [1, 2]))).toThrow(expect.objectContaining({ code: RpcCode.PROTOCOL_ERROR }));
  });
});
