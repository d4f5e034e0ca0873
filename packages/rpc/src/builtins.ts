// msgpackr's own extension types, as a peer may send them. msgpackr takes
// a malformed payload for something: a timestamp of any length is an
// Invalid Date, one with 1.5 billion nanoseconds rolls over into the next
// second, a 96-bit one beyond 2^48 seconds loses its high bits, and
// `undefined` takes any payload. Some of its types (Error, Set, RegExp,
// bundled strings) read the value after their payload, which is not how
// afunix frames a value (PROTOCOL.md 2.3). The readers below replace
// msgpackr's for those types, process-wide as every extension is: each
// checks its payload as it reads it, no pass of its own over the message,
// and fails with PROTOCOL_ERROR. msgpackr's own Error, Set and RegExp are
// refused in afunix messages only, and read as msgpackr reads them for
// anyone else in the process. The typed arrays (0x74) are left to
// msgpackr, which already throws for every malformed payload.
import { addExtension } from './msgpack.js';
import { RpcCode, type RpcError, rpcError } from './errors.js';

// msgpackr indexes extensions by their type byte: the timestamp's -1 is 0xff.
const EXT_TIMESTAMP = 0xff;
const EXT_UNDEFINED = 0;
const EXT_BIGINT = 0x42;
const EXT_MSGPACKR_ERROR = 0x65;
const EXT_MSGPACKR_SET = 0x73;
const EXT_MSGPACKR_REGEXP = 0x78;
const EXT_MSGPACKR_BUNDLE = 0x62;

function malformed(what: string, why: string): RpcError {
  return rpcError(RpcCode.PROTOCOL_ERROR, `malformed ${what} extension: ${why}`);
}

function bytes(n: number): string {
  return n === 1 ? '1 byte' : `${n} bytes`;
}

function uint32(p: Uint8Array, at: number): number {
  return p[at]! * 0x1000000 + ((p[at + 1]! << 16) | (p[at + 2]! << 8) | p[at + 3]!);
}

function int32(p: Uint8Array, at: number): number {
  return (p[at]! << 24) | (p[at + 1]! << 16) | (p[at + 2]! << 8) | p[at + 3]!;
}

// The three timestamp forms of the msgpack spec, and msgpackr's Invalid
// Date (fixext 1, 0xff), which an afunix sender writes for one. A time a
// Date cannot hold (beyond 8.64e15 ms either side of 1970) is refused
// rather than made an Invalid Date, which would pass for the sender's.
function timestamp(p: Uint8Array): Date {
  let seconds: number;
  let nanoseconds: number;
  if (p.length === 4) {
    seconds = uint32(p, 0);
    nanoseconds = 0;
  } else if (p.length === 8) {
    const high = uint32(p, 0);
    nanoseconds = high >>> 2;
    seconds = (high & 3) * 0x100000000 + uint32(p, 4);
  } else if (p.length === 12) {
    nanoseconds = uint32(p, 0);
    seconds = int32(p, 4) * 0x100000000 + uint32(p, 8);
  } else if (p.length === 1 && p[0] === 0xff) {
    return new Date(NaN);
  } else {
    throw malformed('Timestamp', `${bytes(p.length)} (4, 8 or 12)`);
  }
  if (nanoseconds >= 1e9) throw malformed('Timestamp', `${nanoseconds} nanoseconds`);
  // (As msgpackr computes it: the same Date for every valid timestamp.)
  const date = new Date(nanoseconds / 1e6 + seconds * 1000);
  if (Number.isNaN(date.getTime())) throw malformed('Timestamp', `${seconds} seconds is beyond what a Date holds`);
  return date;
}

// Big-endian two's complement of any length but 0 (msgpackr writes 16
// bytes or more, and reads fewer as well).
function bigInt(p: Uint8Array): bigint {
  if (p.length === 0) throw malformed('BigInt', 'no bytes');
  const n = BigInt(`0x${Buffer.from(p.buffer, p.byteOffset, p.length).toString('hex')}`);
  return p[0]! & 0x80 ? n - (1n << BigInt(p.length * 8)) : n;
}

// Its fixext 1 form has msgpackr skip the byte (noBuffer: no view made for
// each `undefined`, and the byte is not looked at); any other form comes
// here with its payload, which must be one byte as well.
function undefinedValue(p?: Uint8Array): undefined {
  if (p !== undefined && p.length !== 1) throw malformed('undefined', bytes(p.length));
  return undefined;
}
undefinedValue.noBuffer = true;

// Whether the value being read is an afunix message (codec.ts's
// decodeAt() says so): the readers below are process-wide, and for another
// msgpackr user in the process they read as msgpackr does.
let inMessage = false;

/** @internal codec.ts: an afunix message is being read (true) or no longer (false). */
export function readingMessage(reading: boolean): void {
  inMessage = reading;
}

function notInProtocol(what: string): RpcError {
  return rpcError(RpcCode.PROTOCOL_ERROR, `extension ${what} is not part of the protocol`);
}

// msgpackr's Error, Set and RegExp, written as fixext 1 followed by their
// value (for which msgpackr calls `read` with that value). An afunix
// sender writes its own Error and Set (2 and 4), and refuses a RegExp: a
// peer's RegExp costs what V8 takes to compile it, unbounded by its size
// (each \p{L} with the u flag is ~0.2 ms: a 20 KB hello took 0.9 s). In an
// afunix message each is refused; elsewhere each is what msgpackr makes of
// it (its readers, as of msgpackr 2.1.4), in msgpackr's own form only.
function foreign(what: string, read: (value: unknown) => unknown): ((payload: Uint8Array) => never) & { read(value: unknown): unknown } {
  const reader = (): never => {
    throw inMessage ? notInProtocol(what) : malformed(what, 'not fixext 1 followed by its value');
  };
  reader.read = (value: unknown): unknown => {
    if (inMessage) throw notInProtocol(what);
    return read(value);
  };
  return reader;
}

const ERROR_CLASSES: Record<string, ErrorConstructor | undefined> = Object.assign(Object.create(null) as Record<string, ErrorConstructor>, {
  Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError,
});

function msgpackrError(value: unknown): Error {
  const [name, message, cause, errors] = value as [unknown, string, unknown, unknown[] | undefined];
  if (name === 'AggregateError') return new AggregateError(errors ?? [], message, { cause });
  const Class = typeof name === 'string' ? ERROR_CLASSES[name] : undefined;
  if (Class) return new Class(message, { cause });
  const error = new Error(message, { cause });
  error.name = String(name);
  return error;
}

function msgpackrRegExp(value: unknown): RegExp {
  const [source, flags] = value as [string, string];
  return new RegExp(source, flags);
}

// Bundled strings are read from an offset the sender chooses, past the
// value that uses them: not a form a peer's message should take (in a
// small message's reused scratch buffer, bytes past its end are an earlier
// message's). Refused everywhere, for msgpackr's own reader works on its
// internal state and cannot be kept for others: a process that loads
// afunix cannot read msgpackr's `bundleStrings` output.
function bundledStrings(): never {
  throw notInProtocol("0x62 (msgpackr's bundled strings)");
}

const readers: Array<[number, (payload: Uint8Array) => unknown]> = [
  [EXT_TIMESTAMP, timestamp],
  [EXT_UNDEFINED, undefinedValue],
  [EXT_BIGINT, bigInt],
  [EXT_MSGPACKR_ERROR, foreign("0x65 (msgpackr's Error)", msgpackrError)],
  [EXT_MSGPACKR_SET, foreign("0x73 (msgpackr's Set)", (value) => new Set(value as Iterable<unknown>))],
  [EXT_MSGPACKR_REGEXP, foreign('0x78 (RegExp)', msgpackrRegExp)],
  [EXT_MSGPACKR_BUNDLE, bundledStrings],
];
// Reading only: msgpackr still writes these types itself.
for (const [type, unpack] of readers) addExtension({ type, unpack });
