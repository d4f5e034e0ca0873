// UnixSocket: a connected AF_UNIX socket as a Node Duplex. Stream sockets
// carry bytes, seqpacket sockets whole messages (one write, one message).
// The write side lives in write-queue.ts, a read batch's decoding in
// read-batch.ts; this file is the Duplex and the socket's own calls.
import { Duplex } from 'node:stream';
import { debuglog } from 'node:util';
import { decodeAddress } from './address.js';
import { afunixError, check, invalidArg, systemError, unsupported, uv } from './errors.js';
import { type FdLike, type ReceivedFds, toFds } from './fds.js';
import { Kind, type NativeHandle, type OwnedHandle, type SocketType, native } from './native.js';
import { type Credentials, batchBytes, chunkCredentials, chunkFds, chunkLength, closeChunkFds } from './read-batch.js';
import { type SentCallback, prepareSend, sendPieces } from './send-data.js';
import { type BatchEndListener, WriteQueue } from './write-queue.js';

export type { Credentials } from './read-batch.js';
export type { BatchEndListener } from './write-queue.js';
export type { SentCallback } from './send-data.js';

const debug = debuglog('afunix');

/**
 * Receives every chunk (stream) or message (seqpacket) with what came with
 * it, called with the socket as `this` (as an EventEmitter listener is), so
 * that one function can serve every socket.
 */
export type Receiver = (this: UnixSocket, data: Buffer, fds: ReceivedFds | null, credentials: Credentials | null) => void;

export interface UnixSocketOptions {
  /** Keep writing after the peer ended its side (default true: half-close is the point). */
  allowHalfOpen?: boolean;
  /** Bytes queued for the kernel before write() returns false (default 64 KiB). */
  highWaterMark?: number;
  /** seqpacket only: the largest message accepted; a larger one is EMSGSIZE (default 256 KiB). */
  maxMessageSize?: number;
  /** Ask the kernel for the sender's credentials with every message (Linux SO_PASSCRED). */
  passCredentials?: boolean;
  /**
   * SO_SNDBUF in bytes. On seqpacket it also bounds the largest message that
   * can be sent at all (Linux: about 208 KiB by default, capped by wmem_max).
   */
  sendBufferSize?: number;
}

const DEFAULT_MAX_MESSAGE = 256 * 1024;

// What the Writable itself holds: bytes handed to write() whose callbacks
// have not run.
const writableCount = Object.getOwnPropertyDescriptor(Duplex.prototype, 'writableLength')!.get!;
const writableNeedsDrain = Object.getOwnPropertyDescriptor(Duplex.prototype, 'writableNeedDrain')!.get!;

export class UnixSocket extends Duplex {
  /** 'stream' or 'seqpacket'. */
  readonly type: Exclude<SocketType, 'dgram'>;
  /** Bytes received and sent so far. */
  bytesRead = 0;
  bytesWritten = 0;

  #fd: number;
  #handle: NativeHandle | null;
  #writes: WriteQueue;
  #unrefd = false;
  #reading = false;
  #receiver: Receiver | null = null;
  #peer: Credentials | undefined;
  #maxMessage: number;
  // The accepting server's count of open sockets; a 'close' listener for it
  // would make the socket keep a listener array (~60 bytes).
  #onClosed: (() => void) | null;

  /**
   * @internal Sockets come from connect(), a server, socketPair() or
   * fromFd(). `onClosed` runs once, when the socket has closed.
   */
  constructor(fd: number, type: Exclude<SocketType, 'dgram'>, options: UnixSocketOptions = {}, onClosed: (() => void) | null = null) {
    const message = type === 'seqpacket';
    super({
      allowHalfOpen: options.allowHalfOpen ?? true,
      readableObjectMode: message,
      writableHighWaterMark: options.highWaterMark ?? 64 * 1024,
    });
    if (!native) throw unsupported('UnixSocket', 'the native addon is not loaded');
    this.type = type;
    this.#fd = fd;
    // Everything that can throw comes before the handle takes the fd: a
    // constructor that throws has then taken nothing, and the caller's
    // close(fd) cannot close an fd a live handle still owns.
    if (options.passCredentials) check(native.setPassCred(fd, true), 'setsockopt');
    if (options.sendBufferSize != null) check(native.setBufferSize(fd, true, options.sendBufferSize), 'setsockopt');
    this.#maxMessage = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE;
    this.#onClosed = onClosed;
    this.#writes = new WriteQueue(this, fd);
    const handle = new native.SocketHandle(fd, Kind[type], false, UnixSocket.#handleRead, UnixSocket.#handleWritable) as OwnedHandle<UnixSocket>;
    handle.owner = this;
    this.#handle = handle;
    this.#writes.attach(handle);
    if (message) this.#handle.setMaxMessage(this.#maxMessage);
  }

  /** The descriptor, for inspection (-1 once destroyed); the socket owns it and closes it. */
  get fd(): number {
    return this.#handle ? this.#fd : -1;
  }

  // The fd for a call on the socket itself. Once destroyed its number may
  // already belong to another socket: asking that one would be a lie.
  #openFd(): number {
    if (!this.#handle) throw afunixError('ERR_SOCKET_CLOSED', 'the socket is closed');
    return this.#fd;
  }

  /**
   * seqpacket only: the largest message this socket can send (the kernel
   * refuses one over its send buffer) and will accept (maxMessageSize).
   * null for a stream, which has no such limit.
   */
  messageLimits(): { send: number; receive: number } | null {
    const fd = this.#openFd(); // (ERR_SOCKET_CLOSED once destroyed, whatever the type)
    if (this.type !== 'seqpacket') return null;
    const sndbuf = check(native!.getBufferSize(fd, true), 'getsockopt');
    // Linux refuses a datagram longer than the send buffer less 32 bytes.
    return { send: Math.max(0, sndbuf - 32), receive: this.#maxMessage };
  }

  /** This end's address: a path, '@name' for abstract, '' when unnamed. */
  address(): string {
    return this.#sockName(false);
  }

  /** The peer's address, in the same form as address(). */
  get remoteAddress(): string {
    return this.#sockName(true);
  }

  /** The peer's pid, uid and gid as the kernel recorded them at connect time. */
  peerCredentials(): Credentials {
    if (!this.#peer) {
      const r = native!.peerCredentials(this.#openFd());
      if (typeof r === 'number') throw systemError(r, 'getsockopt');
      this.#peer = { pid: r[0], uid: r[1], gid: r[2] };
    }
    return this.#peer;
  }

  /**
   * A pidfd for the peer process (Linux 6.5+, SO_PEERPIDFD): unlike a pid it
   * cannot be confused with a recycled one. The returned fd is yours to close.
   */
  peerPidfd(): number {
    return check(native!.peerPidfd(this.#openFd()), 'getsockopt');
  }

  /**
   * Writes data with descriptors attached. On a stream socket the fds arrive
   * with the first byte of data; on a seqpacket socket, with the message.
   * Returns false when the caller should wait for 'drain', like write().
   * `onSent` runs once the kernel has the first byte of data, and so the
   * fds (or the socket was destroyed before it got them): from then on the
   * caller may close its copies. If the kernel refuses the fds (EBADF: one
   * is not open), `onSent` gets that error, nothing of this send() leaves,
   * and the socket goes on; without an `onSent` to hear it, the socket is
   * destroyed with it instead. Throws ERR_INVALID_ARG_VALUE for data that
   * is not a Uint8Array or an array of them.
   */
  send(data: Uint8Array | readonly Uint8Array[], fds?: readonly FdLike[] | null, onSent?: SentCallback): boolean {
    if (onSent != null && typeof onSent !== 'function') throw invalidArg('onSent', `must be a function; received ${typeof onSent}`);
    if (this.#writableIdle()) {
      const fdList = toFds(fds);
      const { pieces, size } = sendPieces(this.type, data, fdList);
      return this.#writes.send(pieces, size, fdList, onSent ?? null);
    }
    const { carrier, others, sent } = prepareSend(this.type, data, toFds(fds), onSent);
    // A write still buffered in the Writable when the socket is destroyed
    // fails through its callback; that also frees the sender's fds.
    let ok = sent ? this.write(carrier, (err) => err && sent()) : this.write(carrier);
    for (const piece of others) ok = this.write(piece);
    return ok;
  }

  // Nothing waits in the Writable, which is open and not corked: a send()
  // can go straight to the queue without overtaking any write, and skip
  // the Writable's bookkeeping (and the carrier that takes fds through it).
  #writableIdle(): boolean {
    return writableCount.call(this) === 0 && !this.writableCorked && !this.writableEnded && !this.destroyed;
  }

  static {
    // Bytes not yet handed to the kernel, as net.Socket counts them: what
    // waits in the Writable and in the queue, whichever way it came (a
    // write whose callback is held is in both).
    Object.defineProperty(UnixSocket.prototype, 'writableLength', {
      configurable: true,
      get(this: UnixSocket) {
        const writes = this.#writes;
        return writableCount.call(this) - writes.heldBytes + writes.queuedBytes;
      },
    });
    Object.defineProperty(UnixSocket.prototype, 'writableNeedDrain', {
      configurable: true,
      get(this: UnixSocket) {
        return writableNeedsDrain.call(this) || (this.#writes.drainOwed && !this.destroyed && !this.writableEnded);
      },
    });
  }

  /** @internal WriteQueue: the queue has room again after a send() that found it full. */
  queueDrained(): void {
    // A write() that returned false meanwhile gets the Writable's own 'drain'.
    if (!writableNeedsDrain.call(this)) this.emit('drain');
  }

  /**
   * Takes over reading: every chunk goes to `receiver` with its fds and
   * credentials, and nothing goes through the Readable side. The fds come
   * with the chunk that holds their first byte (the kernel may put earlier
   * fd-less bytes before it in the same read, and later bytes after it),
   * which is the rule a framing layer needs to attach them to a message.
   * `receiver` is called with the socket as `this`. 'end' still comes when
   * the peer ends (and 'close' once both sides are done). What the
   * Readable side had read ahead comes first, on the next tick, without
   * fds or credentials (they went to 'fds' and 'credentials' as it was
   * read).
   */
  setReceiver(receiver: Receiver): void {
    // (Checked now: the first chunk would otherwise throw it from the event loop.)
    if (typeof receiver !== 'function') throw invalidArg('receiver', `must be a function; received ${typeof receiver}`);
    this.#receiver = receiver;
    // What the Readable side holds (read past a greeting, say) goes to the
    // receiver first, on the next tick: the caller may be a constructor
    // whose listeners are not on yet. No read callback can come before it,
    // nor the 'end' that reading the last of it may queue (queued after).
    if (this.readableLength > 0) {
      const chunks: Buffer[] = [];
      process.nextTick(deliverBuffered, this, chunks);
      for (let chunk = this.read() as Buffer | null; chunk !== null; chunk = this.read() as Buffer | null) chunks.push(chunk);
    }
    this.#readStart();
  }

  /** @internal The chunks the Readable side held when the receiver was set (setReceiver()). */
  deliverHeld(chunks: Buffer[]): void {
    if (this.destroyed || !this.#receiver) return;
    this.beginBatch();
    try {
      for (const chunk of chunks) this.#receiver(chunk, null, null);
    } finally {
      this.endBatch();
    }
  }

  /**
   * For a receiver that knows where the next bytes belong (the rest of a
   * large message, in the buffer it will hand on): the next read of this
   * stream goes to `buffer[offset, offset + length)`, and the receiver gets
   * those bytes as a view of it rather than a copy. One read only; it may
   * bring fewer bytes than `length` (name the rest again), and a read that
   * cannot use it (seqpacket, a batch with fds) drops it. The buffer must
   * stay unread by anyone else until its bytes have been delivered.
   */
  readInto(buffer: Uint8Array, offset: number, length: number): void {
    if (!(buffer instanceof Uint8Array)) throw invalidArg('buffer', `must be a Uint8Array; received ${typeof buffer}`);
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 1 || offset + length > buffer.length) {
      throw invalidArg('offset', `and length must name a range of the buffer (${buffer.length} bytes); received ${offset} and ${length}`);
    }
    this.#handle?.setReadTarget(buffer, offset, length);
  }

  /** Stops reading from the kernel (backpressure for a receiver). */
  pauseReading(): void {
    this.#readStop();
  }

  resumeReading(): void {
    this.#readStart();
  }

  /** Keep (ref) or stop keeping (unref) the process alive for this socket. */
  ref(): this {
    this.#unrefd = false;
    this.#handle?.ref();
    return this;
  }

  /** As net.Socket#unref(): writes still waiting for room hold the process until they leave. */
  unref(): this {
    this.#unrefd = true;
    if (!this.#writes.waitingForRoom) this.#handle?.unref();
    return this;
  }

  /** @internal WriteQueue: writes began (true) or stopped (false) waiting for room in the kernel. */
  writesWaiting(waiting: boolean): void {
    // (net's pending write requests hold the loop; the poll handle is all
    // we have, so an unref'd socket is ref'd meanwhile.)
    if (!this.#unrefd) return;
    if (waiting) this.#handle?.ref();
    else this.#handle?.unref();
  }

  override _read(): void {
    this.#readStart();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#writes.write(chunk, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    this.#writes.writev(chunks, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#writes.final(callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const handle = this.#handle;
    this.#handle = null;
    this.#writes.close(err);
    debug('socket fd=%d destroy %s', this.#fd, err?.message ?? '');
    if (handle) handle.close(() => this.#closed(err, callback));
    else this.#closed(err, callback);
  }

  #closed(err: Error | null, callback: (err?: Error | null) => void): void {
    const onClosed = this.#onClosed;
    this.#onClosed = null;
    onClosed?.();
    callback(err);
  }

  #sockName(peer: boolean): string {
    const r = native!.sockName(this.#openFd(), peer);
    if (typeof r === 'number') throw systemError(r, peer ? 'getpeername' : 'getsockname');
    return decodeAddress(r);
  }

  #readStart(): void {
    if (this.#reading || !this.#handle) return;
    this.#reading = true;
    const r = this.#handle.readStart();
    if (r < 0) this.destroy(systemError(r, 'read'));
  }

  #readStop(): void {
    if (!this.#reading || !this.#handle) return;
    this.#reading = false;
    this.#handle.readStop();
  }

  // A read batch, called by the handle (see OwnedHandle).
  static #handleRead(
    this: OwnedHandle<UnixSocket>,
    status: number,
    bytes: Buffer | ArrayBuffer | Uint8Array | undefined,
    chunks: unknown[] | null | undefined,
    offset?: number,
    length?: number,
  ): void {
    const socket = this.owner;
    try {
      if (bytes !== undefined) socket.#deliverBatch(batchBytes(bytes, offset, length), chunks);
    } finally {
      // Also when a listener threw: the addon has stopped reading at the
      // end or error, and the socket must still end or fail.
      if (status !== 0) socket.#readEnded(status);
    }
  }

  #deliverBatch(data: Buffer, chunks: unknown[] | null | undefined): void {
    // What the listeners write in reply leaves when they return.
    this.beginBatch();
    try {
      if (!chunks) this.#deliver(data, null, null);
      else this.#deliverAll(data, chunks);
    } finally {
      this.endBatch();
    }
  }

  #readEnded(status: number): void {
    this.#reading = false;
    if (status === uv.EOF) {
      debug('socket fd=%d end of stream', this.#fd);
      // A receiver took the bytes, so nothing reads the Readable side: only
      // flowing does it emit 'end'. (Set flowing only now: resume() at
      // setReceiver() cost every connection a tick.)
      if (this.#receiver) this.resume();
      this.push(null);
    } else {
      this.destroy(systemError(status, 'recvmsg'));
    }
  }

  static #handleWritable(this: OwnedHandle<UnixSocket>): void {
    this.owner.#writes.onWritable();
  }

  #deliverAll(bytes: Buffer, chunks: unknown[]): void {
    let offset = 0;
    for (let i = 0; i < chunks.length; i += 4) {
      if (this.destroyed) {
        closeChunkFds(chunks, i);
        return;
      }
      const len = chunkLength(chunks, i);
      const fds = chunkFds(chunks, i);
      try {
        this.#deliver(bytes.subarray(offset, offset + len), fds, chunkCredentials(chunks, i));
      } catch (err) {
        closeChunkFds(chunks, i + 4);
        throw err;
      }
      offset += len;
    }
  }

  #deliver(data: Buffer, fds: ReceivedFds | null, credentials: Credentials | null): void {
    this.bytesRead += data.length;
    try {
      if (this.#receiver) {
        this.#receiver(data, fds, credentials);
        return;
      }
      if (fds) this.emit('fds', fds, data);
      if (credentials) this.emit('credentials', credentials, data);
      if (!this.push(data)) this.#readStop();
    } finally {
      // Whatever the listeners did not take is closed now, not at GC time.
      fds?.close();
    }
  }

  /**
   * @internal Starts a batch: what is written until endBatch() leaves in one
   * sendmsg when it ends, with no tick of the queue's own (a read's delivery
   * is one too). For a server's 'connection' emission; endBatch() must
   * follow, in a finally. Batches nest: the outermost one's end counts.
   */
  beginBatch(): void {
    this.#writes.batchStarted();
  }

  /** @internal */
  endBatch(): void {
    this.#writes.batchEnded();
  }

  /**
   * @internal Inside a batch (a read being delivered, a 'connection' being
   * emitted), calls `listener.batchEnded()` at its end, just before its
   * writes leave, and returns true; outside one returns false. A listener
   * may register again from that call (something it wrote ran an onSent
   * that wrote more): it is called again. A framing layer ends its packing
   * of small frames there rather than on a tick.
   */
  atBatchEnd(listener: BatchEndListener): boolean {
    return this.#writes.atBatchEnd(listener);
  }

  /** @internal Sends what is queued now (the queue does so by itself on the next tick, or at the end of a batch). */
  flush(): void {
    this.#writes.flush();
  }

  /** @internal Resolves once the socket is writable (an async connect finished). */
  whenWritable(): Promise<void> {
    return this.#writes.whenWritable();
  }
}

function deliverBuffered(socket: UnixSocket, chunks: Buffer[]): void {
  socket.deliverHeld(chunks);
}
