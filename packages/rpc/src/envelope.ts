// The fixed part of the messages that carry a value, [kind, id?, name?,
// value], written and read here by hand; msgpackr packs and unpacks only
// the value. The bytes are exactly what msgpackr writes for the whole
// array (an array header, the kind as a positive fixint, the id as the
// smallest unsigned int, the name as fixstr or str8), so nothing changes on
// the wire. What is out of the ordinary (an id past 32 bits, a name that is
// not short ASCII, a message of another shape or written differently by
// another implementation) goes through msgpackr whole, as every message did.
import { type Encoded, decodeAt, encode, packLent, packMessage, takeDecodedFds } from './codec.js';
import type { Fd } from './fd.js';
import { Msg } from './protocol.js';

/** No id in this message (NOTIFY, EVENT). */
export const NO_ID = -1;

// What follows the kind in the messages read and written here.
const ID = 1;
const NAME = 2;
const LAYOUT: readonly number[] = (() => {
  const layout: number[] = [];
  layout[Msg.REQUEST] = ID | NAME;
  layout[Msg.NOTIFY] = NAME;
  layout[Msg.RESULT] = ID;
  layout[Msg.ERROR] = ID;
  layout[Msg.EVENT] = NAME;
  layout[Msg.STREAM_ITEM] = ID;
  return layout;
})();

// The envelope must fit the space msgpackr can reserve in front of a value:
// an array header, the kind, an id of up to 5 bytes, a str8 header and the name.
const MAX_ENVELOPE = 0xff;
const MAX_NAME = MAX_ENVELOPE - 9;

// Call ids grow through every width of msgpack's unsigned ints, and reach
// 65,536 long after this code was optimized: a branch per width that no id
// had taken yet deoptimized the send and receive paths right there (W2:
// some 60,000 calls at half speed while they were optimized again). So every
// width above a fixint runs the same statements, sized by a table.
const UINT_TYPE = [0, 0xcc, 0xcd, 0, 0xce];

// Bytes after the type byte: 0 for a positive fixint.
function uintBytes(n: number): number {
  return n < 0x80 ? 0 : n < 0x100 ? 1 : n < 0x10000 ? 2 : 4;
}

function writeUint(target: Buffer, at: number, n: number): number {
  const bytes = uintBytes(n);
  if (bytes === 0) {
    target[at] = n;
    return at + 1;
  }
  target[at] = UINT_TYPE[bytes]!;
  for (let i = bytes; i > 0; i--) {
    target[at + i] = n & 0xff;
    n >>>= 8;
  }
  return at + 1 + bytes;
}

// Bytes the name takes as fixstr or str8, or -1 if it is not short ASCII.
function asciiNameSize(name: string): number {
  const n = name.length;
  if (n > MAX_NAME) return -1;
  for (let i = 0; i < n; i++) if (name.charCodeAt(i) >= 0x80) return -1;
  return n < 0x20 ? 1 + n : 2 + n;
}

function writeName(target: Buffer, at: number, name: string): number {
  const n = name.length;
  if (n < 0x20) {
    target[at++] = 0xa0 | n;
  } else {
    target[at++] = 0xd9;
    target[at++] = n;
  }
  for (let i = 0; i < n; i++) target[at++] = name.charCodeAt(i);
  return at;
}

/** Encodes [kind, id, name, value], leaving out the id if NO_ID and the name if null. Fields of the value must be prepared. */
export function encodeMessage(kind: number, id: number, name: string | null, value: unknown, withStacks = false): Encoded {
  return encodeWith(packMessage, kind, id, name, value, withStacks);
}

/**
 * encodeMessage() for a message sent at once: the record is reused, and a
 * small message is lent (see packLent()), valid until the next encode.
 */
export function encodeMessageLent(kind: number, id: number, name: string | null, value: unknown, withStacks: boolean): Encoded {
  return encodeWith(packLent, kind, id, name, value, withStacks);
}

function encodeWith(pack: typeof packMessage, kind: number, id: number, name: string | null, value: unknown, withStacks: boolean): Encoded {
  const idSize = id === NO_ID ? 0 : id >= 0 && id <= 0xffffffff && Number.isInteger(id) ? 1 + uintBytes(id) : -1;
  const nameSize = name === null ? 0 : asciiNameSize(name);
  if (idSize < 0 || nameSize < 0) return encode(generic(kind, id, name, value), withStacks);
  const size = 2 + idSize + nameSize;
  const encoded = pack(value, size, withStacks);
  const head = Array.isArray(encoded.bytes) ? encoded.bytes[0]! : encoded.bytes;
  let at = encoded.start;
  head[at++] = 0x92 + (idSize > 0 ? 1 : 0) + (nameSize > 0 ? 1 : 0);
  head[at++] = kind;
  if (idSize > 0) at = writeUint(head, at, id);
  if (nameSize > 0) writeName(head, at, name!);
  return encoded;
}

function generic(kind: number, id: number, name: string | null, value: unknown): unknown[] {
  const message: unknown[] = [kind];
  if (id !== NO_ID) message.push(id);
  if (name !== null) message.push(name);
  message.push(value);
  return message;
}

/** A message read by readMessage(): valid until the next one is read. */
export interface Received {
  kind: number;
  /** NO_ID for a message without one. */
  id: number;
  name: string;
  value: unknown;
  /** Fd wrappers made for the value, to be closed if nobody takes them. */
  fds: Fd[] | null;
}

const received: Received = { kind: 0, id: NO_ID, name: '', value: undefined, fds: null };

/**
 * Reads a message that carries a value, in the form this side writes.
 * Returns null, having consumed nothing (fds included), for anything
 * else: decode() is then the way to read it.
 */
export function readMessage(payload: Buffer, fds: number[] | null, closeFd: (fd: number) => void): Received | null {
  const end = payload.length;
  if (end < 3) return null;
  const kind = payload[1]!;
  const layout = kind < 0x80 ? LAYOUT[kind] : undefined;
  if (layout === undefined || payload[0] !== 0x92 + (layout & ID) + ((layout & NAME) >> 1)) return null;
  let at = 2;
  let id = NO_ID;
  if ((layout & ID) !== 0) {
    at = readUint(payload, at, end);
    if (at < 0) return null;
    id = uintRead;
  }
  let name = '';
  if ((layout & NAME) !== 0) {
    at = readAscii(payload, at, end);
    if (at < 0) return null;
    name = asciiRead;
  }
  if (at >= end) return null;
  received.kind = kind;
  received.id = id;
  received.name = name;
  received.value = decodeAt(payload, at, end, fds, closeFd);
  received.fds = takeDecodedFds();
  return received;
}

// What readUint() and readAscii() read, beside the offset they return.
let uintRead = 0;
let asciiRead = '';

// Bytes after the type byte of the unsigned ints msgpackr writes, by type
// byte (0: none of them), read from a table for the reason UINT_TYPE is.
const UINT_BYTES = new Uint8Array(256);
UINT_BYTES[0xcc] = 1;
UINT_BYTES[0xcd] = 2;
UINT_BYTES[0xce] = 4;

// An unsigned int in the forms msgpackr writes; -1 for anything else.
function readUint(source: Buffer, at: number, end: number): number {
  const t = source[at]!;
  if (t < 0x80) {
    uintRead = t;
    return at + 1;
  }
  const bytes = UINT_BYTES[t]!;
  if (bytes === 0 || at + 1 + bytes > end) return -1;
  let n = 0;
  for (let i = 1; i <= bytes; i++) n = n * 0x100 + source[at + i]!;
  uintRead = n;
  return at + 1 + bytes;
}

// A fixstr or str8 of ASCII; -1 for anything else (msgpackr decodes other
// bytes, valid UTF-8 or not, in its own way, which this does not repeat).
function readAscii(source: Buffer, at: number, end: number): number {
  const t = source[at]!;
  let n: number;
  if (t >= 0xa0 && t < 0xc0) {
    n = t & 0x1f;
    at += 1;
  } else if (t === 0xd9 && at + 2 <= end) {
    n = source[at + 1]!;
    at += 2;
  } else {
    return -1;
  }
  if (at + n > end) return -1;
  asciiRead = lastName.length === n && sameAscii(source, at, lastName) ? lastName : (lastName = asciiString(source, at, n));
  return asciiRead === '' && n > 0 ? -1 : at + n;
}

// The last name read: calls to one method follow each other, and the same
// string again is no new string to make and hash for the handler lookup.
let lastName = '';

function sameAscii(source: Buffer, at: number, name: string): boolean {
  for (let i = 0; i < name.length; i++) if (source[at + i] !== name.charCodeAt(i)) return false;
  return true;
}

// '' (with n > 0) if a byte is not ASCII.
function asciiString(source: Buffer, at: number, n: number): string {
  let s = '';
  for (let i = at; i < at + n; i++) {
    const c = source[i]!;
    if (c >= 0x80) return '';
    s += String.fromCharCode(c);
  }
  return s;
}
