// The write side of a UnixSocket: what write(), send() and end() hand over
// waits here until the kernel takes it. Writes made in one tick leave in one
// sendmsg, a few KiB at a time so that the peer can start on them early; a
// large chunk with nothing ahead of it leaves at once; EAGAIN becomes
// backpressure (the Writable's callback is held until there is room).
import { type AfunixError, afunixError, systemError, uv } from './errors.js';
import { type NativeHandle, native } from './native.js';
import { MAX_IOV, type SentCallback, attachmentOf } from './send-data.js';

type Callback = (err?: Error | null) => void;

/** What the queue needs of its socket. */
export interface WriteHost {
  readonly type: 'stream' | 'seqpacket';
  readonly writableHighWaterMark: number;
  bytesWritten: number;
  destroy(err?: Error): unknown;
  /** The queue fell below the high-water mark after a send() that found it full. */
  queueDrained(): void;
  /** Writes began (true) or stopped (false) waiting for the socket to be writable. */
  writesWaiting(waiting: boolean): void;
}

/** Hears that a batch of writes is about to leave (see WriteQueue.batchStarted). */
export interface BatchEndListener {
  batchEnded(): void;
}

interface Pending {
  bufs: Uint8Array[];
  size: number;
  fds: number[] | null;
  /** Bytes of the send() that brought the fds: later writes may join its entry. */
  sendBytes: number;
  /** Called once the fds have left (or never will): the sender's copies are free. */
  onSent: SentCallback | null;
}

// Messages handed to one writeMessages() call (the addon's kMaxBatchMessages).
const MAX_BATCH_MESSAGES = 64;
// A stream write this small is one skb in Linux, taken whole or not at all
// whatever the send buffer's size (its minimum holds two of them), so a
// batch of them cannot leave one half sent with the next behind it. The
// addon checks every message left whole all the same. Elsewhere (macOS) a
// small stream write can be cut short, so streams are not batched there.
const ATOMIC_STREAM_WRITE = 1024;
const STREAM_BATCHES = process.platform === 'linux';
// A stream chunk this large fills a sendmsg by itself: waiting a tick to
// gather it with others saves no syscall, so it is written at once.
const DIRECT_WRITE_MIN = 16 * 1024;
// Small writes wait for the end of the tick (or of the batch, see
// batchStarted()) to leave together, but no longer than it takes to gather
// this many bytes (measured: 4 KiB took W2 of bench/suites/rpc.mjs from 214k
// to 272k calls/s; 1 and 2 KiB did about as well).
const EARLY_FLUSH_BYTES = 4 * 1024;

// A queue's flags (WriteQueue.#flags).
const FLUSH_SCHEDULED = 1 << 0;
const FLUSHING = 1 << 1; // inside flush(): an onSent callback's write leaves in its loop
const FLUSH_AT_BATCH_END = 1 << 2;
const BLOCKED = 1 << 3; // the kernel took less than asked: wait for writable
const WATCHING = 1 << 4; // the writable watch is on (it outlives BLOCKED, see flush)
const DRAIN_OWED = 1 << 5; // a send() found the queue full

// The queue of every WriteQueue that has not written yet, or has drained:
// never written to (#push() puts a new array in its place first).
const NO_QUEUE: Pending[] = [];

export class WriteQueue {
  #host: WriteHost;
  #fd: number;
  #handle: NativeHandle | null = null;
  // NO_QUEUE until the first write: an idle connection holds no array.
  #queue: Pending[] = NO_QUEUE;
  #queuedBytes = 0;
  // FLUSH_SCHEDULED and the other flags above, in one field: as six
  // booleans they were 40 bytes of every idle connection.
  #flags = 0;
  #batchDepth = 0; // see batchStarted(): a flush is due when the batch ends, not on the next tick
  #batchEndListener: BatchEndListener | null = null;
  #heldCallback: Callback | null = null;
  #heldSize = 0; // what the Writable counts of the write whose callback is held
  #finalCallback: Callback | null = null;
  #connectWaiter: (() => void) | null = null;

  #has(flag: number): boolean {
    return (this.#flags & flag) !== 0;
  }

  constructor(host: WriteHost, fd: number) {
    this.#host = host;
    this.#fd = fd;
  }

  /** The socket's handle, made after the queue because it calls onWritable(). */
  attach(handle: NativeHandle): void {
    this.#handle = handle;
  }

  /** The Writable's _write. */
  write(chunk: Buffer, callback: Callback): void {
    const empty = this.#refuseEmpty(chunk);
    if (empty) return callback(empty);
    if (chunk.length >= DIRECT_WRITE_MIN && this.#mayWriteNow() && !attachmentOf(chunk)) {
      this.#writeNow(chunk, callback);
      return;
    }
    this.#enqueue(chunk);
    this.#afterEnqueue(callback, chunk.length);
  }

  /** The Writable's _writev. */
  writev(chunks: Array<{ chunk: Buffer }>, callback: Callback): void {
    for (const { chunk } of chunks) {
      const empty = this.#refuseEmpty(chunk);
      if (empty) return callback(empty);
    }
    let counted = 0;
    for (const { chunk } of chunks) {
      this.#enqueue(chunk);
      counted += chunk.length;
    }
    this.#afterEnqueue(callback, counted);
  }

  /**
   * A send() that need not go through the Writable (nothing waits in it):
   * the pieces are queued as they are, fds and onSent with them, with no
   * write request, carrier view or callback. `pieces` becomes the queue's.
   * Returns false at the high-water mark; the host's queueDrained() follows.
   */
  send(pieces: Uint8Array[], size: number, fds: number[] | null, onSent: SentCallback | null): boolean {
    if (!fds && !onSent && size >= DIRECT_WRITE_MIN && this.#mayWriteNow()) {
      const sent = this.#sendNow(pieces.length === 1 ? pieces[0]! : pieces);
      if (typeof sent !== 'number' || sent === size) return true;
      // The queue was empty: what the kernel did not take is its head.
      this.#push(pieces, size, null, null);
      this.#queuedBytes -= sent;
      consumePartial(this.#queue[0]!, sent);
      this.#waitWritable();
    } else {
      this.#push(pieces, size, fds, onSent);
      this.#scheduleFlush();
    }
    if (this.#hasRoom()) return true;
    this.#flags |= DRAIN_OWED;
    return false;
  }

  /** Bytes waiting for the kernel, whichever way they came. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** What the Writable still counts of them (a write whose callback is held). */
  get heldBytes(): number {
    return this.#heldCallback ? this.#heldSize : 0;
  }

  /** send() found the queue full and it has not drained since. */
  get drainOwed(): boolean {
    return this.#has(DRAIN_OWED);
  }

  /** The Writable's _final: shut our side once everything queued has left. */
  final(callback: Callback): void {
    if (this.#queue.length > 0) this.#finalCallback = callback;
    else this.#shutdown(callback);
  }

  /** The socket is being destroyed (with `err`, if any): nothing queued will leave. */
  close(err: Error | null): void {
    this.#handle = null;
    for (const entry of this.#queue) if (entry.onSent) notifySent(entry);
    this.#queue = NO_QUEUE;
    this.#queuedBytes = 0;
    this.#finalCallback = null;
    this.#flags &= ~DRAIN_OWED;
    // The Writable fails the writes it holds (ERR_STREAM_DESTROYED, which
    // also frees the fds of the send()s among them) only once the write in
    // flight has its callback. That one gets the socket's error, if any; a
    // plain destroy() leaves the stream unerrored, as net's does.
    const held = this.#heldCallback;
    this.#heldCallback = null;
    if (held) held(err);
  }

  // A batch is a stretch of code whose writes leave together when it ends:
  // the delivery of a read (the listeners' replies), a server's 'connection'
  // emission (a greeting). They go in one sendmsg as soon as the code
  // returns, before the Readable's and Writable's own nextTicks run, and
  // without a nextTick of ours: on a server taking thousands of
  // connections, a tick each was a tick object and a run of Node's tick
  // queue (with its allocations) per connection.
  batchStarted(): void {
    this.#batchDepth++;
  }

  batchEnded(): void {
    // Only the outermost batch ends: inner ones belong to it.
    if (this.#batchDepth !== 1) {
      this.#batchDepth = Math.max(0, this.#batchDepth - 1);
      return;
    }
    try {
      // What a listener writes still belongs to the batch, and so does a
      // listener that registers meanwhile (an onSent callback that sends).
      for (let listener = this.#batchEndListener; listener !== null; listener = this.#batchEndListener) {
        this.#batchEndListener = null;
        listener.batchEnded();
      }
    } finally {
      this.#batchDepth = 0;
      // Left registered by a listener that threw: it still gets its call.
      const left = this.#batchEndListener;
      this.#batchEndListener = null;
      if (left) process.nextTick(callBatchEnded, left);
      if (this.#has(FLUSH_AT_BATCH_END)) {
        this.#flags &= ~FLUSH_AT_BATCH_END;
        this.flush();
      }
    }
  }

  /**
   * Calls `listener.batchEnded()` when the batch in progress ends, just
   * before its writes leave, and returns true; returns false (and will not
   * call it) outside a batch, or if another listener holds the one place.
   */
  atBatchEnd(listener: BatchEndListener): boolean {
    if (this.#batchDepth === 0 || (this.#batchEndListener !== null && this.#batchEndListener !== listener)) return false;
    this.#batchEndListener = listener;
    return true;
  }

  // write(Buffer.alloc(0)) would put an empty message on a seqpacket socket,
  // which the peer reads as end-of-stream; send() refuses it, so must write().
  #refuseEmpty(chunk: Buffer): Error | null {
    if (this.#host.type !== 'seqpacket' || chunk.length > 0) return null;
    const attachment = attachmentOf(chunk);
    if (attachment?.fds) return null;
    return afunixError('ERR_AFUNIX_EMPTY', 'seqpacket sockets cannot send an empty message (the peer would read it as end-of-stream)');
  }

  #enqueue(chunk: Buffer): void {
    const attachment = attachmentOf(chunk);
    this.#push([chunk], chunk.length, attachment?.fds ?? null, attachment?.onSent ?? null);
  }

  // Stream bytes join the previous sendmsg; fds start a new one so that
  // they travel with their own first byte, and so does a send() waiting to
  // hear that its data left (its onSent). Every seqpacket message is an
  // entry of its own.
  #push(bufs: Uint8Array[], size: number, fds: number[] | null, onSent: SentCallback | null): void {
    this.#queuedBytes += size;
    // Never index an empty array with -1: that is a named-property miss,
    // looked up through the prototype chain in the runtime on every write.
    const n = this.#queue.length;
    const last = n > 0 ? this.#queue[n - 1] : undefined;
    if (this.#host.type === 'stream' && last && !fds && !onSent && last.bufs.length + bufs.length < MAX_IOV - 16) {
      for (let i = 0; i < bufs.length; i++) last.bufs.push(bufs[i]!);
      last.size += size;
      return;
    }
    if (n === 0) this.#queue = [];
    this.#queue.push({ bufs, size, fds, sendBytes: size, onSent });
  }

  // Nothing may overtake what is queued, and a write made in a batch waits
  // to leave with the rest of it.
  #mayWriteNow(): boolean {
    return this.#host.type === 'stream' && this.#queue.length === 0 && this.#batchDepth === 0 && this.#handle !== null;
  }

  // sendmsg straight from _write, as libuv's uv_try_write does for net: no
  // queue entry, no tick of ours, and the Writable learns at once that the
  // chunk is gone. What the kernel does not take is queued as usual.
  #writeNow(chunk: Buffer, callback: Callback): void {
    const sent = this.#sendNow(chunk);
    // Failed, and the socket destroyed with the error: the write hears it
    // too, as net's does (a promisified write() would wait for ever).
    if (typeof sent !== 'number') return callback(sent);
    if (sent === chunk.length) return callback();
    this.#enqueue(sent > 0 ? chunk.subarray(sent) : chunk);
    this.#waitWritable();
    this.#afterEnqueue(callback, chunk.length);
  }

  // One sendmsg now, with nothing queued ahead: returns the bytes the
  // kernel took (the caller queues the rest), or the error if the write
  // failed and destroyed the socket.
  #sendNow(data: Uint8Array | Uint8Array[]): number | Error {
    const r = native!.write(this.#handle!.id, data, null);
    if (r < 0 && r !== uv.EAGAIN) {
      const err = systemError(r, 'sendmsg');
      this.#host.destroy(err);
      return err;
    }
    const sent = r > 0 ? r : 0;
    this.#host.bytesWritten += sent;
    return sent;
  }

  // `counted`: what the Writable counts of this write until its callback.
  #afterEnqueue(callback: Callback, counted: number): void {
    this.#scheduleFlush();
    if (this.#hasRoom()) return callback();
    this.#heldCallback = callback;
    this.#heldSize = counted;
  }

  // Under the high-water mark; an empty queue has room whatever the mark
  // (a mark of 0 would otherwise hold every write back for good).
  #hasRoom(): boolean {
    return this.#queuedBytes === 0 || this.#queuedBytes < this.#host.writableHighWaterMark;
  }

  #scheduleFlush(): void {
    // Coalescing saves syscalls, but a peer that hears nothing until a whole
    // read batch (up to 120 KiB of requests) has been answered sits idle
    // meanwhile: once this much is queued it leaves, and the peer can start
    // on it while the rest is written.
    if (this.#queuedBytes >= EARLY_FLUSH_BYTES && !this.#has(BLOCKED)) this.flush();
    if (!this.#has(FLUSH_SCHEDULED) && !this.#has(BLOCKED) && this.#queue.length > 0) {
      this.#flags |= FLUSH_SCHEDULED;
      if (this.#batchDepth > 0) this.#flags |= FLUSH_AT_BATCH_END;
      else process.nextTick(flushSoon, this);
    }
  }

  flush(): void {
    // Inside a running flush (an onSent callback wrote): that one sends it.
    if (this.#has(FLUSHING)) return;
    this.#flags &= ~FLUSH_SCHEDULED;
    const handle = this.#handle;
    if (!handle) return;
    const had = this.#queue.length > 0;
    // An onSent callback may write: what it queues leaves in this loop.
    this.#flags |= FLUSHING;
    try {
      while (this.#queue.length > 0 && this.#handle) {
        const run = this.#batchable();
        if (!(run > 1 ? this.#writeBatch(handle, run) : this.#writeHead(handle))) break;
      }
    } finally {
      this.#flags &= ~FLUSHING;
    }
    if (!this.#handle) return; // destroyed by a failed write
    // Drained, but the writable watch stays on: a writer that just filled the
    // kernel buffer usually fills it again, and every watch change costs an
    // epoll_ctl DEL + ADD (uv_poll_start restarts the poll). The next writable
    // event that finds nothing queued turns it off.
    if (this.#queue.length === 0) {
      this.#flags &= ~BLOCKED;
      // An array emptied by shift() or splice() keeps the storage it grew
      // (~150 bytes): an idle connection should not hold it.
      if (had) this.#queue = NO_QUEUE;
    }
    this.#releaseCallbacks();
  }

  // How many entries at the head may leave as one batch of whole messages
  // (sendmmsg): seqpacket messages always; on a stream, entries small enough
  // that the kernel takes each whole or not at all (the fd-carrying writes
  // that cannot be gathered into one sendmsg).
  #batchable(): number {
    const queue = this.#queue;
    const most = Math.min(queue.length, MAX_BATCH_MESSAGES);
    if (this.#host.type === 'seqpacket') return most;
    if (!STREAM_BATCHES) return 0;
    let n = 0;
    while (n < most && queue[n]!.size <= ATOMIC_STREAM_WRITE) n++;
    return n;
  }

  // The first `count` entries in one syscall where the platform has one.
  // Returns false if nothing more can be written now.
  #writeBatch(handle: NativeHandle, count: number): boolean {
    const batch: Array<Uint8Array | Uint8Array[] | number[] | null> = [];
    for (let i = 0; i < count; i++) {
      const entry = this.#queue[i]!;
      batch.push(entry.bufs.length === 1 ? entry.bufs[0]! : entry.bufs, entry.fds);
    }
    const r = handle.writeMessages(batch);
    if (r < 0) return this.#failedWrite(r);
    // Fewer than asked: the next call reports why (an error is not kept).
    const sent = this.#queue.splice(0, r);
    for (const entry of sent) {
      this.#host.bytesWritten += entry.size;
      this.#queuedBytes -= entry.size;
    }
    for (const entry of sent) if (entry.onSent) notifySent(entry);
    return true;
  }

  // The head entry in one sendmsg (on a stream, an entry gathers many
  // writes). Returns false if nothing more can be written now.
  #writeHead(handle: NativeHandle): boolean {
    const head = this.#queue[0]!;
    const r = native!.write(handle.id, head.bufs.length === 1 ? head.bufs[0]! : head.bufs, head.fds);
    if (r < 0) return this.#failedWrite(r);
    this.#host.bytesWritten += r;
    this.#queuedBytes -= r;
    const done = r === head.size;
    if (done) this.#queue.shift();
    else consumePartial(head, r);
    // The queue is up to date before the sender hears its fds have left.
    if (head.onSent) notifySent(head);
    if (done) return true;
    this.#waitWritable();
    return false;
  }

  // A write that returned an error code: EAGAIN waits for room, and
  // nothing more is written now; a refusal of the head's fds fails that
  // send() alone, and writing goes on; anything else ends the socket.
  // Returns whether to go on.
  #failedWrite(r: number): boolean {
    if (r === uv.EAGAIN) this.#waitWritable();
    else if (r === uv.EBADF && this.#refuseHead(r)) return true;
    else this.#host.destroy(systemError(r, 'sendmsg'));
    return false;
  }

  // The kernel checks a sendmsg's fds before it takes a byte: when one is
  // not open (EBADF) nothing of the head's send() left, and the stream is
  // whole without it (an entry with fds was never partly sent). A send()
  // that asked to hear (onSent) is told why and taken out; one that did
  // not would be lost unnoticed, so the socket fails instead.
  #refuseHead(r: number): boolean {
    const head = this.#queue[0]!;
    if (!head.fds || !head.onSent) return false;
    this.#queuedBytes -= head.sendBytes;
    if (head.sendBytes === head.size) this.#queue.shift();
    else consumePartial(head, head.sendBytes);
    notifySent(head, systemError(r, 'sendmsg'));
    return true;
  }

  #waitWritable(): void {
    this.#flags |= BLOCKED;
    this.#watchWritable(true);
  }

  #watchWritable(on: boolean): void {
    if (this.#has(WATCHING) === on || !this.#handle) return;
    if (on) this.#flags |= WATCHING;
    else this.#flags &= ~WATCHING;
    const r = this.#handle.watchWritable(on);
    if (r < 0) return void this.#host.destroy(systemError(r, 'poll'));
    this.#host.writesWaiting(on);
  }

  /** Whether writes wait for the socket to be writable (the writable watch is on). */
  get waitingForRoom(): boolean {
    return this.#has(WATCHING);
  }

  /** The socket is writable again (the handle's writable callback). */
  onWritable(): void {
    const waiter = this.#connectWaiter;
    this.#connectWaiter = null;
    this.#flags &= ~BLOCKED;
    if (this.#queue.length > 0) this.flush();
    else this.#watchWritable(false);
    waiter?.();
  }

  /** Resolves once the socket is writable (an async connect finished). */
  whenWritable(): Promise<void> {
    return new Promise((resolve) => {
      this.#connectWaiter = resolve;
      if (!this.#handle) this.#host.destroy(systemError(uv.EBADF!, 'poll'));
      else this.#watchWritable(true);
    });
  }

  #releaseCallbacks(): void {
    const room = this.#hasRoom();
    // Before the held callback: while the Writable still owes its own
    // 'drain' (a write() returned false too), the host leaves it to that one.
    if (this.#has(DRAIN_OWED) && room && this.#handle) {
      this.#flags &= ~DRAIN_OWED;
      this.#host.queueDrained();
    }
    const held = this.#heldCallback;
    // (A 'drain' listener may have filled the queue again.)
    if (held && this.#hasRoom()) {
      this.#heldCallback = null;
      held();
    }
    const final = this.#finalCallback;
    if (final && this.#queue.length === 0) {
      this.#finalCallback = null;
      this.#shutdown(final);
    }
  }

  #shutdown(callback: Callback): void {
    const r = native!.shutdown(this.#fd, 1);
    // The peer may already be gone; there is nothing left to half-close then.
    if (r < 0 && r !== uv.ENOTCONN) callback(systemError(r, 'shutdown'));
    else callback();
  }
}

function consumePartial(head: Pending, sent: number): void {
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

function notifySent(entry: Pending, err?: AfunixError): void {
  const onSent = entry.onSent!;
  entry.onSent = null;
  onSent(err);
}

function callBatchEnded(listener: BatchEndListener): void {
  listener.batchEnded();
}

function flushSoon(queue: WriteQueue): void {
  queue.flush();
}
