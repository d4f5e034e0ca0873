// A lock file beside a socket path, held by the server bound there.
//
// Replacing a stale socket file is lstat, probe, unlink, bind: between the
// probe and the unlink another server may have done the same and bound a
// new file, which ours would then remove. POSIX has no "unlink if this is
// still that inode", so servers that mean to bind one path take
// `<path>.lock` first (flock: the kernel drops it when its holder exits, so
// a crashed server leaves no lock behind, only the empty file). The lock
// orders afunix servers only; anything else binding the path is still met
// by the probe and the checks around it.
import { closeSync, constants, fstatSync, lstatSync, openSync, type Stats, unlinkSync } from 'node:fs';
import { uv } from './errors.js';
import { type NativeBinding } from './native.js';

export interface BindLock {
  readonly path: string;
  readonly fd: number;
  readonly dev: number;
  readonly ino: number;
}

/** What takeBindLock() found: the lock, `'held'` by another server, or null where locks are not to be had. */
export type LockOutcome = BindLock | 'held' | null;

// The holder removes the file at release, while still holding it; a lock
// taken meanwhile on the removed file is dropped and taken again.
const ATTEMPTS = 8;

export function lockPathOf(address: string): string {
  return `${address}.lock`;
}

/**
 * Takes the lock of `address` without waiting. Null where no lock can be
 * had (no flock on this platform or file system, a lock file that cannot be
 * opened or is not a regular file): binding then goes on as it did before
 * locks, with the probe alone.
 */
export function takeBindLock(n: NativeBinding, address: string): LockOutcome {
  if (n.platform !== 'unix') return null;
  const path = lockPathOf(address);
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const fd = openLockFile(path);
    if (fd < 0) return null;
    const r = n.tryLock(fd);
    const st = r === 0 ? fstatSync(fd) : null;
    if (r === 0 && sameFile(lstatOrNull(path), st!)) return { path, fd, dev: st!.dev, ino: st!.ino };
    closeSync(fd);
    if (r === uv.EAGAIN) return 'held';
    if (r !== 0) return null;
  }
  return null;
}

/** Removes the lock file (if it is still ours) and then lets go of the lock. */
export function releaseBindLock(lock: BindLock): void {
  if (sameFile(lstatOrNull(lock.path), lock)) {
    try {
      unlinkSync(lock.path);
    } catch {
      // Gone already: nothing to remove.
    }
  }
  closeSync(lock.fd);
}

// 0600: whoever can open the file can hold it, and so keep every server off
// the path. Non-blocking, so that a FIFO planted there cannot hang the open;
// never through a symlink, which would create or lock a file elsewhere.
function openLockFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch {
    return -1;
  }
  if (fstatSync(fd).isFile()) return fd;
  closeSync(fd);
  return -1;
}

export function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

function sameFile(a: Stats | null, b: { dev: number; ino: number }): boolean {
  return a !== null && a.isFile() && a.dev === b.dev && a.ino === b.ino;
}
