// Addresses as people write them: a filesystem path, `@name` for a Linux
// abstract address (as ss, socat and Go write it; `\0name` works too), and
// '' for an unnamed socket. On the wire they are sun_path bytes.
import { invalidArg, systemError, uv } from './errors.js';

/** Bytes sun_path holds: 108 on Linux, 104 on macOS and the BSDs. */
export const SUN_PATH_SIZE = process.platform === 'linux' || process.platform === 'win32' ? 108 : 104;

export function isAbstract(address: string): boolean {
  return address.startsWith('@') || address.startsWith('\0');
}

/** Encodes an address for the kernel; too long is ENAMETOOLONG, never cut. */
export function encodeAddress(address: string, syscall = 'bind'): Buffer {
  if (typeof address !== 'string' || address.length === 0) {
    throw invalidArg('address', 'must be a non-empty string (a path, or @name for an abstract address)');
  }
  if (isAbstract(address)) {
    const name = Buffer.from(address.slice(1), 'utf8');
    const bytes = Buffer.concat([Buffer.from([0]), name]);
    if (bytes.length > SUN_PATH_SIZE) throw systemError(uv.ENAMETOOLONG!, syscall, address);
    return bytes;
  }
  if (address.includes('\0')) throw invalidArg('address', 'must not contain NUL bytes except as the first character');
  const bytes = Buffer.from(address, 'utf8');
  // A path needs its terminating NUL inside sun_path.
  if (bytes.length > SUN_PATH_SIZE - 1) throw systemError(uv.ENAMETOOLONG!, syscall, address);
  return bytes;
}

export function decodeAddress(bytes: Uint8Array): string {
  if (bytes.length === 0) return '';
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf[0] === 0) return `@${buf.toString('utf8', 1)}`;
  return buf.toString('utf8');
}
