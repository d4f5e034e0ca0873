// A lock file beside a socket path, held while a server binds there.
//
// Replacing a stale socket file is lstat, probe, unlink, bind: between the
// probe and the unlink another server may have done the same and bound a
// new file, which ours would then remove. POSIX has no "unlink if this is
// still that inode", so servers binding one path take `<path>.afunix.lock`
// (an flock, which the kernel drops if its holder dies) from before they
// look at the path until they listen on it. Once a server listens, its
// file answers for it and needs no lock: none is held afterwards, so a
// server that later loses its path (its file deleted) holds nobody off.
// The lock orders afunix servers only; anything else binding the path is
// still met by the probe and the checks around it.
import { closeSync, constants, fchmodSync, fstatSync, openSync, type Stats, unlinkSync } from 'node:fs';
import { uv } from './errors.js';
import { lstatOrNull, sameInode } from './file-identity.js';
import { type NativeBinding } from './native.js';

/** The lock as a binding server found it: its own, held by another server, or none to be had here. */
export type LockState = 'mine' | 'held' | 'none';

interface LockFile {
  readonly path: string;
  readonly fd: number;
  readonly dev: number;
  readonly ino: number;
  readonly created: boolean;
}

// The holder removes the file as it lets go, so a lock tried meanwhile may
// be on a file no longer at the path: that one is dropped and tried again.
const ATTEMPTS = 8;
// What this library creates, and so all it will lock or remove: a file
// another tool keeps at a similar name is none of its business.
const MODE = 0o600;

export function lockPathOf(address: string): string {
  return `${address}.afunix.lock`;
}

/**
 * Runs `locked` with the lock of `address` (absolute) taken if it can be:
 * 'mine', 'held' by another server, or 'none' where no lock is to be had
 * (no flock here, or a file at the lock's path that is not one of ours):
 * binding then goes on as it did before locks, with the probe alone.
 */
export function withBindLock<T>(n: NativeBinding, address: string, locked: (state: LockState) => T): T {
  const lock = takeBindLock(n, lockPathOf(address));
  try {
    return locked(typeof lock === 'string' ? lock : 'mine');
  } finally {
    if (typeof lock !== 'string') removeLockFile(lock);
  }
}

function takeBindLock(n: NativeBinding, path: string): LockFile | 'held' | 'none' {
  if (n.platform !== 'unix' || typeof n.tryLock !== 'function') return 'none';
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const file = openLockFile(path);
    if (file === 'retry') continue;
    if (file === null) return 'none';
    const r = n.tryLock(file.fd);
    // Locked, or refused, on the file at the path, not one just removed.
    const current = sameInode(lstatOrNull(path), file);
    if (r === 0 && current) return file;
    if (r === 0 || (r === uv.EAGAIN && !current)) {
      closeSync(file.fd);
      continue;
    }
    if (r === uv.EAGAIN) {
      closeSync(file.fd);
      return 'held';
    }
    // No flock on this file system: leave nothing behind.
    removeLockFile(file);
    return 'none';
  }
  return 'none';
}

// Removed while still held (see ATTEMPTS): if we made it, or it is one of
// ours left by a server that died; never another's file at that path.
function removeLockFile(lock: LockFile): void {
  const st = lstatOrNull(lock.path);
  if (st && sameInode(st, lock) && (lock.created || isOurLockFile(st))) {
    try {
      unlinkSync(lock.path);
    } catch {
      // Gone already: nothing to remove.
    }
  }
  closeSync(lock.fd);
}

// Created anew if it can be, so that what we made we also remove. Read-write,
// as flock over NFS needs for an exclusive lock; non-blocking, so that a
// FIFO planted there cannot hang the open; never through a symlink, which
// would create or lock a file elsewhere. Null: a file there that is not
// one of ours, or none to be made.
function openLockFile(path: string): LockFile | 'retry' | null {
  const flags = constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK;
  let fd: number;
  let created = true;
  try {
    fd = openSync(path, flags | constants.O_CREAT | constants.O_EXCL, MODE);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return null;
    created = false;
    try {
      fd = openSync(path, flags);
    } catch (again) {
      return (again as NodeJS.ErrnoException).code === 'ENOENT' ? 'retry' : null; // (removed in between)
    }
  }
  if (created) {
    try {
      fchmodSync(fd, MODE); // (whatever the umask took away)
    } catch {
      // A file system without modes: not one of ours, as checked below.
    }
  }
  const st = fstatSync(fd);
  const file: LockFile = { path, fd, dev: st.dev, ino: st.ino, created };
  if (isOurLockFile(st)) return file;
  if (created) removeLockFile(file);
  else closeSync(fd);
  return null;
}

// Whoever can open the file can hold it, and so keep every server off the
// path: ours are this user's alone, empty, and 0600.
function isOurLockFile(st: Stats): boolean {
  const mine = typeof process.geteuid !== 'function' || st.uid === process.geteuid();
  return mine && st.isFile() && st.size === 0 && (st.mode & 0o777) === MODE;
}
