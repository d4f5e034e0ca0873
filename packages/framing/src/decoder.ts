// FrameDecoder: bytes in, whole frames out. Pure: no I/O, no timers, and it
// never closes an fd (it only hands them on), so it can be fuzzed as is.
//
// Where fds belong (docs/PROTOCOL.md 1.4): the fds that arrive with a chunk
// belong to the frames that *start* in that chunk, taken in order, each as
// many as its header declares; they must add up exactly. A frame's first
// byte is where the sender attached them, and the kernel never moves fds
// later than the read holding that byte, so any other placement is a
// protocol error rather than something to guess about.
import { FramingError, invalidArg } from './errors.js';
import {
  HEADER_SIZE,
  type FrameLimits,
  type ResolvedLimits,
  checkHeader,
  checkHeaderPrefix,
  resolveLimits,
} from './header.js';

export type FrameHandler = (payload: Buffer, fds: number[] | null) => void;

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function countOf(fds: readonly number[] | null | undefined): number {
  return fds ? fds.length : 0;
}

function misplacedFds(detail: string): FramingError {
  return new FramingError('PROTOCOL_ERROR', `file descriptors out of place: ${detail}`);
}

export class FrameDecoder {
  #limits: ResolvedLimits;
  #onFrame: FrameHandler;
  #thisArg: unknown;
  // A header that arrived in pieces: its bytes so far.
  // (Made when a header first arrives split: most connections never need it.)
  #head: Buffer | null = null;
  #headFill = 0;
  // A payload that spans reads, assembled in one allocation of its exact size.
  #body: Buffer | null = null;
  #bodyFill = 0;
  // fds of the frame in progress: those it declared (while its payload is
  // assembled), or those left over from the chunk its header started in.
  #held: number[] | null = null;
  // The fds of the push in progress and how many frames took so far, kept on
  // the instance so that an exception from onFrame can account for the rest.
  #pushFds: number[] | null = null;
  #pushFdsTaken = 0;
  #handlerThrew = false;
  #failure: unknown = null;

  /**
   * `onFrame` is called with `thisArg` as `this` (the decoder if none): an
   * owner of many decoders can pass one shared function rather than a
   * closure for each.
   */
  constructor(onFrame: FrameHandler, limits?: FrameLimits | null, thisArg?: unknown) {
    if (typeof onFrame !== 'function') throw invalidArg('onFrame', `must be a function; received ${typeof onFrame}`);
    this.#onFrame = onFrame;
    this.#thisArg = thisArg ?? this;
    this.#limits = resolveLimits(limits);
  }

  get limits(): ResolvedLimits {
    return this.#limits;
  }

  /** New limits, for every frame whose header has not arrived yet. */
  setLimits(limits: FrameLimits | null): void {
    this.#limits = resolveLimits(limits);
  }

  /**
   * Bytes held while a frame that spans reads completes (its header
   * included): 0 exactly when no frame is in progress.
   */
  get buffered(): number {
    return this.#body ? HEADER_SIZE + this.#bodyFill : this.#headFill;
  }

  /**
   * The payload being assembled, when a frame spans reads, and how much of
   * it has arrived: a transport may read the rest straight into it, and
   * push() a view of exactly that place, which it then takes as is.
   */
  get partialBody(): Buffer | null {
    return this.#body;
  }

  get partialFill(): number {
    return this.#bodyFill;
  }

  /** fds held for the incomplete frame (they are still the decoder's, see reset()). */
  get heldFds(): number {
    return countOf(this.#held);
  }

  /**
   * Feeds one chunk of a byte stream, with the fds that arrived with it.
   * Every frame completed by it goes to onFrame before push() returns.
   *
   * Throws a FramingError when the peer broke the protocol; the decoder is
   * then failed (every later push rethrows it, taking none of its fds)
   * until reset(). The decoder closes no fds, ever. None of the fds passed
   * to a push that throws a FramingError have been handed to onFrame: they
   * remain the caller's to close. fds held from earlier pushes come back
   * from reset().
   *
   * onFrame should not throw. If it does, or anything other than a
   * FramingError is thrown (the allocation of a large frame's buffer can
   * fail), the exception propagates, the decoder is failed, and the fds of
   * this push it had not handed out yet join those that reset() returns.
   */
  push(chunk: Uint8Array, fds?: number[] | null): void {
    if (this.#failure) throw this.#failure;
    const bytes = asBuffer(chunk);
    const chunkFds = fds && fds.length > 0 ? fds : null;
    this.#pushFds = chunkFds;
    this.#pushFdsTaken = 0;
    try {
      const offset = this.#headFill > 0 || this.#body ? this.#continueFrame(bytes) : 0;
      // Validate everything first when fds came along, so that a violation
      // later in the chunk cannot strand fds already handed to onFrame.
      if (chunkFds) this.#checkStartingFrames(bytes, offset, chunkFds.length);
      this.#decodeFrom(bytes, offset);
    } catch (err) {
      this.#fail(err);
      throw err;
    } finally {
      this.#pushFds = null;
    }
  }

  /**
   * Feeds one seqpacket message: it must hold exactly one whole frame, and
   * `fds` must be exactly the fds its header declares. Errors and fd
   * ownership as for push().
   */
  pushMessage(packet: Uint8Array, fds?: number[] | null): void {
    if (this.#failure) throw this.#failure;
    const bytes = asBuffer(packet);
    try {
      const length = this.#checkPacket(bytes, countOf(fds));
      this.#deliver(bytes.subarray(HEADER_SIZE, HEADER_SIZE + length), bytes[3]! > 0 ? fds!.slice() : null);
    } catch (err) {
      this.#fail(err);
      throw err;
    }
  }

  /**
   * Drops any partial frame and clears a failure. Returns the fds the
   * decoder was still holding (for an incomplete frame, or not yet handed
   * out when onFrame threw): closing them is the caller's job now.
   */
  reset(): number[] {
    const held = this.#held ?? [];
    this.#held = null;
    this.#headFill = 0;
    this.#body = null;
    this.#bodyFill = 0;
    this.#failure = null;
    this.#handlerThrew = false;
    return held;
  }

  #fail(err: unknown): void {
    this.#failure = err;
    const handlerThrew = this.#handlerThrew;
    this.#handlerThrew = false;
    // Our own FramingErrors come before any of the push's fds is handed out
    // (they stay the caller's). Anything else may come after some were: an
    // exception from onFrame, or a failed allocation for a later frame.
    if ((err instanceof FramingError && !handlerThrew) || !this.#pushFds) return;
    // The fds of this push not yet handed out stay with us.
    const rest = this.#pushFds.slice(this.#pushFdsTaken);
    this.#held = this.#held ? this.#held.concat(rest) : rest;
  }

  // Completes the frame begun in an earlier chunk; returns where the
  // next frame starts in `bytes` (or bytes.length).
  #continueFrame(bytes: Buffer): number {
    let offset = 0;
    if (this.#headFill > 0) {
      const head = this.#head!;
      offset = Math.min(HEADER_SIZE - this.#headFill, bytes.length);
      bytes.copy(head, this.#headFill, 0, offset);
      this.#headFill += offset;
      checkHeaderPrefix(head, 0, this.#headFill);
      if (this.#headFill < HEADER_SIZE) {
        this.#checkHeldHeader(this.#headFill);
        return offset;
      }
      this.#headFill = 0;
      const length = checkHeader(head, 0, this.limits);
      this.#checkHeldFds(head[3]!);
      if (offset + length > bytes.length) this.#checkBufferLimit(length);
      // Nothing can fail from here on: the held fds pass to the frame.
      const fds = this.#held;
      this.#held = null;
      return this.#startPayload(bytes, offset, length, fds);
    }
    const body = this.#body!;
    const take = Math.min(body.length - this.#bodyFill, bytes.length);
    if (!isAt(bytes, body, this.#bodyFill)) bytes.copy(body, this.#bodyFill, 0, take);
    this.#bodyFill += take;
    if (this.#bodyFill === body.length) this.#finishBody();
    return take;
  }

  // The fds left over from the chunk where a split header began are exactly
  // what that header must declare: no later frame started in that chunk.
  #checkHeldFds(declared: number): void {
    const held = countOf(this.#held);
    if (held !== declared) throw misplacedFds(`a frame declares ${declared} fds but ${held} arrived with its first byte`);
  }

  // A frame whose header ends at `start`: hand it out as a view if it lies
  // whole in `bytes`, otherwise start assembling it (the caller checked the
  // buffer limit). Returns the new offset.
  #startPayload(bytes: Buffer, start: number, length: number, fds: number[] | null): number {
    const end = start + length;
    if (end <= bytes.length) {
      this.#deliver(bytes.subarray(start, end), fds);
      return end;
    }
    // Held before the allocation: if that fails, reset() still has them.
    this.#held = fds;
    const body = Buffer.allocUnsafe(length);
    this.#bodyFill = bytes.copy(body, 0, start);
    this.#body = body;
    return bytes.length;
  }

  #finishBody(): void {
    const body = this.#body!;
    const fds = this.#held;
    this.#body = null;
    this.#bodyFill = 0;
    this.#held = null;
    this.#deliver(body, fds);
  }

  #checkBufferLimit(payloadLength: number): void {
    if (HEADER_SIZE + payloadLength > this.limits.maxBuffered) {
      throw new FramingError(
        'BUFFER_LIMIT',
        `a frame of ${payloadLength} bytes spans reads and would need ${HEADER_SIZE + payloadLength} bytes buffered; maxBuffered is ${this.limits.maxBuffered}`,
      );
    }
  }

  #checkHeldHeader(bytes: number): void {
    if (bytes > this.limits.maxBuffered) {
      throw new FramingError('BUFFER_LIMIT', `${bytes} header bytes would be buffered; maxBuffered is ${this.limits.maxBuffered}`);
    }
  }

  // Decodes the frames that start in `bytes` at or after `offset`.
  #decodeFrom(bytes: Buffer, offset: number): void {
    const len = bytes.length;
    while (len - offset >= HEADER_SIZE) {
      const length = checkHeader(bytes, offset, this.limits);
      if (offset + HEADER_SIZE + length > len) this.#checkBufferLimit(length);
      const fds = this.#takePushFds(bytes[offset + 3]!);
      offset = this.#startPayload(bytes, offset + HEADER_SIZE, length, fds);
    }
    if (offset < len) this.#holdPartialHeader(bytes, offset);
    const pushFds = this.#pushFds;
    if (pushFds && this.#pushFdsTaken < pushFds.length) {
      throw misplacedFds(`${pushFds.length - this.#pushFdsTaken} arrived with bytes in which no frame starts`);
    }
  }

  #takePushFds(declared: number): number[] | null {
    if (declared === 0) return null;
    const all = this.#pushFds;
    const from = this.#pushFdsTaken;
    if (!all || from + declared > all.length) {
      throw misplacedFds(`a frame declares ${declared} fds but ${all ? all.length - from : 0} arrived with its first byte`);
    }
    this.#pushFdsTaken = from + declared;
    return all.slice(from, from + declared);
  }

  // A chunk that ends inside a header: keep its bytes, and the chunk's
  // remaining fds, which can only belong to this frame.
  #holdPartialHeader(bytes: Buffer, offset: number): void {
    const n = bytes.length - offset;
    checkHeaderPrefix(bytes, offset, n);
    this.#checkHeldHeader(n);
    bytes.copy((this.#head ??= Buffer.alloc(HEADER_SIZE)), 0, offset);
    this.#headFill = n;
    const all = this.#pushFds;
    if (all && this.#pushFdsTaken < all.length) {
      this.#held = all.slice(this.#pushFdsTaken);
      this.#pushFdsTaken = all.length;
    }
  }

  // The dry run of #decodeFrom for a chunk that carries fds: the same checks
  // in the same order, nothing delivered, allocated or kept.
  #checkStartingFrames(bytes: Buffer, offset: number, fdCount: number): void {
    const len = bytes.length;
    let claimed = 0;
    while (len - offset >= HEADER_SIZE) {
      const length = checkHeader(bytes, offset, this.limits);
      if (offset + HEADER_SIZE + length > len) this.#checkBufferLimit(length);
      const declared = bytes[offset + 3]!;
      if (claimed + declared > fdCount) {
        throw misplacedFds(`a frame declares ${declared} fds but ${fdCount - claimed} arrived with its first byte`);
      }
      claimed += declared;
      offset += HEADER_SIZE + length;
    }
    if (offset < len) {
      checkHeaderPrefix(bytes, offset, len - offset);
      this.#checkHeldHeader(len - offset);
      return; // the split header takes whatever fds are left
    }
    if (claimed < fdCount) throw misplacedFds(`${fdCount - claimed} arrived with bytes in which no frame starts`);
  }

  #checkPacket(bytes: Buffer, fdCount: number): number {
    if (this.#headFill > 0 || this.#body) {
      throw new FramingError('PROTOCOL_ERROR', 'pushMessage() while a frame fed through push() is incomplete');
    }
    if (bytes.length < HEADER_SIZE) {
      checkHeaderPrefix(bytes, 0, bytes.length);
      throw new FramingError('PROTOCOL_ERROR', `a packet of ${bytes.length} bytes is shorter than a frame header`);
    }
    const length = checkHeader(bytes, 0, this.limits);
    if (bytes.length !== HEADER_SIZE + length) {
      throw new FramingError('PROTOCOL_ERROR', `a packet of ${bytes.length} bytes holds a frame that announces ${HEADER_SIZE + length}`);
    }
    if (bytes[3] !== fdCount) {
      throw misplacedFds(`a packet's frame declares ${bytes[3]} fds but ${fdCount} came with it`);
    }
    return length;
  }

  #deliver(payload: Buffer, fds: number[] | null): void {
    try {
      this.#onFrame.call(this.#thisArg, payload, fds);
    } catch (err) {
      this.#handlerThrew = true;
      throw err;
    }
  }
}

// Whether `bytes` is a view of `body` from `offset` on: read into place.
function isAt(bytes: Buffer, body: Buffer, offset: number): boolean {
  return bytes.buffer === body.buffer && bytes.byteOffset === body.byteOffset + offset;
}
