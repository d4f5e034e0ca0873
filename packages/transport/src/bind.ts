// Binding a name safely: permissions in force before any peer can connect,
// stale socket files replaced, live servers and non-sockets left alone.
import { chmodSync, closeSync, constants, existsSync, fchmodSync, fstatSync, lstatSync, openSync, type Stats, unlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import { encodeAddress, isAbstract } from './address.js';
import { lockPathOf, withBindLock } from './bind-lock.js';
import { afunixError, check, errnoName, invalidArg, uv } from './errors.js';
import { lstatOrNull, sameInode } from './file-identity.js';
import { Kind, type NativeBinding, native } from './native.js';

/** What we created on disk, so that close() removes only our own file. */
export interface BoundName {
  /** The file's absolute path (a chdir() later must not lead elsewhere). */
  address: string;
  /** null: no file (abstract), or one whose identity cannot be read (Windows: 'name'). */
  identity: { dev: number; ino: number } | 'name' | null;
}

// Node cannot stat an AF_UNIX socket file on Windows: libuv's lstat finds a
// reparse point that is no symlink, follows it, and fails. There the file
// is known by its name alone (bindPathByName).
const BY_NAME = process.platform === 'win32';

/**
 * A socket file nobody listens on answers ECONNREFUSED: that one is stale.
 * Given what a probe's connect() answered (null: it connected), returns
 * null for stale, else why the file is not taken for stale. (The node:net
 * fallback probes its own way and asks the same.)
 */
export function whyNotStale(code: string | null): string | null {
  if (code === 'ECONNREFUSED') return null;
  // (EAGAIN: its backlog is full; EINPROGRESS: the connect goes on.)
  if (code === null || code === 'EAGAIN' || code === 'EINPROGRESS') return 'a server is listening there';
  if (code === 'EPROTOTYPE') return 'a server of another socket type is listening there';
  // (EACCES: a file of another user that this one may not connect to.)
  return `it could not be probed: connect gave ${code}; it was left alone`;
}

function notStale(n: NativeBinding, kind: number, bytes: Buffer): string | null {
  const probe = n.socket(kind);
  if (probe < 0) return 'it could not be probed';
  const r = n.connect(probe, bytes);
  n.close(probe);
  return whyNotStale(r === 0 ? null : r === n.EINPROGRESS ? 'EINPROGRESS' : errnoName(r));
}

export function addressInUse(address: string, why: string) {
  return afunixError('EADDRINUSE', `bind EADDRINUSE ${address} (${why})`, {
    errno: uv.EADDRINUSE,
    syscall: 'bind',
    address,
  });
}

/**
 * How long a new socket file of a connection-oriented socket may refuse
 * connections before it is taken for stale: between its bind() and its
 * listen(), another server's file refuses too, and taking it for stale
 * then would leave both servers believing they listen there. (A server
 * spends microseconds in that window; this leaves room for a loaded machine.)
 */
export const SETUP_GRACE_MS = 500;

/** The EADDRINUSE of a socket file that may be another server's, still starting: worth trying again shortly. */
export function isStartingThere(err: unknown): boolean {
  return (err as { starting?: boolean } | null)?.starting === true;
}

function serverStarting(address: string, why = 'a socket file made moments ago refuses connections: a server may be starting there') {
  return Object.assign(addressInUse(address, why), {
    starting: true,
  });
}

/**
 * Binds fd to address (undefined: a kernel-chosen abstract name). `mode` is
 * applied to the file before listen(), so there is no moment when a peer
 * could connect through looser permissions. `afterBind` (a server's
 * listen()) runs while the path's lock is still held; if it throws, our
 * socket file is removed again.
 */
export function bindSafely(fd: number, kind: number, address: string | undefined, mode?: number, afterBind?: () => void): BoundName {
  const n = native!;
  if (address === undefined) {
    if (mode !== undefined) throw invalidArg('mode', 'has no meaning for an autobound (abstract) address');
    check(n.bind(fd, null), 'bind');
    afterBind?.();
    return { address: '', identity: null };
  }
  const bytes = encodeAddress(address, 'bind');
  if (isAbstract(address)) {
    // Abstract names have no file, so no permissions: refuse rather than
    // let the caller believe the socket is locked down.
    if (mode !== undefined) throw invalidArg('mode', 'has no meaning for an abstract address (use a peer-credentials check)');
    check(n.bind(fd, bytes), 'bind', address);
    afterBind?.();
    return { address, identity: null };
  }
  // Absolute, so that a chdir() before close() still finds the file.
  const bound: BoundName = { address: resolve(address), identity: null };
  withBindLock(n, bound.address, (lock) => {
    bound.identity = BY_NAME ? bindPathByName(n, fd, kind, address, bytes, mode) : bindPath(n, fd, kind, address, bytes, mode, lock === 'held' ? lockPathOf(bound.address) : null);
    try {
      afterBind?.();
    } catch (err) {
      unlinkBound(bound);
      throw err;
    }
  });
  return bound;
}

// heldBy: the lock file another server holds, if one does.
function bindPath(n: NativeBinding, fd: number, kind: number, address: string, bytes: Buffer, mode: number | undefined, heldBy: string | null) {
  narrowBeforeBind(fd, mode);
  let r = n.bind(fd, bytes);
  if (r === uv.EADDRINUSE) {
    const st = lstatOrNull(address);
    if (st && !st.isSocket()) throw addressInUse(address, 'the path exists and is not a socket; it was left alone');
    const why = st ? notStale(n, kind, bytes) : null;
    if (why) throw addressInUse(address, why);
    // Another server is binding here, its lock held: the stale file is its
    // to replace (only a free path was worth trying).
    if (heldBy) throw serverStarting(address, `another server is binding there: it holds ${heldBy}`);
    // (A datagram socket is live from its bind(): no such window. A ctime
    // ahead of the clock says nothing of age: taken for old.)
    const age = st ? Date.now() - st.ctimeMs : 0;
    if (st && kind !== Kind.dgram && age >= 0 && age < SETUP_GRACE_MS) throw serverStarting(address);
    // Another server may have replaced the stale file since it was probed
    // (and be starting on it): only the file probed is removed.
    if (st && !unlinkIfSame(address, st)) throw serverStarting(address);
    r = n.bind(fd, bytes);
  }
  check(r, 'bind', address);
  const st = setModeNoFollow(address, mode);
  return { dev: st.dev, ino: st.ino };
}

// Windows: a file in the way is probed by connecting to it, and removed by
// name if nobody answers; nothing else can be learnt of it. A mode has no
// meaning there (access is the directory's ACL).
function bindPathByName(n: NativeBinding, fd: number, kind: number, address: string, bytes: Buffer, mode: number | undefined): 'name' {
  if (mode !== undefined) throw invalidArg('mode', 'has no meaning on Windows (use the directory ACL)');
  let r = n.bind(fd, bytes);
  if (r === uv.EADDRINUSE && existsSync(address)) {
    const why = notStale(n, kind, bytes);
    if (why) throw addressInUse(address, why);
    unlinkSync(address);
    r = n.bind(fd, bytes);
  }
  check(r, 'bind', address);
  return 'name';
}

// Linux makes the socket file with the mode of the socket's own inode, less
// the umask: set that before bind(), so that no peer gets in through looser
// permissions even for a moment. A datagram socket receives from its bind()
// on, before the chmod below could narrow them (helper-36: 1,340 datagrams
// of another uid got through a mode 0o600 in 3,305 binds). The chmod after
// bind() still sets the exact mode, whatever the umask took away. Elsewhere
// a socket's inode has no such say: the chmod alone.
function narrowBeforeBind(fd: number, mode: number | undefined): void {
  if (mode === undefined || process.platform !== 'linux') return;
  try {
    fchmodSync(fd, mode);
  } catch {
    // Refused (a sandbox, a file system of its own): the chmod alone, as
    // elsewhere.
  }
}

function sameFile(a: Stats | null, b: { dev: number; ino: number }): boolean {
  return a !== null && a.isSocket() && sameInode(a, b);
}

// Unlinks the path if it is still the file `st` described; false if not.
function unlinkIfSame(path: string, st: Stats): boolean {
  if (!sameFile(lstatOrNull(path), st)) return false;
  unlinkSync(path);
  return true;
}

// Linux's O_PATH, which fs.constants does not name.
const O_PATH = 0o10000000;

/**
 * Applies `mode` to the socket file bind() just made, and returns its
 * identity, without ever following a symlink: whoever can write the
 * directory could otherwise swap one in after bind(), and chmod() by name
 * would change the mode of the file it points at, with this process's
 * rights. On Linux the path is opened itself (O_PATH | O_NOFOLLOW) and
 * changed through /proc/self/fd; elsewhere it is checked just before.
 */
function setModeNoFollow(address: string, mode: number | undefined): Stats {
  let fd = -1;
  let mine: Stats | null = null;
  try {
    if (process.platform === 'linux') fd = openSync(address, O_PATH | constants.O_NOFOLLOW);
    const st = fd >= 0 ? fstatSync(fd) : lstatSync(address);
    if (!st.isSocket()) throw addressInUse(address, 'the socket file was replaced before its mode was set; it was left alone');
    mine = st;
    if (mode !== undefined) {
      try {
        chmodSync(fd >= 0 ? `/proc/self/fd/${fd}` : address, mode);
      } catch (err) {
        if (fd < 0 || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        chmodSync(address, mode); // no /proc mounted: by name, just checked
      }
    }
    return st;
  } catch (err) {
    // Ours, if it is still there (another server's, if it replaced ours, is
    // left alone): nobody can connect to it.
    if (mine) unlinkIfSame(address, mine);
    throw err;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** Whether the path still leads to the socket file we created (another server may have taken it over). */
export function stillBound(name: BoundName): boolean {
  return !name.identity || name.identity === 'name' || sameFile(lstatOrNull(name.address), name.identity);
}

/** Removes the socket file, but only if it is still the one we created. */
export function unlinkBound(name: BoundName): void {
  if (!name.identity) return;
  if (name.identity === 'name' || sameFile(lstatOrNull(name.address), name.identity)) {
    try {
      unlinkSync(name.address);
    } catch {
      // Someone removed it between the check and now: the goal is met.
    }
  }
}

