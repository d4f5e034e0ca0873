// File descriptors as values: put an Fd anywhere in arguments or results and
// it travels by SCM_RIGHTS inside the same message.
import { closeSync } from 'node:fs';
import { type FdLike, closeFd, isFdNumber, releaseKept } from '@afunix/transport';
import { invalidArgValue, shownValue } from './errors.js';

// A received Fd nobody took or closed is closed when it is collected: a safety
// net only. Handlers' argument fds are closed deterministically when the
// handler settles; see RpcPeer.
// (A given one is held as ~fd, so that it is closed as closeGiven() does.)
const orphans = new FinalizationRegistry<number>((held) => (held < 0 ? closeGiven(~held) : closeReceived(held)));

function checkedFd(value: FdLike): number {
  const fd = typeof value === 'number' ? value : value?.fd;
  if (!isFdNumber(fd)) throw invalidArgValue('value', `must be an fd number (an integer from 0 to 2^31 - 1) or an object with one; received ${typeof value === 'object' && value !== null ? `an object with fd ${shownValue(fd)}` : shownValue(value)}`);
  return fd;
}

export class Fd {
  #fd: number;
  #owned: boolean;
  /** Close once sent: the descriptor moves to the peer. */
  readonly transfers: boolean;
  // Messages packed with a descriptor this wrapper owns (a transfer, or a
  // received one passed on) that have not left yet, and a publish() still
  // sending it. Until the last is done it stays open: a message queued with
  // a closed number would fail (EBADF), or carry whatever the process
  // opened next under it. A transfer is closed then; a received one whose
  // close() came meanwhile (its handler settled), too.
  #sends = 0;
  #closeWhenSent = false;

  // A received descriptor this wrapper owns, as a transfer too (see
  // transfer()): closed through the addon, and at the thread's end.
  readonly #received: boolean;

  private constructor(fd: number, owned: boolean, transfers = false, received = owned && !transfers) {
    this.#fd = fd;
    this.#owned = owned;
    this.transfers = transfers;
    this.#received = received;
    if (owned) orphans.register(this, received ? fd : ~fd, this);
  }

  /** Wraps a descriptor to send. It is borrowed: sending does not close it. */
  static from(value: FdLike): Fd {
    return new Fd(checkedFd(value), false);
  }

  /**
   * Wraps a descriptor to hand over: it is closed here as soon as the kernel
   * has it in flight to the peer (or the message could not be sent). This is
   * how a broker gives away a file it opened without keeping it open. A
   * received Fd given here is handed over itself (it is taken, EBUSY while a
   * message carrying it waits to leave): like any received one, it is also
   * closed if this thread ends before its message leaves (a worker
   * terminated), which a number that fs did not open cannot be.
   */
  static transfer(value: FdLike): Fd {
    // (Any Fd that owns its descriptor moves, or two would close one number.)
    if (value instanceof Fd && value.owned) return new Fd(value.#release(), true, true, value.#received);
    return new Fd(checkedFd(value), true, true);
  }

  /** @internal A descriptor that arrived from the peer: this wrapper owns it. */
  static received(fd: number): Fd {
    return new Fd(fd, true);
  }

  /** The descriptor number (still owned by this wrapper if it was received). */
  get fd(): number {
    // (Closed while messages carrying it wait to leave, it is closed to its
    // user at once; only those messages still hold the number.)
    if (this.#fd < 0 || this.#closeWhenSent) throw Object.assign(new Error('this Fd was taken or closed'), { code: 'EBADF' });
    return this.#fd;
  }

  /** True for a descriptor that arrived from the peer and is still held. */
  get owned(): boolean {
    return this.#owned && this.#fd >= 0 && !this.#closeWhenSent;
  }

  /**
   * Takes the descriptor: closing it is now the caller's job. EBUSY while a
   * message carrying it waits to leave (the caller could close it under
   * that message): take it once the send has settled.
   */
  take(): number {
    const received = this.#owned && this.#received;
    const fd = this.#release();
    if (received) releaseKept([fd]); // (off the addon's list: see connection.ts)
    return fd;
  }

  // The descriptor, out of this wrapper (now taken): EBUSY while a message
  // carrying it waits to leave (its taker could close it under that message).
  #release(): number {
    const fd = this.fd;
    if (this.#sends > 0) throw Object.assign(new Error('this Fd is in a message still being sent'), { code: 'EBUSY' });
    this.#fd = -1;
    if (this.#owned) orphans.unregister(this);
    this.#owned = false;
    return fd;
  }

  /**
   * @internal A message carrying it was packed, or a broadcast of it began:
   * true if that holds it open until sendDone() (it is ours to close).
   */
  holdForSend(): boolean {
    if (!this.owned) return false;
    this.#sends++;
    return true;
  }

  /** @internal One of those is done (it left, or never will): the last one closes a transfer, or a closed one. */
  sendDone(): void {
    if (this.#sends > 0 && --this.#sends > 0) return;
    if (this.transfers || this.#closeWhenSent) this.close();
  }

  /**
   * Closes a received descriptor (a no-op for borrowed ones and after
   * take()); one that messages still being sent carry, once they have left.
   */
  close(): void {
    if (!this.#owned || this.#fd < 0) return;
    if (this.#sends > 0) {
      this.#closeWhenSent = true;
      return;
    }
    const fd = this.#fd;
    this.#fd = -1;
    this.#owned = false;
    orphans.unregister(this);
    // (A received one through the transport: fs.closeSync() would warn in a
    // worker thread, and one already closed through a raw number someone
    // peeked at is fine.)
    if (this.#received) closeReceived(fd);
    else closeGiven(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

// A descriptor handed over with Fd.transfer() (one it did not receive) is
// the caller's, most often opened with fs: closed behind fs's back in a
// worker thread, it stayed on the worker's list of fds to close at its
// exit, and that closed the number again, by then another file or
// connection of the process.
function closeGiven(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // (Closed already by its owner: nothing left to do.)
  }
}

// A received descriptor, closed: a cleanup path, which must not throw. Its
// number adopted by a socket meanwhile (fromFd(fd.fd) without take()) is
// that socket's now (closeFd() refuses it, EBUSY): it is left to it.
function closeReceived(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // (Owned by a socket of this process: see above.)
  }
}

export function closeAll(fds: Fd[] | null): void {
  if (fds) for (const fd of fds) fd.close();
}

/** A message is done with the Fds it held (Fd.holdForSend()): it left, or never will. */
export function sendsDone(held: Fd[] | null): void {
  if (held) for (const fd of held) fd.sendDone();
}

/**
 * Holds the descriptors we own inside a value (transfers, received ones
 * passed on) for a broadcast: none is closed, whichever of its messages
 * leaves first, until sendsDone() of the list returned here (which closes
 * the transfers no message is carrying).
 */
export function holdForSends(value: unknown): Fd[] | null {
  let held: Fd[] | null = null;
  if (value !== null && typeof value === 'object') {
    walkQuietly(value, (fd) => {
      if (fd.holdForSend()) (held ??= []).push(fd);
    });
  }
  return held;
}

// Levels forEachFd() descends: prepare.ts's MAX_DEPTH, plus the levels an
// error's data and cause add, with room to spare.
const MAX_WALK = 256;

/**
 * Calls `visit` for each Fd inside a value: in arrays, plain objects, Maps
 * (keys and values), Sets, and errors' `data` and `cause`, wherever the
 * codec can carry one. Objects seen once are not walked again (a value the
 * caller built may have cycles), bytes are not walked at all, and the walk
 * stops where the codec does (MAX_WALK: nothing deeper can travel, and a
 * deeper walk could overflow the stack in a cleanup path).
 */
export function forEachFd(value: unknown, visit: (fd: Fd) => void, seen = new Set<object>(), depth = 0): void {
  if (value === null || typeof value !== 'object' || seen.has(value) || depth > MAX_WALK) return;
  if (value instanceof Fd) return visit(value);
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer || value instanceof Date) return;
  seen.add(value);
  if (value instanceof Map) {
    for (const [k, v] of value) {
      forEachFd(k, visit, seen, depth + 1);
      forEachFd(v, visit, seen, depth + 1);
    }
  } else if (value instanceof Set) {
    for (const v of value) forEachFd(v, visit, seen, depth + 1);
  } else if (value instanceof Error) {
    const { data, cause } = value as Error & { data?: unknown };
    forEachFd(data, visit, seen, depth + 1);
    forEachFd(cause, visit, seen, depth + 1);
  } else {
    for (const v of Object.values(value)) forEachFd(v, visit, seen, depth + 1);
  }
}

// Fds inside an answer nobody waits for any more must not leak.
export function releaseFds(value: unknown): void {
  if (value !== null && typeof value === 'object') walkQuietly(value, closeOne);
}

/**
 * Closes the Fd.transfer() descriptors inside a value that will not be
 * sent: the caller gave them away, and nobody else will close them.
 * (Borrowed ones stay open; Fd.close() makes a second close harmless.)
 */
export function closeTransfers(value: unknown): void {
  // (Most answers are no objects: no walk, and no Set made for one.)
  if (value !== null && typeof value === 'object') walkQuietly(value, closeIfTransferred);
}

// A value whose walk throws (a getter, a Proxy) stops the walk there: the
// fds before it are closed, and a cleanup path must not throw.
function walkQuietly(value: object, visit: (fd: Fd) => void): void {
  try {
    forEachFd(value, visit);
  } catch {
    // (Nothing more can be found in it.)
  }
}

function closeOne(fd: Fd): void {
  fd.close();
}

function closeIfTransferred(fd: Fd): void {
  if (fd.transfers) fd.close();
}
