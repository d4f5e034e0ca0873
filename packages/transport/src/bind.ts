// Binding a name safely: permissions in force before any peer can connect,
// stale socket files replaced, live servers and non-sockets left alone.
import { chmodSync, lstatSync, type Stats, unlinkSync } from 'node:fs';
import { encodeAddress, isAbstract } from './address.js';
import { afunixError, check, invalidArg, uv } from './errors.js';
import { type NativeBinding, native } from './native.js';

/** What we created on disk, so that close() removes only our own file. */
export interface BoundName {
  address: string;
  identity: { dev: number; ino: number } | null;
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

// A socket file nobody listens on answers ECONNREFUSED: that one is stale.
function isStale(n: NativeBinding, kind: number, bytes: Buffer): boolean {
  const probe = n.socket(kind);
  if (probe < 0) return false;
  const r = n.connect(probe, bytes);
  n.close(probe);
  return r === uv.ECONNREFUSED;
}

function addressInUse(address: string, why: string) {
  return afunixError('EADDRINUSE', `bind EADDRINUSE ${address} (${why})`, {
    errno: uv.EADDRINUSE,
    syscall: 'bind',
    address,
  });
}

/**
 * Binds fd to address (undefined: a kernel-chosen abstract name). `mode` is
 * applied to the file before listen(), so there is no moment when a peer
 * could connect through looser permissions.
 */
export function bindSafely(fd: number, kind: number, address: string | undefined, mode?: number): BoundName {
  const n = native!;
  if (address === undefined) {
    if (mode !== undefined) throw invalidArg('mode', 'has no meaning for an autobound (abstract) address');
    check(n.bind(fd, null), 'bind');
    return { address: '', identity: null };
  }
  const bytes = encodeAddress(address, 'bind');
  if (isAbstract(address)) {
    // Abstract names have no file, so no permissions: refuse rather than
    // let the caller believe the socket is locked down.
    if (mode !== undefined) throw invalidArg('mode', 'has no meaning for an abstract address (use a peer-credentials check)');
    check(n.bind(fd, bytes), 'bind', address);
    return { address, identity: null };
  }
  let r = n.bind(fd, bytes);
  if (r === uv.EADDRINUSE) {
    const st = lstatOrNull(address);
    if (st && !st.isSocket()) throw addressInUse(address, 'the path exists and is not a socket; it was left alone');
    if (st && !isStale(n, kind, bytes)) throw addressInUse(address, 'a server is listening there');
    if (st) unlinkSync(address);
    r = n.bind(fd, bytes);
  }
  check(r, 'bind', address);
  const st = lstatSync(address);
  if (mode !== undefined) {
    try {
      chmodSync(address, mode);
    } catch (err) {
      unlinkSync(address);
      throw err;
    }
  }
  return { address, identity: { dev: st.dev, ino: st.ino } };
}

/** Removes the socket file, but only if it is still the one we created. */
export function unlinkBound(name: BoundName): void {
  if (!name.identity) return;
  const st = lstatOrNull(name.address);
  if (st && st.isSocket() && st.dev === name.identity.dev && st.ino === name.identity.ino) {
    try {
      unlinkSync(name.address);
    } catch {
      // Someone removed it between the check and now: the goal is met.
    }
  }
}

