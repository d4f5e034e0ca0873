// msgpackr's own extension types, as a peer may send them. msgpackr takes
// a malformed payload for something: a timestamp of any length is an
// Invalid Date, one with 1.5 billion nanoseconds rolls over into the next
// second, a 96-bit one beyond 2^48 seconds loses its high bits, and
// `undefined` takes any payload. Some of its types (Error, Set, RegExp,
// bundled strings) read the value after their payload, which is not how
// afunix frames a value (PROTOCOL.md 2.3). The readers below replace
// msgpackr's for those types, process-wide as every extension is: each
// checks its payload as it reads it, no pass of its own over the message,
// and fails with PROTOCOL_ERROR. The typed arrays (0x74) are left to
// msgpackr, which already throws for every malformed payload.
import { addExtension } from 'msgpackr';
import { RpcCode, type RpcError, describeThrown, rpcError } from './errors.js';

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

// msgpackr's Error, Set and bundled strings: an afunix sender writes its own
// Error and Set (2 and 4) and no bundles, and their form, the value after
// the extension, is not one a peer's decoder can frame.
function foreign(name: string): () => never {
  return () => {
    throw rpcError(RpcCode.PROTOCOL_ERROR, `extension ${name} is msgpackr's own, not part of the protocol`);
  };
}

// A RegExp is the exception: an afunix sender writes one as msgpackr does,
// fixext 1 followed by [source, flags], for which msgpackr calls `read`
// with that value. Any other form, or any other value, is refused.
function regExp(): never {
  throw malformed('RegExp', 'not fixext 1 followed by [source, flags]');
}
regExp.read = (value: unknown): RegExp => {
  if (!Array.isArray(value) || value.length !== 2 || typeof value[0] !== 'string' || typeof value[1] !== 'string') {
    throw malformed('RegExp', 'not followed by [source, flags]');
  }
  try {
    return new RegExp(value[0], value[1]);
  } catch (err) {
    throw malformed('RegExp', describeThrown(err));
  }
};

const readers: Array<[number, (payload: Uint8Array) => unknown]> = [
  [EXT_TIMESTAMP, timestamp],
  [EXT_UNDEFINED, undefinedValue],
  [EXT_BIGINT, bigInt],
  [EXT_MSGPACKR_ERROR, foreign('0x65 (Error)')],
  [EXT_MSGPACKR_SET, foreign('0x73 (Set)')],
  [EXT_MSGPACKR_BUNDLE, foreign('0x62 (bundled strings)')],
  [EXT_MSGPACKR_REGEXP, regExp],
];
// Reading only: msgpackr still writes these types itself.
for (const [type, unpack] of readers) addExtension({ type, unpack });
