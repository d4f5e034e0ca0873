// Descriptors that arrive over a socket are owned: take them, or they are
// closed as soon as the callback that delivered them returns. A peer can
// therefore never leak or exhaust this process's fd table.
import { closeSync } from 'node:fs';
import { afunixError, invalidArg, uv } from './errors.js';
import { native } from './native.js';

// The addon reads an fd as an Int32: a larger number would wrap onto another
// descriptor (2 ** 32 + 2 is stderr).
const MAX_FD = 0x7fff_ffff;

/** Whether `value` can name a descriptor: an integer from 0 to 2^31 - 1. */
export function isFdNumber(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= MAX_FD;
}

/** Throws ERR_INVALID_ARG_VALUE for an `fd` argument that cannot name a descriptor. */
export function checkFdArg(fd: unknown): asserts fd is number {
  if (!isFdNumber(fd)) throw invalidArg('fd', `must be an fd number (an integer from 0 to 2^31 - 1); received ${String(fd)}`);
}

/**
 * Closes a descriptor that did not come from `fs.open` (one received, or
 * made by socketPairFds()); one that is not open is no error. Through the
 * addon when it is loaded: fs.closeSync() in a worker_thread warns "closed
 * but not opened in unmanaged mode" for every such fd.
 */
export function closeFd(fd: number): void {
  // (The addon would close stdout for 1.5, stderr for 2 ** 32 + 2.)
  checkFdArg(fd);
  if (native) {
    if (native.close(fd) === uv.EBUSY) {
      throw afunixError('EBUSY', `fd ${fd} belongs to a socket of this process: destroy() the socket instead (closed twice, the number could be another file's by then)`, { fd });
    }
    return;
  }
  try {
    closeSync(fd);
  } catch {
    // Not open: nothing to release.
  }
}

/** Something that names an open descriptor we may send: a number or `{ fd }` (e.g. a FileHandle). */
export type FdLike = number | { readonly fd: number };

export function toFd(value: FdLike): number {
  const fd = typeof value === 'number' ? value : value?.fd;
  if (!isFdNumber(fd)) {
    throw invalidArg('fds', 'must hold fd numbers (integers from 0 to 2^31 - 1) or objects with one as `fd`');
  }
  return fd;
}

export function toFds(values: readonly FdLike[] | undefined | null): number[] | null {
  if (values === undefined || values === null) return null;
  // (A lone number, 0 included, is no list: it would be sent as none.)
  if (!Array.isArray(values)) throw invalidArg('fds', `must be an array of fds (or null); received ${typeof values}`);
  if (values.length === 0) return null;
  if (values.length > MAX_FDS) throw invalidArg('fds', `holds ${values.length} fds; at most ${MAX_FDS} travel in one message`);
  return values.map(toFd);
}

/** The kernel's limit on descriptors in one message (SCM_MAX_FD). */
export const MAX_FDS = 253;

export class ReceivedFds implements Iterable<number> {
  #fds: number[];

  constructor(fds: number[]) {
    this.#fds = fds;
  }

  /** How many descriptors are still held (not taken, not closed). */
  get length(): number {
    return this.#fds.reduce((n, fd) => (fd >= 0 ? n + 1 : n), 0);
  }

  /** Takes ownership of all held descriptors: closing them is now yours. */
  take(): number[] {
    const fds = this.#release();
    // The native side closes what a worker terminated mid-delivery had not
    // taken; what was taken may already be elsewhere, so it is told.
    if (fds.length > 0) native?.claim(fds);
    return fds;
  }

  /**
   * Takes the held descriptors, as take() does, for a library that keeps
   * them for its user (an rpc Fd): they stay on the addon's list of fds to
   * close if this thread's environment ends first (a worker terminated),
   * until each is closed with closeFd() or released with releaseKept().
   */
  keep(): number[] {
    const fds = this.#release();
    if (fds.length > 0) native?.keep(fds);
    return fds;
  }

  /** Takes one descriptor by its index among those received. */
  takeAt(index: number): number | undefined {
    const fd = this.#fds[index];
    if (fd === undefined || fd < 0) return undefined;
    this.#fds[index] = -1;
    native?.claim([fd]);
    return fd;
  }

  /** Closes every descriptor that was not taken. Safe to call twice. */
  close(): void {
    for (const fd of this.#release()) {
      try {
        closeFd(fd);
      } catch {
        // Already closed by its taker: nothing of ours to release.
      }
    }
  }

  #release(): number[] {
    const fds = this.#fds.filter((fd) => fd >= 0);
    this.#fds = [];
    return fds;
  }

  [Symbol.iterator](): Iterator<number> {
    return this.#fds.filter((fd) => fd >= 0)[Symbol.iterator]();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Kept descriptors (ReceivedFds.keep()) handed on to their user: closing them is the user's now. */
export function releaseKept(fds: number[]): void {
  if (fds.length > 0) native?.claim(fds);
}
