// systemd socket activation (the sd_listen_fds convention): the service
// manager binds and listens, then starts us with the sockets from fd 3 on,
// LISTEN_FDS saying how many and LISTEN_PID saying they are for this pid.
import { afunixError } from './errors.js';

/** The first inherited socket's fd (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

const DIGITS = /^[0-9]+$/;

export interface ListenFd {
  fd: number;
  /** From LISTEN_FDNAMES (FileDescriptorName= in the .socket unit), or 'unknown'. */
  name: string;
}

/**
 * The listening sockets passed by systemd, or [] when there are none for
 * this process. Like sd_listen_fds(1), it removes the variables from the
 * environment so that child processes do not take the fds for their own.
 */
export function listenFds(env: NodeJS.ProcessEnv = process.env): ListenFd[] {
  const pid = env.LISTEN_PID;
  const count = env.LISTEN_FDS;
  if (pid === undefined || count === undefined) return [];
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  // Digits only, as sd_listen_fds() reads them: Number() would also take
  // ' 2', '0x2', '2.0' or '' (as 0).
  if (!DIGITS.test(pid) || Number(pid) !== process.pid) return [];
  const n = DIGITS.test(count) ? Number(count) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 4096) {
    throw afunixError('ERR_AFUNIX_LISTEN_FDS', `LISTEN_FDS must be a small non-negative integer, got ${JSON.stringify(count)}`);
  }
  return Array.from({ length: n }, (_, i) => ({ fd: LISTEN_FDS_START + i, name: names[i] || 'unknown' }));
}
