// Telling one file from another by identity (device and inode), not by
// name: the name may lead elsewhere by the time it is used again.
import { lstatSync, type Stats } from 'node:fs';

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
