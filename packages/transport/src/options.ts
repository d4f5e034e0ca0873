// Options checked where they are given (connect, createServer, socketPair,
// fromFd, createDatagram) rather than where each socket is made: a server's
// bad option would otherwise fail every connection it accepts, each as an
// 'error' of its own, and a bad number be ignored by the addon while
// messageLimits() reported it. `null` is an option left out.
import { invalidArg } from './errors.js';

/** The addon's range for maxMessageSize. */
const MAX_MESSAGE_LIMIT = 1024 ** 3;

/** `options` as an object ({} for undefined or null); anything else is ERR_INVALID_ARG_VALUE. */
export function optionsObject<T extends object>(options: T | null | undefined): T {
  if (options === undefined || options === null) return {} as T;
  if (typeof options !== 'object') throw invalidArg('options', `must be an object; received ${typeof options}`);
  return options;
}

function given(options: object, key: string): unknown {
  const value = (options as Record<string, unknown>)[key];
  return value === null ? undefined : value;
}

function checkInteger(options: object, key: string, min: number, max: number): void {
  const v = given(options, key);
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalidArg(`options.${key}`, `must be an integer from ${min} to ${max}; received ${typeof v === 'number' ? v : typeof v}`);
  }
}

function checkBoolean(options: object, key: string): void {
  const v = given(options, key);
  if (v !== undefined && typeof v !== 'boolean') throw invalidArg(`options.${key}`, `must be a boolean; received ${typeof v}`);
}

/** What every stream or seqpacket socket takes (UnixSocketOptions). */
export function checkSocketOptions(options: object): void {
  checkBoolean(options, 'allowHalfOpen');
  checkBoolean(options, 'passCredentials');
  checkInteger(options, 'highWaterMark', 0, Number.MAX_SAFE_INTEGER);
  checkInteger(options, 'maxMessageSize', 1, MAX_MESSAGE_LIMIT);
  checkInteger(options, 'sendBufferSize', 1, 2 ** 31 - 1);
}

/** A server's own options, beside the sockets'. */
export function checkServerOptions(options: object): void {
  checkSocketOptions(options);
  checkInteger(options, 'backlog', 0, 2 ** 31 - 1);
  checkInteger(options, 'mode', 0, 0o7777);
}

/** A datagram socket's bind() options. */
export function checkBindOptions(options: object): void {
  checkInteger(options, 'mode', 0, 0o7777);
}

/** connect()'s own options, beside the socket's. */
export function checkConnectOptions(options: object): void {
  checkSocketOptions(options);
  const timeout = given(options, 'timeout');
  if (timeout !== undefined && (typeof timeout !== 'number' || Number.isNaN(timeout) || timeout < 0)) {
    throw invalidArg('options.timeout', `must be a number of milliseconds (0 or more, or Infinity); received ${typeof timeout === 'number' ? timeout : typeof timeout}`);
  }
  const signal = given(options, 'signal') as { aborted?: unknown; addEventListener?: unknown } | undefined;
  if (signal !== undefined && (typeof signal !== 'object' || typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function')) {
    throw invalidArg('options.signal', 'must be an AbortSignal');
  }
}

/** A datagram socket's options. */
export function checkDatagramOptions(options: object): void {
  checkBoolean(options, 'passCredentials');
  checkInteger(options, 'maxMessageSize', 1, MAX_MESSAGE_LIMIT);
}
