// Putting frames on the wire: gathered writes, never a copy of a large
// payload just to put a header in front of it, and small frames of one
// turn (a tick, or a native socket's batch: the reply to a read, a
// server's greeting) packed back to back so that they cost one write, not
// one each.
import type { Duplex } from 'node:stream';
import type { BatchEndListener, FdLike, SentCallback } from '@afunix/transport';
import { HEADER_SIZE, encodeHeader, writeHeader } from './header.js';

/** What a native socket (or the transport's net fallback) offers for sending. */
export interface GatheringSocket extends Duplex {
  /** `onSent` runs once the kernel has the fds (or refused them: with the error), or the socket closed before it got them. */
  send(data: Uint8Array | readonly Uint8Array[], fds?: readonly FdLike[] | null, onSent?: SentCallback): boolean;
  /** A native socket: inside one of its batches of writes, calls the listener at the batch's end and returns true. */
  atBatchEnd?(listener: BatchEndListener): boolean;
}

// Payloads up to this size are copied (header in front) rather than written
// as pieces of their own: a copy of a few hundred bytes costs less than one
// more write() and iovec. Measured over a socketpair, copying and gathering
// cost about the same between 1 and 4 KiB (within this machine's noise), so
// the cut is at the low end. Larger payloads are never copied.
export const SMALL_FRAME = 1024;
// Small frames are packed into slabs of this size: under half of Node's
// Buffer pool, so a slab is a cheap slice of the pool and never a fresh
// allocation of its own.
const SLAB_SIZE = 4095;

function copyPieces(target: Buffer, at: number, pieces: readonly Uint8Array[]): number {
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i]!;
    target.set(piece, at);
    at += piece.byteLength;
  }
  return at;
}

// A copy of source[start, end) into target at `at`; returns the end. Short
// ranges byte by byte: set() or copy() of a part of a buffer makes a view
// of it first, an object per frame.
const SHORT_COPY = 128;

function copyRange(target: Buffer, at: number, source: Uint8Array, start: number, end: number): number {
  if (end - start > SHORT_COPY) {
    target.set(source.subarray(start, end), at);
    return at + end - start;
  }
  for (let i = start; i < end; i++) target[at++] = source[i]!;
  return at;
}

/** Header and payload in one new buffer: for small frames only. */
export function joinFrame(pieces: readonly Uint8Array[], length: number, fdCount: number): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_SIZE + length);
  writeHeader(frame, 0, length, fdCount);
  copyPieces(frame, HEADER_SIZE, pieces);
  return frame;
}

// joinFrame() of source[start, end).
function joinRange(source: Uint8Array, start: number, end: number): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_SIZE + end - start);
  writeHeader(frame, 0, end - start, 0);
  copyRange(frame, HEADER_SIZE, source, start, end);
  return frame;
}

/** The FlushListener method's key: not a name, so it stays off the channel's public surface. */
export const kRoomAfterFlush = Symbol('afunix.roomAfterFlush');

/** Hears that a turn's packed frames went out and the stream still has room. */
export interface FlushListener {
  [kRoomAfterFlush](): void;
}

export interface FrameWriterTarget {
  stream: Duplex;
  /** Set for sockets with a gathering send() (and fds). */
  socket: GatheringSocket | null;
  /** seqpacket: every write is a message, so every frame must be one write. */
  messages: boolean;
}

/**
 * Writes frames to a socket or Duplex. On a byte stream, the first small
 * fd-less frame of a turn is written at once (a lone message pays no extra
 * hop); the ones after it are packed into a slab, written when it is full
 * or when the turn ends (the tick, or the native socket's batch).
 * Anything else first writes what is packed, so frames leave in the order
 * they were sent.
 */
export class FrameWriter implements BatchEndListener {
  #stream: Duplex;
  #socket: GatheringSocket | null;
  #messages: boolean;
  #slab: Buffer | null = null;
  #start = 0; // slab bytes before this were written already
  #end = 0;
  #inTick = false;
  #corked = false;
  #listener: FlushListener;

  constructor(target: FrameWriterTarget, listener: FlushListener) {
    this.#stream = target.stream;
    this.#socket = target.socket;
    this.#messages = target.messages;
    this.#listener = listener;
  }

  /** Bytes packed and not yet handed to the stream. */
  get pending(): number {
    return this.#end - this.#start;
  }

  /** Returns false when the stream (with what is packed) is over its high-water mark. */
  write(pieces: readonly Uint8Array[], length: number, fds: readonly FdLike[] | null, onSent: SentCallback | null): boolean {
    if (!fds && length <= SMALL_FRAME) {
      if (this.#messages) return this.#put(joinFrame(pieces, length, 0));
      if (!this.#inTick) {
        this.#beginTick();
        return this.#put(joinFrame(pieces, length, 0));
      }
      this.#pack(pieces, length);
      return this.#hasRoom();
    }
    this.flush();
    const header = encodeHeader(length, fds ? fds.length : 0);
    if (this.#socket) {
      const data = [header, ...pieces];
      if (!fds) return this.#socket.send(data);
      return onSent ? this.#socket.send(data, fds, onSent) : this.#socket.send(data, fds);
    }
    // A plain Duplex has no gathering send: header and payload go as
    // separate writes, which the tick's cork delivers to _writev together.
    if (!this.#inTick) this.#beginTick();
    let ok = this.#stream.write(header);
    for (const piece of pieces) if (piece.byteLength > 0) ok = this.#stream.write(piece);
    return ok;
  }

  /**
   * write() of one small fd-less payload, source[start, end) (at most
   * SMALL_FRAME bytes), copied before this returns: the caller may reuse
   * `source` at once, and no view of it is made.
   */
  writeCopy(source: Uint8Array, start: number, end: number): boolean {
    if (this.#messages) return this.#put(joinRange(source, start, end));
    if (!this.#inTick) {
      this.#beginTick();
      return this.#put(joinRange(source, start, end));
    }
    const at = this.#reserve(end - start);
    this.#end = copyRange(this.#slab!, at, source, start, end);
    return this.#hasRoom();
  }

  /** Hands what is packed to the stream now; returns what write() said. */
  flush(): boolean {
    if (this.#end === this.#start) return true;
    const chunk = this.#slab!.subarray(this.#start, this.#end);
    this.#start = this.#end;
    return this.#put(chunk);
  }

  // A socket's send() takes a frame straight to its queue when nothing
  // waits in its Writable; a plain Duplex gets a write().
  #put(chunk: Buffer): boolean {
    return this.#socket ? this.#socket.send(chunk) : this.#stream.write(chunk);
  }

  // Hands what is packed to the stream and lets go of the slab before the
  // write: a frame that an onSent callback sends during it (the queue may
  // flush, and fds leave, inside write()) goes to a slab of its own rather
  // than into one about to be dropped.
  #retireSlab(): boolean {
    const slab = this.#slab;
    const start = this.#start;
    const end = this.#end;
    this.#slab = null;
    this.#start = this.#end = 0;
    return end === start ? true : this.#put(slab!.subarray(start, end));
  }

  /** Forgets what is packed (the stream is gone). */
  discard(): void {
    this.#slab = null;
    this.#start = this.#end = 0;
  }

  #hasRoom(): boolean {
    const s = this.#stream;
    return !s.writableNeedDrain && s.writableLength + this.pending < s.writableHighWaterMark;
  }

  #pack(pieces: readonly Uint8Array[], length: number): void {
    const at = this.#reserve(length);
    this.#end = copyPieces(this.#slab!, at, pieces);
  }

  // Room in the slab for a frame of `length` payload bytes, its header
  // written: returns where its payload goes.
  #reserve(length: number): number {
    const size = HEADER_SIZE + length;
    // (An onSent callback run by the write may have packed into a new slab.)
    while (this.#slab && this.#end + size > this.#slab.length) this.#retireSlab();
    this.#slab ??= Buffer.allocUnsafe(Math.max(SLAB_SIZE, size));
    writeHeader(this.#slab, this.#end, length, 0);
    return this.#end + HEADER_SIZE;
  }

  // A native socket coalesces one tick's writes into one sendmsg by
  // itself; any other Duplex is corked for the tick, so that they reach its
  // _writev together (one writev for a net.Socket). Inside a native
  // socket's batch (a read being delivered, a server's greeting) the turn
  // ends with the batch, just before its writes leave: no tick, and what is
  // packed leaves in the same sendmsg.
  #beginTick(): void {
    this.#inTick = true;
    if (this.#socket?.atBatchEnd?.(this)) return;
    if (!this.#socket && !this.#corked) {
      this.#corked = true;
      this.#stream.cork();
    }
    process.nextTick(endTick, this);
  }

  /** @internal The turn is over (its tick, or the socket's batch, ended). */
  batchEnded(): void {
    this.#inTick = false;
    if (this.#stream.destroyed) return this.discard();
    // The slab's tail is not kept: an idle connection holds no memory.
    const ok = this.#retireSlab();
    if (this.#corked) {
      this.#corked = false;
      this.#stream.uncork();
    }
    if (ok && !this.#stream.writableNeedDrain) this.#listener[kRoomAfterFlush]();
  }
}

function endTick(writer: FrameWriter): void {
  writer.batchEnded();
}
