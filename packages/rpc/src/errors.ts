// Errors that survive the trip: name, message, code, data and cause go over
// the wire; the stack only when the server opts in.

/** Stable codes for conditions the RPC layer itself reports. */
export const RpcCode = {
  /** The connection closed while the call was pending. */
  CONNECTION_CLOSED: 'CONNECTION_CLOSED',
  /** The caller aborted the call (AbortSignal). Node's own code for AbortError. */
  ABORTED: 'ABORT_ERR',
  /** The call's deadline passed. */
  TIMEOUT: 'ETIMEDOUT',
  METHOD_NOT_FOUND: 'METHOD_NOT_FOUND',
  /** Arguments failed the server's validation. */
  INVALID_ARGUMENTS: 'INVALID_ARGUMENTS',
  /** Too many calls in flight on this connection. */
  OVERLOADED: 'OVERLOADED',
  MESSAGE_TOO_LARGE: 'MESSAGE_TOO_LARGE',
  /** A value could not be encoded (a function, a symbol, a cycle). */
  ENCODE_ERROR: 'ENCODE_ERROR',
  /** The peer broke the protocol; the connection is closed. */
  PROTOCOL_ERROR: 'PROTOCOL_ERROR',
  PROTOCOL_MISMATCH: 'PROTOCOL_MISMATCH',
  SERVICE_MISMATCH: 'SERVICE_MISMATCH',
  HANDSHAKE_TIMEOUT: 'HANDSHAKE_TIMEOUT',
  /** A hello announced a maxMessageSize below MIN_MAX_MESSAGE_SIZE: not even an error would fit. */
  MESSAGE_SIZE_TOO_SMALL: 'MESSAGE_SIZE_TOO_SMALL',
  /** The server's peer policy refused this client. */
  ACCESS_DENIED: 'ACCESS_DENIED',
  /** The server is closing and takes no new calls. */
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  /** The handler threw something that is not an Error, or an Error without a code. */
  INTERNAL: 'INTERNAL',
  /** A streaming call was awaited as a value, or the other way round. */
  NOT_A_STREAM: 'NOT_A_STREAM',
  /** The peer stopped reading and our outbound buffer for it passed its cap. */
  SLOW_CONSUMER: 'SLOW_CONSUMER',
  /**
   * The caller stopped reading a stream before its end (break, return(),
   * cancel(), or dropped it): what the producer's ctx.signal.reason says.
   */
  CANCELLED: 'CANCELLED',
} as const;

export interface RpcErrorOptions {
  code?: string;
  data?: unknown;
  cause?: unknown;
}

/** An error with a stable `code` and optional `data`, for handlers to throw. */
export class RpcError extends Error {
  code: string;
  data?: unknown;

  constructor(message: string, options: RpcErrorOptions = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'RpcError';
    this.code = options.code ?? RpcCode.INTERNAL;
    if (options.data !== undefined) this.data = options.data;
  }
}

export function rpcError(code: string, message: string, data?: unknown): RpcError {
  return new RpcError(message, { code, data });
}

/** A bad argument or option, as Node's own (and @afunix/transport's) are reported. */
export function invalidArgValue(name: string, message: string): TypeError & { code: string } {
  return Object.assign(new TypeError(`The argument '${name}' ${message}`), { code: 'ERR_INVALID_ARG_VALUE' });
}

/**
 * What was thrown, for a message: an Error's message, or the value as a
 * string; never throws itself (a getter that throws, an object without
 * toString), as a handler's hostile value must not take the server down.
 */
export function describeThrown(value: unknown): string {
  try {
    return value instanceof Error ? String(value.message) : String(value);
  } catch {
    return 'a value that cannot be shown';
  }
}

/** How an error message names a value it refused: `-1`, `null`, `an object`, `a string`. */
export function shownValue(value: unknown): string {
  if (typeof value === 'number' || value === null || value === undefined) return String(value);
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** A call given up by its caller's signal: named AbortError, as Node's own are. */
export function abortError(reason: unknown): RpcError {
  const err = new RpcError('the call was aborted', { code: RpcCode.ABORTED, cause: reason });
  err.name = 'AbortError';
  return err;
}

/**
 * Why the caller gave up a call, as its CANCEL said (PROTOCOL.md 2.9), for
 * the handler's ctx.signal.reason: the code the caller's call ended with
 * (ETIMEDOUT, ABORT_ERR), or CANCELLED for a stream it stopped reading.
 * Without a reason (an older peer), or with one this side does not know
 * (a newer peer's), it is the AbortError every CANCEL meant before. All are
 * named AbortError, as that one was: a handler that tests the name keeps
 * working, and one that wants to know tests the code.
 */
export function cancelReason(code: string | undefined): RpcError {
  const message = code === undefined ? undefined : CANCEL_MESSAGES[code];
  if (message === undefined) return abortError('the caller cancelled');
  const err = new RpcError(message, { code: code! });
  err.name = 'AbortError';
  return err;
}

// (A null prototype: a peer's reason named "constructor" is no reason.)
const CANCEL_MESSAGES: Record<string, string | undefined> = Object.assign(Object.create(null) as Record<string, string>, {
  [RpcCode.TIMEOUT]: "the caller's deadline passed",
  [RpcCode.ABORTED]: 'the caller aborted the call',
  [RpcCode.CANCELLED]: 'the caller stopped reading the stream',
});

/** The wire form of an error (a msgpack map). */
export interface ErrorRecord {
  name: string;
  message: string;
  code?: string;
  data?: unknown;
  cause?: unknown;
  stack?: string;
}

const MAX_CAUSE_DEPTH = 8;

export function errorToRecord(err: unknown, withStack: boolean, depth = 0): ErrorRecord {
  if (!(err instanceof Error)) {
    return { name: 'Error', message: String(err), code: RpcCode.INTERNAL };
  }
  const e = err as Error & { code?: unknown; data?: unknown };
  const record: ErrorRecord = { name: e.name, message: e.message };
  if (typeof e.code === 'string') record.code = e.code;
  else if (typeof e.code === 'number') record.code = String(e.code);
  if (e.data !== undefined) record.data = e.data;
  if (e.cause !== undefined && depth < MAX_CAUSE_DEPTH) {
    record.cause = e.cause instanceof Error ? errorToRecord(e.cause, withStack, depth + 1) : e.cause;
  }
  if (withStack && e.stack) record.stack = e.stack;
  return record;
}

// The depth at which a received Error was taken as another's cause.
const causeDepth = new WeakMap<Error, number>();

function takenAt(err: Error, depth: number): Error {
  causeDepth.set(err, depth);
  return err;
}

function isRecord(v: unknown): v is ErrorRecord {
  return typeof v === 'object' && v !== null && typeof (v as ErrorRecord).message === 'string';
}

/**
 * Rebuilds an Error from its wire form; a remote stack is kept apart from
 * ours. With `into`, fills that error in place instead of making one (the
 * decoder's placeholder, already in the decoded value).
 */
export function recordToError(record: unknown, depth = 0, into?: RpcError): Error {
  if (!isRecord(record)) {
    if (!into) return rpcError(RpcCode.PROTOCOL_ERROR, 'malformed error from peer');
    into.message = 'malformed error from peer';
    into.code = RpcCode.PROTOCOL_ERROR;
    return into;
  }
  // A cause sent as an error value of its own (PROTOCOL.md 2.4) is an Error
  // already: the decoder's placeholder, filled in after this one. Taken as
  // it is (a copy made now would be of the empty placeholder), at the depth
  // it is taken at, so that the chain stops at MAX_CAUSE_DEPTH as a chain of
  // records does (each placeholder is filled on its own, from depth 0).
  const level = into ? (causeDepth.get(into) ?? depth) : depth;
  const cause = record.cause !== undefined && level < MAX_CAUSE_DEPTH
    ? (record.cause instanceof Error ? takenAt(record.cause, level + 1) : isRecord(record.cause) ? recordToError(record.cause, level + 1) : record.cause)
    : undefined;
  const raw = record.code as unknown;
  const code = typeof raw === 'string' ? raw : typeof raw === 'number' ? String(raw) : RpcCode.INTERNAL;
  let err: RpcError;
  if (into) {
    err = into;
    err.message = record.message;
    err.code = code;
    if (record.data !== undefined) err.data = record.data;
    // As the Error constructor makes it: own, not enumerable.
    if (cause !== undefined) Object.defineProperty(err, 'cause', { value: cause, writable: true, configurable: true });
  } else {
    err = new RpcError(record.message, { code, data: record.data, cause });
  }
  err.name = typeof record.name === 'string' ? record.name : 'Error';
  if (typeof record.stack === 'string') (err as RpcError & { remoteStack?: string }).remoteStack = record.stack;
  return err;
}
