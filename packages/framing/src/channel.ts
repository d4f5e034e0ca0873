// FramedChannel: whole frames, with their fds, over a UnixSocket (stream or
// seqpacket) or any other Duplex. One owner for every fd at every moment:
// the transport until its receiver takes them, then the decoder, then the
// frame's ReceivedFds, then whoever takes them from it; every path that
// drops a frame closes its fds.
import type { Duplex } from 'node:stream';
import { type FdLike, ReceivedFds, type SentCallback, UnixSocket, features } from '@afunix/transport';
// typed-emitter is CommonJS: under NodeNext its default export is the
// module object, and the interface sits on it as `default`.
import type TypedEmitterModule from 'typed-emitter';
import { FrameDecoder } from './decoder.js';
import { ChannelEmitterBase } from './emitter.js';
import { FramingError, invalidArg, unsupported } from './errors.js';
import { type FrameLimits, type ResolvedLimits, resolveLimits } from './header.js';
import { FrameWriter, type GatheringSocket, SMALL_FRAME, kRoomAfterFlush } from './writer.js';

export interface FramedEvents {
  frame: (payload: Buffer, fds: ReceivedFds | null) => void;
  drain: () => void;
  /** A FramingError (its `code`: PROTOCOL_ERROR, FRAME_TOO_LARGE...), or the transport's error with its code. */
  error: (err: Error & { code?: string }) => void;
  close: (hadError: boolean) => void;
  end: () => void;
}

export interface FramedStats {
  framesIn: number;
  framesOut: number;
  /** Payload bytes (headers not counted). */
  bytesIn: number;
  bytesOut: number;
}

/** Called with the channel as `this` (as an event listener is), so that one function can serve every channel. */
export type FrameListener = (this: FramedChannel, payload: Buffer, fds: ReceivedFds | null) => void;

/** A socket that hands us raw chunks with their fds: a UnixSocket, or the transport's net fallback. */
interface ReceivingSocket extends GatheringSocket {
  readonly type?: string;
  setReceiver(receiver: (this: Duplex, data: Buffer, fds: ReceivedFds | null) => void): void;
  pauseReading(): void;
  resumeReading(): void;
  /** A UnixSocket's: the next read of the stream into this place (see READ_INTO_MIN). */
  readInto?(buffer: Uint8Array, offset: number, length: number): void;
}

// A frame still missing this much is read straight into its own buffer
// (UnixSocket.readInto), not read into the socket's batch buffer and copied
// from there: a large payload reaches the user with no copy after the
// kernel's. Smaller rests are left to the batches, which gather many small
// frames in one read.
const READ_INTO_MIN = 16 * 1024;
// (Reading each header alone after a large frame, so that the whole next
// payload could go in place, cost more than it saved: one more read per
// frame; 64 KiB echoes, 4 in flight, went from 499-615 to 416-590 MB/s.)

function isReceivingSocket(t: Duplex): t is ReceivingSocket {
  const s = t as Partial<ReceivingSocket>;
  return typeof s.setReceiver === 'function' && typeof s.send === 'function' && typeof s.pauseReading === 'function';
}

function closeFds(fds: number[] | null): void {
  if (fds && fds.length > 0) new ReceivedFds(fds).close();
}

// Indexed rather than for-of, here and in the writer: until a function is
// optimized, for-of makes an iterator and a result per step, and a
// connection's first frames run in code that is not optimized yet.
function byteLengthOf(pieces: readonly Uint8Array[]): number {
  let n = 0;
  for (let i = 0; i < pieces.length; i++) {
    const p = pieces[i];
    if (!(p instanceof Uint8Array)) throw invalidArg('payload', 'must be a Uint8Array or an array of them');
    n += p.byteLength;
  }
  return n;
}

interface Queued {
  payload: Buffer;
  fds: number[] | null;
}

// An interface has no implicit index signature; its mapped copy has one.
type FramedEventMap = { [E in keyof FramedEvents]: FramedEvents[E] };

// The transport's channel, for the listeners and the receiver below: they
// are shared by every channel (the transport calls them as `this`), where
// closures of their own would cost each idle connection ~250 bytes. The mark
// stays after the channel closes (so does its transport), and it is not
// enumerable, so that inspecting a transport does not print its channel.
const kChannel = Symbol('afunix.channel');
type FramedTransport = (UnixSocket | Duplex) & { [kChannel]?: FramedChannel };

// A channel's flags (FramedChannel.#flags).
const NEED_DRAIN = 1 << 0; // a send() returned false: 'drain' is owed
const PAUSED = 1 << 1;
const DRAINING = 1 << 2; // the backlog is being delivered
const PUSHING = 1 << 3; // the decoder is running
const PEER_ENDED = 1 << 4;
const END_EMITTED = 1 << 5;
const ENDED = 1 << 6; // our side: end() was called
const DESTROYED = 1 << 7;
const CLOSE_EMITTED = 1 << 8;
// The transport closed cleanly while frames it had read were held by
// pause(): they are delivered on resume(), and 'close' follows them.
const CLOSE_ON_RESUME = 1 << 9;
const HAD_ERROR = 1 << 10;
const PEER_TAKES_NO_FDS = 1 << 11; // see refuseFdsForPeer()

export class FramedChannel extends (ChannelEmitterBase as new () => TypedEmitterModule.default<FramedEventMap>) {
  readonly transport: UnixSocket | Duplex;
  /** fds can travel: a native UnixSocket on a platform with SCM_RIGHTS. */
  readonly fdPassing: boolean;
  #limits: ResolvedLimits;
  /** When set, every frame goes here instead of the 'frame' event. */
  onFrame: FrameListener | null = null;

  #receiver: ReceivingSocket | null;
  #seqpacket: boolean;
  #decoder: FrameDecoder;
  #writer: FrameWriter;
  #framesIn = 0;
  #framesOut = 0;
  #bytesIn = 0;
  #bytesOut = 0;
  // Frames held while paused; most channels never pause.
  #backlog: Queued[] | null = null;
  // NEED_DRAIN and the other flags above, in one field: as eleven booleans
  // they were 80 bytes of every idle connection.
  #flags = 0;
  #pendingError: Error | null = null;

  /**
   * Throws ERR_INVALID_ARG_VALUE if `transport` ever carried a channel: two
   * would split its bytes and events.
   */
  constructor(transport: UnixSocket | Duplex, options?: FrameLimits | null) {
    super();
    const framed = transport as FramedTransport;
    if (typeof framed?.on !== 'function' || typeof framed.destroy !== 'function' || typeof framed.write !== 'function') {
      throw invalidArg('transport', 'must be a UnixSocket or another Duplex');
    }
    if (framed[kChannel]) throw invalidArg('transport', 'already carries a FramedChannel');
    this.#limits = resolveLimits(options);
    Object.defineProperty(framed, kChannel, { value: this, enumerable: false });
    this.transport = transport;
    this.#decoder = new FrameDecoder(this.#onDecoded, this.#limits, this);
    this.#receiver = isReceivingSocket(transport) ? transport : null;
    this.#seqpacket = this.#receiver?.type === 'seqpacket';
    this.fdPassing = transport instanceof UnixSocket && features.fdPassing;
    const target = { stream: transport, socket: this.#receiver, messages: this.#seqpacket };
    this.#writer = new FrameWriter(target, this);
    transport.on('drain', FramedChannel.#transportDrained);
    transport.on('end', FramedChannel.#transportEnded);
    transport.on('error', FramedChannel.#transportFailed);
    transport.on('close', FramedChannel.#transportClosed);
    if (this.#receiver) this.#receiver.setReceiver(FramedChannel.#received);
    else transport.on('data', FramedChannel.#transportData);
    // Its 'close' may be long past: the channel would wait for it for ever.
    // (Its error, if any, may still be on its way: reported here, once.)
    if (transport.destroyed) this.destroy(transport.errored ? translateTransportError(transport.errored, this.#seqpacket) : undefined);
    // So may its 'end': said again once the caller can listen.
    else if (transport.readableEnded) process.nextTick(() => this.#onTransportEnd());
  }

  static #received(this: FramedTransport, data: Buffer, fds: ReceivedFds | null): void {
    this[kChannel]!.#onChunk(data, fds);
  }

  static #transportData(this: FramedTransport, chunk: Buffer | string): void {
    this[kChannel]!.#onChunk(typeof chunk === 'string' ? Buffer.from(chunk) : chunk, null);
  }

  static #transportDrained(this: FramedTransport): void {
    this[kChannel]!.#onDrain();
  }

  static #transportEnded(this: FramedTransport): void {
    this[kChannel]!.#onTransportEnd();
  }

  static #transportFailed(this: FramedTransport, err: Error): void {
    this[kChannel]!.#onTransportError(err);
  }

  static #transportClosed(this: FramedTransport): void {
    this[kChannel]!.#onTransportClose();
  }

  // Whether any of `flags` is set.
  #is(flags: number): boolean {
    return (this.#flags & flags) !== 0;
  }

  /** Frames and payload bytes so far, as a snapshot. */
  get stats(): FramedStats {
    return { framesIn: this.#framesIn, framesOut: this.#framesOut, bytesIn: this.#bytesIn, bytesOut: this.#bytesOut };
  }

  get limits(): ResolvedLimits {
    return this.#limits;
  }

  /**
   * New limits, for the frames sent from now on and those whose header has
   * not arrived yet: a handshake, say, reads its first frame under a small
   * limit, so that a peer not yet known cannot make it buffer a large one.
   */
  setLimits(limits: FrameLimits | null): void {
    this.#limits = resolveLimits(limits);
    this.#decoder.setLimits(this.#limits);
  }

  /** True once the channel was destroyed or its transport closed (held frames may still be delivered by resume()). */
  get closed(): boolean {
    return this.#is(DESTROYED | CLOSE_ON_RESUME);
  }

  /**
   * Sends one frame. Returns false when the transport's buffer is full: wait
   * for 'drain' (or `await drained()`) before sending more, as with
   * write(). Throws, with nothing sent: FRAME_TOO_LARGE, TOO_MANY_FDS,
   * CONNECTION_CLOSED after end() or close, ERR_AFUNIX_UNSUPPORTED for fds
   * where they cannot travel. `onSent` runs once the fds have left (or the
   * channel closed before they could): the sender may then close its copies.
   * If the kernel refuses the fds (EBADF: one is not open), `onSent` gets
   * that error and the frame is not sent; the channel goes on. (Without an
   * `onSent` to hear it, the channel fails with it.)
   */
  send(payload: Uint8Array | readonly Uint8Array[], fds?: readonly FdLike[] | null, onSent?: SentCallback): boolean {
    this.#checkOpen();
    const pieces: readonly Uint8Array[] = Array.isArray(payload) ? payload : [payload as Uint8Array];
    const length = byteLengthOf(pieces);
    this.#checkSize(length);
    if (fds != null && !Array.isArray(fds)) throw invalidArg('fds', 'must be an array of fds, or null');
    if (onSent != null && typeof onSent !== 'function') throw invalidArg('onSent', `must be a function; received ${typeof onSent}`);
    const fdList = fds && fds.length > 0 ? fds : null;
    if (fdList) this.#checkSendableFds(fdList.length);
    const ok = this.#writer.write(pieces, length, fdList, fdList ? (onSent ?? null) : null);
    if (!fdList) onSent?.();
    if (!ok) this.#flags |= NEED_DRAIN;
    this.#framesOut++;
    this.#bytesOut += length;
    return ok;
  }

  /**
   * send() of source[start, end), without fds, copied before this returns:
   * the caller may reuse `source` at once. For a small payload (at most
   * SMALL_FRAME bytes) no view of it is made at all.
   */
  sendCopy(source: Uint8Array, start: number, end: number): boolean {
    // (Unchecked, a range past the source's end would send the frame's
    // uninitialised rest: memory of this process.)
    if (!(source instanceof Uint8Array)) throw invalidArg('source', 'must be a Uint8Array');
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end || end > source.length) {
      throw invalidArg('start', `and end must name a range of the source (${source.length} bytes); received ${start} and ${end}`);
    }
    const length = end - start;
    if (length > SMALL_FRAME) return this.send(Buffer.from(source.subarray(start, end)));
    this.#checkOpen();
    this.#checkSize(length);
    const ok = this.#writer.writeCopy(source, start, end);
    if (!ok) this.#flags |= NEED_DRAIN;
    this.#framesOut++;
    this.#bytesOut += length;
    return ok;
  }

  #checkOpen(): void {
    if (this.#is(DESTROYED | ENDED | CLOSE_ON_RESUME)) {
      throw new FramingError('CONNECTION_CLOSED', `cannot send: the channel was ${this.#is(ENDED) ? 'ended' : 'closed'}`);
    }
  }

  #checkSize(length: number): void {
    if (length > this.limits.maxFrameSize) {
      throw new FramingError('FRAME_TOO_LARGE', `cannot send a frame of ${length} bytes: maxFrameSize is ${this.limits.maxFrameSize}`);
    }
  }

  /**
   * The peer said it cannot receive fds (its side has no SCM_RIGHTS, e.g.
   * it runs without the native addon): from now on a send() with fds fails
   * with ERR_AFUNIX_UNSUPPORTED, as on a transport of ours that cannot,
   * instead of reaching a peer that would take the frame for a broken one.
   */
  refuseFdsForPeer(): void {
    this.#flags |= PEER_TAKES_NO_FDS;
  }

  #checkSendableFds(count: number): void {
    if (!this.fdPassing) {
      throw unsupported(`file descriptors cannot travel over this transport (${this.#receiver ? 'no SCM_RIGHTS here' : 'not a native unix socket'})`);
    }
    if (this.#is(PEER_TAKES_NO_FDS)) throw unsupported('file descriptors cannot travel to this peer: its side cannot receive them');
    if (count > this.limits.maxFds) {
      throw new FramingError('TOO_MANY_FDS', `cannot send ${count} fds in one frame: maxFds is ${this.limits.maxFds}`);
    }
  }

  // 'drain' follows a send() that returned false, once: either the
  // transport drained, or the tick's packed frames went out without filling it.
  #onDrain(): void {
    if (!this.#is(NEED_DRAIN) || this.#is(DESTROYED)) return;
    this.#flags &= ~NEED_DRAIN;
    this.emit('drain');
  }

  /** The writer's tick ended with room in the transport. */
  [kRoomAfterFlush](): void {
    this.#onDrain();
  }

  /** Resolves once sending may go on: at once, or at the next 'drain'. Rejects if the channel closes first. */
  drained(): Promise<void> {
    // (The transport may be destroyed already, by a failed write, its
    // 'close' still to come: a producer waiting here must not go on.)
    if (this.#is(DESTROYED) || this.transport.destroyed) return Promise.reject(new FramingError('CONNECTION_CLOSED', 'the channel is closed'));
    if (!this.#is(NEED_DRAIN)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onDrain = (): void => {
        this.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        this.off('drain', onDrain);
        reject(new FramingError('CONNECTION_CLOSED', 'the channel closed while waiting for drain'));
      };
      this.once('drain', onDrain);
      this.once('close', onClose);
    });
  }

  /** Stops delivering frames and reading from the transport, so the kernel pushes back on the peer. */
  pause(): void {
    if (this.#is(PAUSED | DESTROYED)) return;
    this.#flags |= PAUSED;
    if (this.#receiver) this.#receiver.pauseReading();
    else this.transport.pause();
  }

  /** Delivers the frames held while paused, then reads again. */
  resume(): void {
    if (!this.#is(PAUSED) || this.#is(DESTROYED)) return;
    this.#flags &= ~PAUSED;
    this.#drainBacklog();
    if (this.#is(PAUSED | DESTROYED)) return;
    if (this.#is(CLOSE_ON_RESUME)) return this.#closeAfterBacklog();
    if (this.#receiver) this.#receiver.resumeReading();
    else this.transport.resume();
    this.#maybeEmitEnd();
  }

  /** Sends what is queued, then half-closes: the peer sees 'end', and we can still receive. */
  end(): void {
    if (this.#is(ENDED | DESTROYED | CLOSE_ON_RESUME)) return;
    this.#flags |= ENDED;
    this.#writer.flush();
    this.transport.end();
  }

  /** Closes now: the transport, and every fd of a frame not yet delivered. 'error' (if err), then 'close'. */
  destroy(err?: Error): void {
    if (this.#is(DESTROYED)) return;
    this.#flags |= DESTROYED;
    if (err) {
      this.#pendingError = err;
      this.#flags |= HAD_ERROR;
      process.nextTick(() => this.#emitPendingError());
    }
    this.#releaseFds();
    this.#writer.discard();
    const transport = this.transport;
    if (transport.closed) process.nextTick(() => this.#emitClose());
    else transport.destroy();
  }

  // ------------------------------------------------------------ receiving

  #onChunk(data: Buffer, fds: ReceivedFds | null): void {
    // Kept, not taken: a frame's fds wait here (in the decoder while the
    // frame spans reads, in the backlog while paused), and until the frame's
    // receiver takes or closes them the addon closes them if this thread
    // goes first (a worker terminated). Taken, they leaked then.
    const fdList = fds ? fds.keep() : null;
    if (this.#is(DESTROYED)) return closeFds(fdList);
    this.#flags |= PUSHING;
    try {
      if (this.#seqpacket) this.#decoder.pushMessage(data, fdList);
      else {
        this.#decoder.push(data, fdList);
        this.#readRestInPlace();
      }
    } catch (err) {
      // A FramingError leaves every fd of this chunk with us (the decoder's
      // contract); our own handler never throws, so nothing else gets here.
      if (err instanceof FramingError) closeFds(fdList);
      this.destroy(err as Error);
    } finally {
      this.#flags &= ~PUSHING;
      if (this.#is(DESTROYED)) this.#releaseFds();
    }
  }

  #readRestInPlace(): void {
    const body = this.#decoder.partialBody;
    if (!body || !this.#receiver?.readInto) return;
    const filled = this.#decoder.partialFill;
    if (body.length - filled >= READ_INTO_MIN) this.#receiver.readInto(body, filled, body.length - filled);
  }

  #onDecoded(payload: Buffer, fds: number[] | null): void {
    this.#framesIn++;
    this.#bytesIn += payload.length;
    if (this.#is(DESTROYED)) return closeFds(fds);
    if (this.#is(PAUSED) || this.#backlog) {
      (this.#backlog ??= []).push({ payload, fds });
      return;
    }
    this.#dispatch(payload, fds);
  }

  // Hands one frame to the user; fds not taken in the callback are closed
  // when it returns. A throwing handler closes the channel with its error
  // rather than unwinding through the decoder.
  #dispatch(payload: Buffer, fds: number[] | null): void {
    const received = fds ? new ReceivedFds(fds) : null;
    try {
      const handler = this.onFrame;
      if (handler) handler.call(this, payload, received);
      else this.emit('frame', payload, received);
    } catch (err) {
      this.destroy(err instanceof Error ? err : new Error(String(err)));
    } finally {
      received?.close();
    }
  }

  #drainBacklog(): void {
    if (this.#is(DRAINING)) return;
    this.#flags |= DRAINING;
    try {
      while (this.#backlog && !this.#is(PAUSED | DESTROYED)) {
        const { payload, fds } = this.#backlog.shift()!;
        if (this.#backlog.length === 0) this.#backlog = null;
        this.#dispatch(payload, fds);
      }
    } finally {
      this.#flags &= ~DRAINING;
    }
  }

  // ------------------------------------------------------------ endings

  #onTransportEnd(): void {
    if (this.#is(DESTROYED)) return;
    if (this.#decoder.buffered > 0) {
      const err = new FramingError('TRUNCATED_FRAME', `the peer ended the stream ${this.#decoder.buffered} bytes into a frame`);
      this.destroy(err);
      return;
    }
    this.#flags |= PEER_ENDED;
    // A Duplex without half-open support ends its own side along with the peer's.
    if (!this.transport.allowHalfOpen) this.#flags |= ENDED;
    this.#maybeEmitEnd();
  }

  #maybeEmitEnd(): void {
    if (!this.#is(PEER_ENDED) || this.#is(END_EMITTED | PAUSED | DESTROYED) || this.#backlog) return;
    this.#flags |= END_EMITTED;
    this.emit('end');
  }

  #onTransportError(err: Error): void {
    this.destroy(translateTransportError(err, this.#seqpacket));
  }

  #onTransportClose(): void {
    if (!this.#is(DESTROYED)) {
      // Both sides ended while frames read before the end were held: they
      // are still the user's, delivered on resume(), and 'close' waits.
      if (this.#backlog && this.#is(PEER_ENDED)) {
        this.#flags |= CLOSE_ON_RESUME;
        return;
      }
      // Closed under us (both sides ended, or destroyed by its owner).
      this.#flags |= DESTROYED;
      this.#releaseFds();
    }
    this.#emitClose();
  }

  #closeAfterBacklog(): void {
    this.#flags &= ~CLOSE_ON_RESUME;
    this.#maybeEmitEnd();
    this.#flags |= DESTROYED;
    this.#releaseFds();
    this.#emitClose();
  }

  #releaseFds(): void {
    for (const { fds } of this.#backlog ?? []) closeFds(fds);
    this.#backlog = null;
    // Mid-push the decoder is still running; the push's end releases it.
    if (!this.#is(PUSHING)) closeFds(this.#decoder.reset());
  }

  #emitPendingError(): void {
    const err = this.#pendingError;
    if (!err) return;
    this.#pendingError = null;
    this.emit('error', err);
  }

  #emitClose(): void {
    if (this.#is(CLOSE_EMITTED)) return;
    this.#flags |= CLOSE_EMITTED;
    this.#emitPendingError();
    this.emit('close', this.#is(HAD_ERROR));
  }
}

// A seqpacket packet over the socket's maxMessageSize is the same violation
// as a frame over maxFrameSize, so it gets the same code.
function translateTransportError(err: Error, seqpacket: boolean): Error {
  const e = err as Error & { code?: string; syscall?: string };
  if (seqpacket && e.code === 'EMSGSIZE') {
    const where = e.syscall === 'recvmsg' ? 'the peer sent a packet larger than the socket accepts (maxMessageSize)' : 'a packet did not fit the socket send buffer (sendBufferSize)';
    return new FramingError('FRAME_TOO_LARGE', `frame too large for this seqpacket socket: ${where}`, { cause: err });
  }
  return err;
}
