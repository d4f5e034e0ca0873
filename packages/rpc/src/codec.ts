// Messages are msgpack arrays. Beyond plain msgpack (and msgpackr's standard
// types: Date as timestamp, undefined, BigInt, typed arrays, checked as they
// are read in builtins.ts), four extension types carry what an RPC needs:
// Map, Error, Fd and Set. docs/PROTOCOL.md gives the byte-level definitions.
import { readingMessage } from './builtins.js';
import { SMALL_FRAME } from '@afunix/framing';
import { EXTRACTABLE, Packr, RESERVE_START_SPACE, RESET_BUFFER_MODE, REUSE_BUFFER_MODE, Unpackr, addExtension, decodedExtractable } from './msgpack.js';
import { RpcCode, RpcError, errorToRecord, recordToError, rpcError, stackless } from './errors.js';
import { Fd, sendsDone } from './fd.js';
import { MapBox, prepareNested } from './prepare.js';
import { packSpliced, splicesPending } from './splice.js';

export { MAX_DEPTH, prepareValue } from './prepare.js';
export { SPLICE_MIN } from './splice.js';

export const EXT_MAP = 1;
export const EXT_ERROR = 2;
export const EXT_FD = 3;
export const EXT_SET = 4;

// Extension callbacks get no per-call context: encoding and decoding are
// synchronous, so the message being worked on lives here meanwhile.
let outgoingFds: number[] | null = null;
let outgoingTransfers: Fd[] | null = null;
let incomingFds: number[] | null = null;
let incomingWrapped: Fd[] | null = null;
let sendStacks = false;

// Every extension's payload is itself one msgpack value (packed with the
// same options, re-entrantly), so a peer in another language decodes a
// message with any msgpack library plus these three small rules.
// (msgpackr's write()/read() form would put the value after the ext
// object instead of inside it, which other decoders cannot follow.)
let packr: Packr;

// Decoding an extension's payload inside its unpack callback (a nested
// msgpackr unpack()) makes msgpackr save the outer decoder's state, which
// copies the outer source whole: a message holding n Maps cost n copies of
// itself (16 000 small Maps in 212 KB took 10 s to decode, and a peer's
// hello is decoded before it is authenticated). So the callbacks return the
// Map, Set or Error at once, empty, and queue its payload; decode() fills
// them after the outer unpack, each payload in an unpack of its own (which
// may queue more). Every byte is decoded once, and nesting costs no stack.
type Filled = Map<unknown, unknown> | Set<unknown> | RpcError;
let decoding = false;
let fills: Array<{ target: Filled; payload: Buffer }> | null = null;

function later<T extends Filled>(target: T, payload: Buffer): T {
  if (decoding) (fills ??= []).push({ target, payload });
  else fill(target, payload); // outside decode() (someone else's unpack): at once
  return target;
}

function fill(target: Filled, payload: Buffer): void {
  const value = unpacker.unpack(payload) as unknown;
  if (target instanceof Map) {
    if (!Array.isArray(value) || value.length % 2 !== 0) throw rpcError(RpcCode.PROTOCOL_ERROR, 'malformed Map extension');
    for (let i = 0; i < value.length; i += 2) target.set(value[i], value[i + 1]);
  } else if (target instanceof Set) {
    if (!Array.isArray(value)) throw rpcError(RpcCode.PROTOCOL_ERROR, 'malformed Set extension');
    for (const item of value) target.add(item);
  } else {
    recordToError(value, 0, target);
  }
}

// The Error a received error value decodes into, filled in later. Its stack
// would show only the decoder, and capturing it was most of the cost of a
// message full of errors (29 us each): it gets none.
function placeholderError(): RpcError {
  return stackless('');
}

// An Fd's payload is a small non-negative integer, read here directly (a
// nested unpack would copy the message once per fd).
function fdIndex(p: Buffer): number | null {
  const t = p[0];
  let n: number | null = null;
  if (t !== undefined && t < 0x80 && p.length === 1) n = t;
  else if (t === 0xcc && p.length === 2) n = p.readUInt8(1);
  else if (t === 0xcd && p.length === 3) n = p.readUInt16BE(1);
  else if (t === 0xce && p.length === 5) n = p.readUInt32BE(1);
  else if (t === 0xd0 && p.length === 2) n = p.readInt8(1);
  else if (t === 0xd1 && p.length === 3) n = p.readInt16BE(1);
  else if (t === 0xd2 && p.length === 5) n = p.readInt32BE(1);
  return n !== null && n >= 0 ? n : null;
}

addExtension({
  Class: MapBox,
  type: EXT_MAP,
  pack: (box: MapBox) => packr.pack(box.flat),
  unpack: (payload: Buffer) => later(new Map(), payload),
});

addExtension({
  Class: Set,
  type: EXT_SET,
  pack: (set: Set<unknown>) => packr.pack([...set]),
  unpack: (payload: Buffer) => later(new Set(), payload),
});

addExtension({
  Class: Error,
  type: EXT_ERROR,
  // The record goes through prepare() like any value: Maps in `data` keep
  // their type, and what cannot travel is an ENCODE_ERROR with its path.
  pack: (err: Error) => packr.pack(prepareNested(errorToRecord(err, sendStacks), 'error')),
  unpack: (payload: Buffer) => later(placeholderError(), payload),
});

// An Fd's payload, the msgpack encoding of its index, written here: a nested
// packr.pack() inside an extension callback allocates a fresh 8 KiB buffer
// each time (5 us per message with an fd, against 1 us without).
const FD_INDEX_BYTES = Array.from({ length: 256 }, (_, i) => Buffer.from(i < 0x80 ? [i] : [0xcc, i]));

function fdIndexBytes(index: number): Buffer {
  return FD_INDEX_BYTES[index] ?? packr.pack(index);
}

addExtension({
  Class: Fd,
  type: EXT_FD,
  pack: (fd: Fd) => {
    outgoingFds ??= [];
    outgoingFds.push(fd.fd);
    if (fd.holdForSend()) (outgoingTransfers ??= []).push(fd);
    return fdIndexBytes(outgoingFds.length - 1);
  },
  unpack: (payload: Buffer) => {
    const index = fdIndex(payload);
    const fds = incomingFds;
    if (!fds || index === null || !(index in fds) || fds[index]! < 0) {
      throw rpcError(RpcCode.PROTOCOL_ERROR, `Fd extension refers to fd #${String(index)}, which did not come with the message`);
    }
    const fd = Fd.received(fds[index]!);
    fds[index] = -1; // each fd may be referred to once
    (incomingWrapped ??= []).push(fd);
    return fd;
  },
});

const OPTIONS = { moreTypes: true, useRecords: false, int64AsType: 'bigint', structuredClone: false } as const;
packr = new Packr(OPTIONS);

// Small messages are unpacked from a copy in a buffer of our own, reused:
// msgpackr makes a DataView for every new source it reads (and adds it to
// the Buffer as a property), which was 40% of unpacking a small message;
// copying its bytes costs a tenth of that. Nothing decoded may point into
// that buffer, so there Buffers (bin) are copied out (copyBuffers), and
// the extensions' payloads, views of it, are all read before decodeAt()
// returns. Larger messages are read where they are, their Buffers views
// of the frame: no copy of a large payload.
const SMALL_MESSAGE = 1024;
const scratch = Buffer.allocUnsafeSlow(SMALL_MESSAGE);
const copying = new Unpackr({ ...OPTIONS, copyBuffers: true });
// The unpacker of the message being decoded (fill() uses the same).
let unpacker: Unpackr = packr;

export interface Encoded {
  /** The message: one Buffer, or pieces to send back to back (large Buffers are not copied in). */
  bytes: Buffer | Buffer[];
  /** Its length in bytes. */
  length: number;
  fds: number[] | null;
  /**
   * The Fds this message holds open (Fd.holdForSend(): transfers, and
   * received ones passed on): sendsDone() of them once it has left, or
   * never will.
   */
  transfers: Fd[] | null;
  /**
   * Set by packLent() for a small message left where the packer wrote it:
   * `bytes` is then the packer's own buffer, the message at [start, start +
   * length), overwritten by the next pack.
   */
  lent: boolean;
  /** Where the message starts in `bytes` (0 unless lent). */
  start: number;
}

/** Encodes a message whose fields were already prepared. */
export function encode(message: unknown[], withStacks = false): Encoded {
  return packMessage(message, 0, withStacks);
}

/**
 * Encodes one prepared value, leaving `reserve` bytes (up to 255) at the
 * start of the first piece for the caller to fill in (envelope.ts).
 */
export function packMessage(value: unknown, reserve: number, withStacks: boolean): Encoded {
  return packing(packViews, value, reserve, withStacks);
}

// What the extensions note while a message is packed (its fds, the Fds it
// gives away, whether errors take their stacks) is set up around `pack`,
// and put back as it was whatever it does; the Fds it held are let go if
// it fails. (Put back, not cleared: a getter in a value may send a message
// of its own while this one is packed, a logger say, and that message
// must not take this one's fds.) (`pack` is a module function, not a
// closure: no allocation per message.)
function packing(pack: (value: unknown, reserve: number) => Encoded, value: unknown, reserve: number, withStacks: boolean): Encoded {
  const outer = outgoingFds;
  const outerTransfers = outgoingTransfers;
  const outerStacks = sendStacks;
  outgoingFds = null;
  outgoingTransfers = null;
  sendStacks = withStacks;
  try {
    return pack(value, reserve);
  } catch (err) {
    sendsDone(outgoingTransfers);
    throw encodeFailure(err);
  } finally {
    outgoingFds = outer;
    outgoingTransfers = outerTransfers;
    sendStacks = outerStacks;
  }
}

function packViews(value: unknown, reserve: number): Encoded {
  const { bytes, length } = packSpliced(packr, value, reserve);
  return { bytes, length, fds: outgoingFds, transfers: outgoingTransfers, lent: false, start: 0 };
}

// The most a lent message may take is what the framing layer copies into
// its own slab anyway (SMALL_FRAME): a larger one keeps its bytes.
// The record packLent() fills, one for every message.
const lentRecord: Encoded = { bytes: scratch, length: 0, fds: null, transfers: null, lent: false, start: 0 };

/**
 * packMessage() for a message sent at once: the record it returns is
 * reused by the next call. A small message without fds stays in the
 * packer's buffer, lent (see Encoded.lent), which the next message packs
 * over: each message copied out of it costs no Buffer of its own, and the
 * packer never moves on to fresh memory (a new 8 KiB buffer every ~150
 * calls, and a view of it for each).
 */
export function packLent(value: unknown, reserve: number, withStacks: boolean): Encoded {
  if (splicesPending()) return packMessage(value, reserve, withStacks);
  return packing(packInPlace, value, reserve, withStacks);
}

function packInPlace(value: unknown, reserve: number): Encoded {
  const packed = packr.pack(value, REUSE_BUFFER_MODE | RESET_BUFFER_MODE | RESERVE_START_SPACE | reserve) as Buffer & { start: number; end: number };
  return lend(packed, packed.start, packed.end);
}

// packr's buffer holds the message at [start, end), and packr will write
// the next one over it: it stays there only if it is small and fd-less
// (sent by copying it at once); otherwise packr moves past it, and it
// travels as a view, as packMessage()'s messages do.
function lend(packed: Buffer, start: number, end: number): Encoded {
  const record = lentRecord;
  record.fds = outgoingFds;
  record.transfers = outgoingTransfers;
  record.length = end - start;
  if (outgoingFds === null && end - start <= SMALL_FRAME) {
    record.bytes = packed;
    record.start = start;
    record.lent = true;
  } else {
    packr.position = end;
    record.bytes = packed.subarray(start, end);
    record.start = 0;
    record.lent = false;
  }
  return record;
}

// Each error inside a value is packed on its own (a nested pack), its walk
// starting again at depth 0, so prepare()'s depth limit does not see a
// cycle through errors (e.data = { me: e }) or a value that nests deep
// through them: the stack overflows instead. That, and msgpackr's own
// RangeErrors, are the value failing to encode, with a code to say so.
function encodeFailure(err: unknown): unknown {
  if (!(err instanceof RangeError)) return err;
  return new RpcError(`cannot encode the value: ${err.message} (nested too deep through errors, or a cycle through an error's data?)`, {
    code: RpcCode.ENCODE_ERROR,
    cause: err,
  });
}

export interface Decoded {
  message: unknown;
  /** Fd wrappers created for this message, to be closed if nobody takes them. */
  fds: Fd[] | null;
}

/**
 * Decodes a message. fds the message did not refer to are closed here; a
 * message that fails to decode has all of its fds closed.
 */
export function decode(payload: Uint8Array, fds: number[] | null, closeFd: (fd: number) => void): Decoded {
  const message = decodeAt(payload, 0, payload.length, fds, closeFd);
  return { message, fds: takeDecodedFds() };
}

// msgpackr's unpack options, reused: it reads them on entry only.
const range = { start: 0, end: 0 };

// One msgpack value from source[start..end) (the value after an envelope
// that readMessage() read itself, or a whole message). A range of a larger
// buffer is not for anything else: msgpackr takes a source that ends past
// 140 bytes for a large message and hands its strings to the native
// extractor, which costs a small message more than it saves.
function unpackRange(source: Uint8Array, start: number, end: number): unknown {
  const length = end - start;
  if (length >= EXTRACTABLE) decodedExtractable(length);
  // (An end of 0 would mean "to the end of the source" to msgpackr.)
  if (length > 0 && length <= SMALL_MESSAGE) {
    copyBytes(source, start, end);
    unpacker = copying;
    range.start = 0;
    range.end = length;
    return copying.unpack(scratch, range);
  }
  unpacker = packr;
  if (start === 0 && end === source.length) return packr.unpack(source);
  if (length === 0) return packr.unpack(source.subarray(start, end));
  range.start = start;
  range.end = end;
  return packr.unpack(source, range);
}

// Byte by byte: Buffer#copy() of a part of its source, and subarray(),
// each make a view of it first, an object per message received.
function copyBytes(source: Uint8Array, start: number, end: number): void {
  for (let i = start, j = 0; i < end; i++, j++) scratch[j] = source[i]!;
}

let decodedFds: Fd[] | null = null;

/**
 * decode() of source[start..end), returning the value; the Fd wrappers it
 * made are taken with takeDecodedFds() right after.
 */
export function decodeAt(source: Uint8Array, start: number, end: number, fds: number[] | null, closeFd: (fd: number) => void): unknown {
  incomingFds = fds;
  incomingWrapped = null;
  decoding = true;
  readingMessage(true);
  let value: unknown;
  try {
    value = unpackRange(source, start, end);
    // The extensions queued meanwhile (filling them may queue more).
    for (let i = 0; fills && i < fills.length; i++) fill(fills[i]!.target, fills[i]!.payload);
  } catch (err) {
    // (The extension callbacks above fill incomingWrapped during unpack.)
    for (const fd of (incomingWrapped as Fd[] | null) ?? []) fd.close();
    incomingWrapped = null;
    throw err instanceof Error && (err as { code?: string }).code
      ? err
      : rpcError(RpcCode.PROTOCOL_ERROR, `undecodable message: ${(err as Error).message}`);
  } finally {
    decoding = false;
    readingMessage(false);
    fills = null;
    unpacker = packr;
    if (fds) for (const fd of fds) if (fd >= 0) closeFd(fd);
    incomingFds = null;
  }
  decodedFds = incomingWrapped;
  incomingWrapped = null;
  return value;
}

/** The Fd wrappers of the last decodeAt(). */
export function takeDecodedFds(): Fd[] | null {
  const fds = decodedFds;
  decodedFds = null;
  return fds;
}

/** A message as one contiguous Buffer (for tools and tests; the send path uses the pieces). */
export function encodeToBuffer(message: unknown[], withStacks = false): Buffer {
  const { bytes } = encode(message, withStacks);
  return Array.isArray(bytes) ? Buffer.concat(bytes) : bytes;
}
