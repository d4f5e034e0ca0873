// File descriptors as values: put an Fd anywhere in arguments or results and
// it travels by SCM_RIGHTS inside the same message.
import { closeSync } from 'node:fs';
import type { FdLike } from '@afunix/transport';

// A received Fd nobody took or closed is closed when it is collected: a safety
// net only. Handlers' argument fds are closed deterministically when the
// handler settles; see RpcPeer.
const orphans = new FinalizationRegistry<number>((fd) => {
  try {
    closeSync(fd);
  } catch {
    // Closed by other means already.
  }
});

function checkedFd(value: FdLike): number {
  const fd = typeof value === 'number' ? value : value?.fd;
  if (!Number.isInteger(fd) || fd < 0) throw new TypeError('Fd needs a non-negative integer fd or an object with one');
  return fd;
}

export class Fd {
  #fd: number;
  #owned: boolean;
  /** Close once sent: the descriptor moves to the peer. */
  readonly transfers: boolean;

  private constructor(fd: number, owned: boolean, transfers = false) {
    this.#fd = fd;
    this.#owned = owned;
    this.transfers = transfers;
    if (owned) orphans.register(this, fd, this);
  }

  /** Wraps a descriptor to send. It is borrowed: sending does not close it. */
  static from(value: FdLike): Fd {
    return new Fd(checkedFd(value), false);
  }

  /**
   * Wraps a descriptor to hand over: it is closed here as soon as the kernel
   * has it in flight to the peer (or the message could not be sent). This is
   * how a broker gives away a file it opened without keeping it open.
   */
  static transfer(value: FdLike): Fd {
    return new Fd(checkedFd(value), true, true);
  }

  /** @internal A descriptor that arrived from the peer: this wrapper owns it. */
  static received(fd: number): Fd {
    return new Fd(fd, true);
  }

  /** The descriptor number (still owned by this wrapper if it was received). */
  get fd(): number {
    if (this.#fd < 0) throw new Error('this Fd was taken or closed');
    return this.#fd;
  }

  /** True for a descriptor that arrived from the peer and is still held. */
  get owned(): boolean {
    return this.#owned && this.#fd >= 0;
  }

  /** Takes the descriptor: closing it is now the caller's job. */
  take(): number {
    const fd = this.fd;
    this.#fd = -1;
    if (this.#owned) orphans.unregister(this);
    this.#owned = false;
    return fd;
  }

  /** Closes a received descriptor (a no-op for borrowed ones and after take()). */
  close(): void {
    if (!this.#owned || this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    this.#owned = false;
    orphans.unregister(this);
    try {
      closeSync(fd);
    } catch {
      // Already closed through a raw number someone peeked at.
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Closes a raw descriptor that nobody will take; one already gone is fine. */
export function closeFdQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Nothing to release.
  }
}

export function closeAll(fds: Fd[] | null): void {
  if (fds) for (const fd of fds) fd.close();
}

// Fds inside a result nobody waits for any more must not leak.
export function releaseFds(value: unknown, depth = 0): void {
  if (depth > 32 || value === null || typeof value !== 'object') return;
  if (typeof (value as Fd).take === 'function' && typeof (value as Fd).close === 'function') return (value as Fd).close();
  for (const v of Object.values(value as object)) releaseFds(v, depth + 1);
}
