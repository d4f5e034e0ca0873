// Who is at the other end: the kernel's peer credentials (SO_PEERCRED), with
// names from the passwd/group files and the executable from /proc.
import { readFileSync, readlinkSync } from 'node:fs';
import type { Credentials } from '@afunix/transport';
import { codeOf } from './errors.js';

export interface PeerInfo {
  pid: number;
  uid: number;
  gid: number;
  user: string | null;
  group: string | null;
  /** /proc/<pid>/exe, or null when it cannot be read (another user's process, not Linux). */
  exe: string | null;
  /** Why exe is null. */
  exeError?: string;
}

/** The name for an id in an /etc/passwd-style file (name:x:id:...), or null. */
function nameFor(file: string, id: number): string | null {
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const fields = line.split(':');
      if (fields[2] === String(id)) return fields[0] ?? null;
    }
  } catch {
    // No such file here: numbers only.
  }
  return null;
}

export function describePeer(peer: Credentials): PeerInfo {
  const info: PeerInfo = {
    pid: peer.pid,
    uid: peer.uid,
    gid: peer.gid,
    user: nameFor('/etc/passwd', peer.uid),
    group: nameFor('/etc/group', peer.gid),
    exe: null,
  };
  // pid 0: the server lives in another pid namespace, where we cannot look.
  if (peer.pid <= 0) {
    info.exeError = 'the server is in another pid namespace';
    return info;
  }
  try {
    info.exe = readlinkSync(`/proc/${peer.pid}/exe`);
  } catch (err) {
    info.exeError = codeOf(err) || (err as Error).message;
  }
  return info;
}

export function named(id: number, name: string | null): string {
  return name === null ? String(id) : `${id} (${name})`;
}
