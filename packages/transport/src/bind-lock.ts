// A lock file beside a socket path, held while a server binds there.
//
// Replacing a stale socket file is lstat, probe, unlink, bind: between the
// probe and the unlink another server may have done the same and bound a
// new file, which ours would then remove. POSIX has no "unlink if this is
// still that inode", so servers binding one path take `<path>.lock` (an
// flock, which the kernel drops if its holder dies) from before they look
// at the path until they listen on it. Once a server listens, its file
// answers for it and needs no lock: none is held afterwards, so a server
// that later loses its path (its file deleted) holds nobody else off.
// The lock orders afunix servers only; anything else binding the path is
// still met by the probe and the checks around it.
import { closeSync, constants, fstatSync, lstatSync, openSync, type Stats, unlinkSync } from 'node:fs';
import { uv } from './errors.js';
import { type NativeBinding } from './native.js';

/** Whether the lock was had: `'held'` by another server, or `'none'` to be had here. */
export type LockState = 'mine' | 'held' | 'none';

interface BindLock {
  readonly path: string;
  readonly fd: number;
  readonly dev: number;
  readonly ino: number;
}

// The holder removes the file as it lets go, so a lock taken meanwhile may
// be on a file no longer at the path: that one is dropped and taken again.
const ATTEMPTS = 8;

export function lockPathOf(address: string): string {
  return `${address}.lock`;
}

/**
 * Runs `locked` with the lock of `address` (absolute) taken if it can be:
 * 'mine', 'held' by another server, or 'none' where no lock is to be had
 * (no flock here, or a file at the lock's path that is not an empty file of
 * ours): binding then goes on as it did before locks, with the probe alone.
 */
export function withBindLock<T>(n: NativeBinding, address: string, locked: (state: LockState) => T): T {
  const lock = takeBindLock(n, lockPathOf(address));
  try {
    return locked(typeof lock === 'string' ? lock : 'mine');
  } finally {
    if (typeof lock !== 'string') releaseBindLock(lock);
  }
}

function takeBindLock(n: NativeBinding, path: string): BindLock | 'held' | 'none' {
  if (n.platform !== 'unix' || typeof n.tryLock !== 'function') return 'none';
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const fd = openLockFile(path);
    if (fd < 0) return 'none';
    const r = n.tryLock(fd);
    const st = r === 0 ? fstatSync(fd) : null;
    if (st && sameInode(lstatOrNull(path), st)) return { path, fd, dev: st.dev, ino: st.ino };
    closeSync(fd);
    if (r === uv.EAGAIN) return 'held';
    if (r !== 0) return 'none';
  }
  return 'none';
}

// Removed while still held (see ATTEMPTS), unless it is no longer ours.
function releaseBindLock(lock: BindLock): void {
  const st = lstatOrNull(lock.path);
  if (st && sameInode(st, lock) && isOurLockFile(st)) {
    try {
      unlinkSync(lock.path);
    } catch {
      // Gone already: nothing to remove.
    }
  }
  closeSync(lock.fd);
}

// Created 0600: whoever can open the file can hold it, and so keep every
// server off the path. Read-write, as flock over NFS needs for an exclusive
// lock; non-blocking, so that a FIFO planted there cannot hang the open;
// never through a symlink, which would create or lock a file elsewhere. A
// file we did not make (not empty, or another user's) is none of ours to
// lock or to remove.
function openLockFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch {
    return -1;
  }
  if (isOurLockFile(fstatSync(fd))) return fd;
  closeSync(fd);
  return -1;
}

function isOurLockFile(st: Stats): boolean {
  return st.isFile() && st.size === 0 && (typeof process.geteuid !== 'function' || st.uid === process.geteuid());
}

export function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

/** Whether `a` is the file `b` described (same device and inode); its type is the caller's to check. */
export function sameInode(a: Stats | null, b: { dev: number; ino: number }): boolean {
  return a !== null && a.dev === b.dev && a.ino === b.ino;
}
