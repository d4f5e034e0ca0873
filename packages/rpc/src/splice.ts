// Large Buffers are not copied into the message. prepare() wraps each in a
// Spliced; packing one writes only its bin header into msgpackr's output
// and notes where its bytes belong, and encode() sends the message as
// pieces (the packed bytes up to there, the caller's Buffer, the rest),
// which the framing layer gathers into one sendmsg. The bytes on the wire
// are exactly those of the Buffer packed in place: one 64 KiB copy (and
// msgpackr growing its buffer to hold it) fewer per message each way.
//
// Nothing outlives the message: no marker to search for, no table of
// Buffers waiting to be sent (a FinalizationRegistry for markers that were
// never sent kept every marker to a full GC: a 64 KiB echo paid one
// mark-compact per ~1 800 calls).
import { RESERVE_START_SPACE, addExtension } from './msgpack.js';

/** Buffers of at least this many bytes travel as pieces of their own. */
export const SPLICE_MIN = 16 * 1024;

// Extension types that never reach the wire (msgpackr needs one to call
// our pack()).
const EXT_SPLICED = 0x7e;
const EXT_MESSAGE = 0x7f;

export class Spliced {
  constructor(readonly bytes: Buffer) {}
}

/** A message with Spliced values in it: packing it first notes where the message starts. */
class SplicedMessage {
  constructor(readonly message: unknown) {}
}

type Allocate = (size: number) => { target: Uint8Array; position: number };
type PackNested = (value: unknown) => void;

// Where the message being packed starts in msgpackr's buffer, and the
// splices found so far: their offsets in the packed message, each followed
// by its Buffer. Set only while packSpliced() packs.
let startTarget: Uint8Array | null = null;
let startAt = 0;
let reserved = 0;
let found: Array<number | Buffer> | null = null;
// Spliced values made since the last encode: only then is a message
// packed with SplicedMessage around it (a plain message pays nothing).
let made = 0;

export function spliced(bytes: Buffer): Spliced {
  made++;
  return new Spliced(bytes);
}

/** Whether a Spliced value was made since the last packSpliced(): the next message needs it. */
export function splicesPending(): boolean {
  return made > 0;
}

function binHeaderSize(length: number): number {
  return length < 0x100 ? 2 : length < 0x10000 ? 3 : 5;
}

// The header msgpackr writes for a Buffer of this length: bin8, bin16 or bin32.
function writeBinHeader(target: Uint8Array, at: number, length: number): void {
  if (length < 0x100) {
    target[at] = 0xc4;
    target[at + 1] = length;
  } else if (length < 0x10000) {
    target[at] = 0xc5;
    target[at + 1] = length >> 8;
    target[at + 2] = length & 0xff;
  } else {
    target[at] = 0xc6;
    target[at + 1] = length >>> 24;
    target[at + 2] = (length >> 16) & 0xff;
    target[at + 3] = (length >> 8) & 0xff;
    target[at + 4] = length & 0xff;
  }
}

// msgpackr calls an extension's pack(value, allocate, pack), the form its
// own types use to write into its buffer directly; its typings only know
// pack(value). Nothing is ever received in these types: one that arrives is
// refused as any unknown type is.
function addWriter<T>(Class: new (...args: never[]) => T, type: number, write: (value: T, allocate: Allocate, pack: PackNested) => void): void {
  addExtension({
    Class,
    type,
    pack: write as unknown as (value: unknown) => Buffer,
    unpack: () => {
      throw new Error(`Unknown extension type ${type}`);
    },
  });
}

addWriter(SplicedMessage, EXT_MESSAGE, (m, allocate, pack) => {
  const { target, position } = allocate(0);
  startTarget = target;
  startAt = position - reserved;
  pack(m.message);
});

addWriter(Spliced, EXT_SPLICED, (s, allocate) => {
  const length = s.bytes.length;
  const header = binHeaderSize(length);
  if (!found) {
    // Packed outside packSpliced() (someone else's pack): in place.
    const { target, position } = allocate(header + length);
    writeBinHeader(target, position, length);
    target.set(s.bytes, position + header);
    return;
  }
  const { target, position } = allocate(header);
  writeBinHeader(target, position, length);
  // msgpackr moves a message that outgrows its buffer to the start of a
  // new one, so in any buffer but the first the message starts at 0.
  const offset = target === startTarget ? position - startAt : position;
  found.push(offset + header, s.bytes);
});

export interface Pieces {
  /** The packed message, or the pieces to send back to back. */
  bytes: Buffer | Buffer[];
  length: number;
}

/**
 * Packs a message, with any Spliced values in it as pieces of their own.
 * `reserve` bytes (up to 255) are left at the start of the first piece for
 * the caller to fill in.
 */
export function packSpliced(packr: { pack(value: unknown, options?: number): Buffer }, message: unknown, reserve = 0): Pieces {
  const options = reserve > 0 ? RESERVE_START_SPACE | reserve : undefined;
  if (made === 0) {
    const packed = packr.pack(message, options);
    return { bytes: packed, length: packed.length };
  }
  made = 0;
  const splices: Array<number | Buffer> = [];
  found = splices;
  reserved = reserve;
  let packed: Buffer;
  try {
    packed = packr.pack(new SplicedMessage(message), options);
  } finally {
    found = null;
    startTarget = null;
  }
  if (splices.length === 0) return { bytes: packed, length: packed.length };
  const pieces: Buffer[] = [];
  let length = packed.length;
  let from = 0;
  for (let i = 0; i < splices.length; i += 2) {
    const at = splices[i] as number;
    const bytes = splices[i + 1] as Buffer;
    if (at > from) pieces.push(packed.subarray(from, at));
    pieces.push(bytes);
    length += bytes.length;
    from = at;
  }
  if (from < packed.length) pieces.push(packed.subarray(from));
  return { bytes: pieces, length };
}
