// The one place where native results become exceptions. Errors look like
// Node's own: `code`, `errno`, `syscall`, and `address` where there is one.
import { getSystemErrorMap, getSystemErrorName } from 'node:util';
import { native } from './native.js';

export interface AfunixError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
  address?: string;
}

/** An error with a stable `code`, for conditions that are not an errno. */
export function afunixError(code: string, message: string, extra?: Record<string, unknown>): AfunixError {
  const err = new Error(message) as AfunixError;
  err.code = code;
  if (extra) Object.assign(err, extra);
  return err;
}

export function errnoName(status: number): string {
  if (native && status === native.SocketHandle.ERR_CTRUNC) return 'ERR_SOCKET_CTRUNC';
  try {
    return getSystemErrorName(status);
  } catch {
    return 'EUNKNOWN';
  }
}

/** Turns a negative status from the addon into an Error shaped like Node's. */
export function systemError(status: number, syscall: string, address?: string): AfunixError {
  const code = errnoName(status);
  const detail = code === 'ERR_SOCKET_CTRUNC' ? ' (file descriptors were lost: the fd table is full)' : '';
  const err = new Error(`${syscall} ${code}${address ? ` ${address}` : ''}${detail}`) as AfunixError;
  err.code = code;
  err.errno = status;
  err.syscall = syscall;
  if (address !== undefined) err.address = address;
  return err;
}

/** Returns a non-negative result, or throws it as a system error. */
export function check(status: number, syscall: string, address?: string): number {
  if (status < 0) throw systemError(status, syscall, address);
  return status;
}

/** The error for a call that this platform or build cannot do. */
export function unsupported(feature: string, detail?: string): AfunixError {
  return afunixError(
    'ERR_AFUNIX_UNSUPPORTED',
    `${feature} is not available here${detail ? `: ${detail}` : ''}`,
    { feature },
  );
}

/** What an operation given up on through its AbortSignal fails with, as Node's own do. */
export function abortError(reason: unknown): AfunixError {
  const err = afunixError('ABORT_ERR', 'The operation was aborted');
  err.name = 'AbortError';
  (err as Error).cause = reason;
  return err;
}

/** A bad argument: a TypeError, as Node's own ERR_INVALID_ARG_VALUE and the other packages' are. */
export function invalidArg(name: string, message: string): AfunixError {
  return Object.assign(new TypeError(`The argument '${name}' ${message}`), { code: 'ERR_INVALID_ARG_VALUE' });
}

/** libuv's error numbers by name (they differ between unix and Windows). */
export const uv: Readonly<Record<string, number>> = Object.fromEntries(
  [...getSystemErrorMap()].map(([status, [name]]) => [name, status]),
);
