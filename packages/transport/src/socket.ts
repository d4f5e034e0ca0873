// UnixSocket: a connected AF_UNIX socket as a Node Duplex. Stream sockets
// carry bytes, seqpacket sockets whole messages (one write, one message).
// Writes made in one tick leave in one sendmsg; EAGAIN becomes backpressure.
import { Duplex } from 'node:stream';
import { debuglog } from 'node:util';
import { createRequire } from 'node:module';
import { decodeAddress } from './address.js';
import { afunixError, check, systemError, unsupported, uv } from './errors.js';
import { type FdLike, ReceivedFds, toFds } from './fds.js';
import { Kind, type NativeHandle, type SocketType, native } from './native.js';

const debug = debuglog('afunix');

export interface Credentials {
  pid: number;
  uid: number;
  gid: number;
}

/** Receives every chunk (stream) or message (seqpacket) with what came with it. */
export type Receiver = (data: Buffer, fds: ReceivedFds | null, credentials: Credentials | null) => void;

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

interface Pending {
  bufs: Uint8Array[];
  size: number;
  fds: number[] | null;
  /** Called once the fds have left (or never will): the sender's copies are free. */
  onSent: (() => void) | null;
}

// fds (and extra gathered pieces) that travel with a chunk given to send().
// Keyed by a fresh view made in send(), so a user's Buffer is never tagged.
interface Attachment {
  fds: number[] | null;
  onSent: (() => void) | null;
  /** seqpacket: every piece of the message, in order (the carrier among them). */
  message: Uint8Array[] | null;
}
const attachments = new WeakMap<object, Attachment>();

const MAX_IOV = 1024;
const DEFAULT_MAX_MESSAGE = 256 * 1024;
// A stream chunk this large fills a sendmsg by itself: waiting a tick to
// gather it with others saves no syscall, so it is written at once.
const DIRECT_WRITE_MIN = 16 * 1024;

// Buffer's own constructor for views (what Buffer.from(arrayBuffer) ends in),
// reached through Buffer[Symbol.species] without Buffer.from's checks.
type ViewConstructor = new (buffer: ArrayBuffer, byteOffset: number, length: number) => Buffer;
const species = (Buffer as unknown as { [Symbol.species]?: unknown })[Symbol.species];
const FastBuffer: ViewConstructor =
  typeof species === 'function' && species !== Buffer
    ? (species as ViewConstructor)
    : (class {
        constructor(buffer: ArrayBuffer, byteOffset: number, length: number) {
          return Buffer.from(buffer, byteOffset, length);
        }
      } as unknown as ViewConstructor);
let lastPool: ArrayBuffer | null = null;
let markAsUntransferable: ((object: object) => void) | null = null;

// Small reads share a pool, as Buffer.allocUnsafe's results do: a Buffer
// handed out is a view of it. Like Node's own pool it may not be transferred
// to another thread, which would take the memory from every other view.
function poolView(pool: ArrayBuffer, offset: number, length: number): Buffer {
  if (pool !== lastPool) {
    lastPool = pool;
    // worker_threads is loaded when first needed, not with this module.
    // Loaded at startup it tipped how the heap is laid out so that bulk
    // receivers nearly always got their 120 KiB batch buffers as fresh,
    // page-faulting memory (19k instead of 12k faults per 128 MiB, ~40% more
    // receiver CPU; 10 of 10 runs, against 2 to 6 of 10 before the pool).
    markAsUntransferable ??= (createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads')).markAsUntransferable;
    markAsUntransferable(pool);
  }
  return new FastBuffer(pool, offset, length);
}

function credentialsOf(raw: unknown): Credentials | null {
  if (!Array.isArray(raw)) return null;
  return { pid: raw[0] as number, uid: raw[1] as number, gid: raw[2] as number };
}

function closeChunkFds(chunks: unknown[], from: number): void {
  for (let i = from; i < chunks.length; i += 4) {
    const fds = chunks[i + 1];
    if (Array.isArray(fds)) new ReceivedFds(fds as number[]).close();
  }
}

export class UnixSocket extends Duplex {
  /** 'stream' or 'seqpacket'. */
  readonly type: Exclude<SocketType, 'dgram'>;
  /** Bytes received and sent so far. */
  bytesRead = 0;
  bytesWritten = 0;

  #fd: number;
  #handle: NativeHandle | null;
  #queue: Pending[] = [];
  #queuedBytes = 0;
  #flushScheduled = false;
  #delivering = false; // inside #onRead: a flush is due when it returns, not on the next tick
  #flushAfterRead = false;
  #blocked = false; // the kernel took less than asked: wait for writable
  #watching = false; // the writable watch is on (it outlives #blocked, see flush)
  #heldCallback: ((err?: Error | null) => void) | null = null;
  #finalCallback: ((err?: Error | null) => void) | null = null;
  #reading = false;
  #receiver: Receiver | null = null;
  #peer: Credentials | undefined;
  #connectWaiter: (() => void) | null = null;
  #maxMessage: number;

  /** @internal Sockets come from connect(), a server, socketPair() or fromFd(). */
  constructor(fd: number, type: Exclude<SocketType, 'dgram'>, options: UnixSocketOptions = {}) {
    const message = type === 'seqpacket';
    super({
      allowHalfOpen: options.allowHalfOpen ?? true,
      readableObjectMode: message,
      writableHighWaterMark: options.highWaterMark ?? 64 * 1024,
    });
    if (!native) throw unsupported('UnixSocket', 'the native addon is not loaded');
    this.type = type;
    this.#fd = fd;
    this.#handle = new native.SocketHandle(fd, Kind[type], false, this.#onRead, this.#onWritable);
    this.#maxMessage = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE;
    if (message) this.#handle.setMaxMessage(this.#maxMessage);
    if (options.passCredentials) check(native.setPassCred(fd, true), 'setsockopt');
    if (options.sendBufferSize !== undefined) check(native.setBufferSize(fd, true, options.sendBufferSize), 'setsockopt');
  }

  /** The descriptor, for inspection; the socket owns it and closes it. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * seqpacket only: the largest message this socket can send (the kernel
   * refuses one over its send buffer) and will accept (maxMessageSize).
   * null for a stream, which has no such limit.
   */
  messageLimits(): { send: number; receive: number } | null {
    if (this.type !== 'seqpacket') return null;
    const sndbuf = check(native!.getBufferSize(this.#fd, true), 'getsockopt');
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
      const r = native!.peerCredentials(this.#fd);
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
    return check(native!.peerPidfd(this.#fd), 'getsockopt');
  }

  /**
   * Writes data with descriptors attached. On a stream socket the fds arrive
   * with the first byte of data; on a seqpacket socket, with the message.
   * Returns false when the caller should wait for 'drain', like write().
   * `onSent` runs once the kernel has the fds (or the socket was destroyed
   * before it got them): from then on the caller may close its copies.
   */
  send(data: Uint8Array | readonly Uint8Array[], fds?: readonly FdLike[] | null, onSent?: () => void): boolean {
    const all = Array.isArray(data) ? (data as readonly Uint8Array[]) : [data as Uint8Array];
    const fdList = toFds(fds);
    const size = all.reduce((n, p) => n + p.byteLength, 0);
    if (size === 0 && (this.type === 'stream' || !fdList)) {
      // A stream cannot carry fds without a byte; an empty seqpacket message
      // would read as end-of-stream on the other side.
      throw afunixError('ERR_AFUNIX_EMPTY', `${this.type} sockets cannot send an empty message${fdList ? ' (fds need at least one byte)' : ''}`);
    }
    // The bytes go through the Writable, so that write()'s return value,
    // 'drain' and writableLength count them. On a stream each piece is its
    // own write (the queue gathers them into one sendmsg, no copy). A
    // seqpacket message must stay one chunk: its largest piece carries it,
    // with the others attached, so the count is off by a header at most.
    const pieces = all.filter((p) => p.byteLength > 0);
    const seqpacket = this.type === 'seqpacket' && pieces.length > 1;
    const carrierAt = seqpacket ? indexOfLargest(pieces) : 0;
    const carried = pieces[carrierAt] ?? Buffer.alloc(0);
    // A fresh view to hang the attachment on, so a caller's Buffer is never tagged.
    const carrier = Buffer.from(carried.buffer, carried.byteOffset, carried.byteLength);
    const sent = onSent ? once(onSent) : null;
    const message = seqpacket ? pieces.map((p, i) => (i === carrierAt ? carrier : p)) : null;
    attachments.set(carrier, { fds: fdList, onSent: sent, message });
    // A write still buffered in the Writable when the socket is destroyed
    // fails through its callback; that also frees the sender's fds.
    let ok = sent ? this.write(carrier, (err) => err && sent()) : this.write(carrier);
    if (!seqpacket) for (let i = 1; i < pieces.length; i++) ok = this.write(pieces[i]!);
    return ok;
  }

  /**
   * Takes over reading: every chunk goes to `receiver` with its fds and
   * credentials, and nothing goes through the Readable side. The fds come
   * with the chunk that holds their first byte (the kernel may put earlier
   * fd-less bytes before it in the same read, and later bytes after it),
   * which is the rule a framing layer needs to attach them to a message.
   */
  setReceiver(receiver: Receiver): void {
    this.#receiver = receiver;
    this.resume();
    this.#readStart();
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
    this.#handle?.ref();
    return this;
  }

  unref(): this {
    this.#handle?.unref();
    return this;
  }

  override _read(): void {
    this.#readStart();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    const empty = this.#refuseEmpty(chunk);
    if (empty) return callback(empty);
    if (chunk.length >= DIRECT_WRITE_MIN && this.#mayWriteNow() && !attachments.has(chunk)) {
      this.#writeNow(chunk, callback);
      return;
    }
    this.#enqueue(chunk);
    this.#afterEnqueue(callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    for (const { chunk } of chunks) {
      const empty = this.#refuseEmpty(chunk);
      if (empty) return callback(empty);
    }
    for (const { chunk } of chunks) this.#enqueue(chunk);
    this.#afterEnqueue(callback);
  }

  // write(Buffer.alloc(0)) would put an empty message on a seqpacket socket,
  // which the peer reads as end-of-stream; send() refuses it, so must write().
  #refuseEmpty(chunk: Buffer): Error | null {
    if (this.type !== 'seqpacket' || chunk.length > 0) return null;
    const attachment = attachments.get(chunk);
    if (attachment?.fds) return null;
    return afunixError('ERR_AFUNIX_EMPTY', 'seqpacket sockets cannot send an empty message (the peer would read it as end-of-stream)');
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (this.#queue.length > 0) this.#finalCallback = callback;
    else this.#shutdown(callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const handle = this.#handle;
    this.#handle = null;
    for (const entry of this.#queue) if (entry.onSent) notifySent(entry);
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#heldCallback = null;
    this.#finalCallback = null;
    debug('socket fd=%d destroy %s', this.#fd, err?.message ?? '');
    if (handle) handle.close(() => callback(err));
    else callback(err);
  }

  #sockName(peer: boolean): string {
    const r = native!.sockName(this.#fd, peer);
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

  #onRead = (
    status: number,
    bytes: Buffer | ArrayBuffer | undefined,
    chunks: unknown[] | null | undefined,
    offset?: number,
    length?: number,
  ): void => {
    if (bytes !== undefined) {
      const data = offset === undefined ? (bytes as Buffer) : poolView(bytes as ArrayBuffer, offset, length!);
      // What the listeners write in reply leaves in one sendmsg as soon as
      // they return: before the Readable's and Writable's own nextTicks run,
      // and without a nextTick of ours.
      this.#delivering = true;
      try {
        if (!chunks) this.#deliver(data, null, null);
        else this.#deliverAll(data, chunks);
      } finally {
        this.#delivering = false;
        if (this.#flushAfterRead) {
          this.#flushAfterRead = false;
          this.flush();
        }
      }
    }
    if (status === 0) return;
    this.#reading = false;
    if (status === uv.EOF) {
      debug('socket fd=%d end of stream', this.#fd);
      this.push(null);
    } else {
      this.destroy(systemError(status, 'recvmsg'));
    }
  };

  #deliverAll(bytes: Buffer, chunks: unknown[]): void {
    let offset = 0;
    for (let i = 0; i < chunks.length; i += 4) {
      if (this.destroyed) {
        closeChunkFds(chunks, i);
        return;
      }
      const len = chunks[i] as number;
      const fds = chunks[i + 1] ? new ReceivedFds(chunks[i + 1] as number[]) : null;
      try {
        this.#deliver(bytes.subarray(offset, offset + len), fds, credentialsOf(chunks[i + 3]));
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

  #enqueue(chunk: Buffer): void {
    const attachment = attachments.get(chunk);
    const fds = attachment?.fds ?? null;
    const bufs = attachment?.message ?? [chunk];
    const size = attachment?.message ? bufs.reduce((n, p) => n + p.byteLength, 0) : chunk.length;
    this.#queuedBytes += size;
    // Never index an empty array with -1: that is a named-property miss,
    // looked up through the prototype chain in the runtime on every write.
    const n = this.#queue.length;
    const last = n > 0 ? this.#queue[n - 1] : undefined;
    // Stream bytes without fds join the previous sendmsg; fds start a new one
    // so that they travel with their own first byte.
    if (this.type === 'stream' && last && !fds && last.bufs.length < MAX_IOV - 16) {
      last.bufs.push(chunk);
      last.size += size;
      return;
    }
    this.#queue.push({ bufs, size, fds, onSent: attachment?.onSent ?? null });
  }

  // Nothing may overtake what is queued, and a write made while a read is
  // delivered waits to leave with the rest of the reply.
  #mayWriteNow(): boolean {
    return this.type === 'stream' && this.#queue.length === 0 && !this.#delivering && this.#handle !== null;
  }

  // sendmsg straight from _write, as libuv's uv_try_write does for net: no
  // queue entry, no tick of ours, and the Writable learns at once that the
  // chunk is gone. What the kernel does not take is queued as usual.
  #writeNow(chunk: Buffer, callback: (err?: Error | null) => void): void {
    const r = this.#handle!.write(chunk, null);
    if (r < 0 && r !== uv.EAGAIN) {
      this.destroy(systemError(r, 'sendmsg'));
      return;
    }
    const sent = r > 0 ? r : 0;
    this.bytesWritten += sent;
    if (sent === chunk.length) return callback();
    this.#enqueue(sent > 0 ? chunk.subarray(sent) : chunk);
    this.#waitWritable();
    this.#afterEnqueue(callback);
  }

  #afterEnqueue(callback: (err?: Error | null) => void): void {
    if (!this.#flushScheduled && !this.#blocked) {
      this.#flushScheduled = true;
      if (this.#delivering) this.#flushAfterRead = true;
      else process.nextTick(flushSoon, this);
    }
    if (this.#queuedBytes < this.writableHighWaterMark) callback();
    else this.#heldCallback = callback;
  }

  /** @internal */
  flush(): void {
    this.#flushScheduled = false;
    const handle = this.#handle;
    if (!handle) return;
    while (this.#queue.length > 0) {
      const head = this.#queue[0]!;
      const r = handle.write(head.bufs.length === 1 ? head.bufs[0]! : head.bufs, head.fds);
      if (r === uv.EAGAIN) {
        this.#waitWritable();
        break;
      }
      if (r < 0) {
        this.destroy(systemError(r, 'sendmsg'));
        return;
      }
      this.bytesWritten += r;
      this.#queuedBytes -= r;
      if (head.onSent) notifySent(head);
      if (r < head.size) {
        this.#consumePartial(head, r);
        this.#waitWritable();
        break;
      }
      this.#queue.shift();
    }
    // Drained, but the writable watch stays on: a writer that just filled the
    // kernel buffer usually fills it again, and every watch change costs an
    // epoll_ctl DEL + ADD (uv_poll_start restarts the poll). The next writable
    // event that finds nothing queued turns it off.
    if (this.#queue.length === 0) this.#blocked = false;
    this.#releaseCallbacks();
  }

  #consumePartial(head: Pending, sent: number): void {
    head.fds = null; // they left with the first byte
    head.size -= sent;
    let left = sent;
    while (left > 0) {
      const b = head.bufs[0]!;
      if (b.byteLength <= left) {
        left -= b.byteLength;
        head.bufs.shift();
      } else {
        head.bufs[0] = b.subarray(left);
        left = 0;
      }
    }
  }

  #waitWritable(): void {
    this.#blocked = true;
    this.#watchWritable(true);
  }

  #watchWritable(on: boolean): void {
    if (this.#watching === on || !this.#handle) return;
    this.#watching = on;
    const r = this.#handle.watchWritable(on);
    if (r < 0) this.destroy(systemError(r, 'poll'));
  }

  #onWritable = (): void => {
    const waiter = this.#connectWaiter;
    this.#connectWaiter = null;
    this.#blocked = false;
    if (this.#queue.length > 0) this.flush();
    else this.#watchWritable(false);
    waiter?.();
  };

  /** @internal Resolves once the socket is writable (an async connect finished). */
  whenWritable(): Promise<void> {
    return new Promise((resolve) => {
      this.#connectWaiter = resolve;
      if (!this.#handle) this.destroy(systemError(uv.EBADF!, 'poll'));
      else this.#watchWritable(true);
    });
  }

  #releaseCallbacks(): void {
    const held = this.#heldCallback;
    if (held && this.#queuedBytes < this.writableHighWaterMark) {
      this.#heldCallback = null;
      held();
    }
    const final = this.#finalCallback;
    if (final && this.#queue.length === 0) {
      this.#finalCallback = null;
      this.#shutdown(final);
    }
  }

  #shutdown(callback: (err?: Error | null) => void): void {
    const r = native!.shutdown(this.#fd, 1);
    // The peer may already be gone; there is nothing left to half-close then.
    if (r < 0 && r !== uv.ENOTCONN) callback(systemError(r, 'shutdown'));
    else callback();
  }
}

function indexOfLargest(pieces: readonly Uint8Array[]): number {
  let at = 0;
  for (let i = 1; i < pieces.length; i++) if (pieces[i]!.byteLength > pieces[at]!.byteLength) at = i;
  return at;
}

function once(fn: () => void): () => void {
  let called = false;
  return () => {
    if (called) return;
    called = true;
    fn();
  };
}

function notifySent(entry: Pending): void {
  const onSent = entry.onSent!;
  entry.onSent = null;
  onSent();
}

function flushSoon(socket: UnixSocket): void {
  socket.flush();
}
