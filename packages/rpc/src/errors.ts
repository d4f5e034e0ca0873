// Errors that survive the trip: name, message, code, data, cause and an
// AggregateError's errors go over the wire; the stack only when the server
// opts in.

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

  // A received AggregateError is a RemoteAggregateError, an AggregateError,
  // which an RpcError cannot also be: `instanceof RpcError` holds for it
  // all the same, so that one test covers every error from the wire.
  // (Subclasses keep the plain test.)
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value) || (this === RpcError && value instanceof RemoteAggregateError);
  }
}

export function rpcError(code: string, message: string, data?: unknown): RpcError {
  return new RpcError(message, { code, data });
}

/**
 * A message too large to send, with whose limit it passed in `data`:
 * `limitOf: 'receiver'` is the maxMessageSize the peer announced,
 * `'sender'` the sender's own. (It travels when it fails an answer, so the
 * caller can tell a limit of its own, which it may raise, from the server's.)
 */
export function messageTooLarge(message: string, size: number, limit: number, limitOf: 'receiver' | 'sender'): RpcError {
  return rpcError(RpcCode.MESSAGE_TOO_LARGE, message, { size, limit, limitOf });
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

// An abort's error: named AbortError, as Node's own are, with a code that says why.
function abortNamed(message: string, code: string, cause?: unknown): RpcError {
  const err = new RpcError(message, cause === undefined ? { code } : { code, cause });
  err.name = 'AbortError';
  return err;
}

/** A call given up by its caller's signal. */
export function abortError(reason: unknown): RpcError {
  return abortNamed('the call was aborted', RpcCode.ABORTED, reason);
}

/**
 * What a call fails with when its signal aborts: for a deadline, what the
 * call's own `timeout` fails with (ETIMEDOUT), so that the peer's handler
 * hears the same; ABORT_ERR for anything else. A deadline's signal is
 * AbortSignal.timeout()'s (its reason a TimeoutError), or one whose reason
 * has the code ETIMEDOUT: a handler's ctx.signal after its caller's
 * deadline, passed on to the calls it makes in turn.
 */
export function signalError(reason: unknown): RpcError {
  const r = reason as { name?: unknown; code?: unknown } | null;
  if (r?.name !== 'TimeoutError' && r?.code !== RpcCode.TIMEOUT) return abortError(reason);
  return new RpcError('the call timed out (its signal was a deadline)', { code: RpcCode.TIMEOUT, cause: reason });
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
  return abortNamed(message, code!);
}

/** The connection's end (`lost`, its cause) as a handler's ctx.signal.reason. */
export function lostReason(lost: RpcError): RpcError {
  return abortNamed(lost.message, RpcCode.CONNECTION_CLOSED, lost);
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
  /** An AggregateError's errors, each an error's record or the value it was. */
  errors?: unknown[];
  stack?: string;
}

/**
 * A received error that had `errors` (an AggregateError on the sender):
 * an AggregateError here too, with the `code` (and `data`) every error
 * received has.
 */
export class RemoteAggregateError extends AggregateError {
  code: string;
  data?: unknown;

  constructor(errors: unknown[], message: string, options: RpcErrorOptions = {}) {
    super(errors, message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'AggregateError';
    this.code = options.code ?? RpcCode.INTERNAL;
    if (options.data !== undefined) this.data = options.data;
  }
}

// How deep causes and inner errors nest, counted together: deeper ones are
// left out, on both sides.
const MAX_CAUSE_DEPTH = 8;

/**
 * The most errors one error value carries, itself, its causes and inner
 * errors together. The depth limit alone does not bound an AggregateError:
 * each level may list the same error many times over (n^8 records).
 */
export const MAX_ERRORS = 10_000;

// One error being turned into its record: where the walk is (the errors
// above, and how it got there, for a message) and how many records it made.
interface Walk {
  withStack: boolean;
  above: Error[];
  keys: Array<'cause' | number>;
  made: number;
}

export function errorToRecord(err: unknown, withStack: boolean): ErrorRecord {
  return toRecord(err, { withStack, above: [], keys: [], made: 0 });
}

function toRecord(err: unknown, walk: Walk): ErrorRecord {
  if (!(err instanceof Error)) {
    return { name: 'Error', message: String(err), code: RpcCode.INTERNAL };
  }
  if (++walk.made > MAX_ERRORS) throw unsendable(walk, `more than ${MAX_ERRORS} errors in one error (with its causes and inner errors)`);
  const e = err as Error & { code?: unknown; data?: unknown };
  const record: ErrorRecord = { name: e.name, message: e.message };
  if (typeof e.code === 'string') record.code = e.code;
  else if (typeof e.code === 'number') record.code = String(e.code);
  if (e.data !== undefined) record.data = e.data;
  if (walk.above.length < MAX_CAUSE_DEPTH) {
    walk.above.push(err);
    if (e.cause !== undefined) record.cause = e.cause instanceof Error ? below(e.cause, 'cause', walk) : e.cause;
    if (err instanceof AggregateError && Array.isArray(err.errors)) record.errors = innerRecords(err.errors as unknown[], walk);
    walk.above.pop();
  }
  if (walk.withStack && e.stack) record.stack = e.stack;
  return record;
}

function below(err: Error, key: 'cause' | number, walk: Walk): ErrorRecord {
  walk.keys.push(key);
  const record = toRecord(err, walk);
  walk.keys.pop();
  return record;
}

// What is not an Error is sent as the value it is (Promise.any() may reject
// with anything). An error among its own errors, directly or further down,
// would repeat until the depth limit, and branch at every level: refused.
// (A cause that repeats an error is cut at the depth limit, as it always
// was: a chain does not branch.)
function innerRecords(errors: readonly unknown[], walk: Walk): unknown[] {
  const out: unknown[] = [];
  for (let i = 0; i < errors.length; i++) {
    const item = errors[i];
    if (!(item instanceof Error)) {
      out.push(item);
      continue;
    }
    if (walk.above.includes(item)) {
      walk.keys.push(i);
      throw unsendable(walk, 'an AggregateError that contains itself');
    }
    out.push(below(item, i, walk));
  }
  return out;
}

// As prepare() reports what cannot travel: the path from the error value.
function unsendable(walk: Walk, what: string): RpcError {
  let path = '.error';
  for (const key of walk.keys) path += key === 'cause' ? '.cause' : `.errors[${key}]`;
  return rpcError(RpcCode.ENCODE_ERROR, `cannot send ${what} at ${path}`, { path });
}

// The depth at which a received Error was taken as another's cause, or
// among another's errors.
const takenDepth = new WeakMap<Error, number>();

function takenAt(err: Error, depth: number): Error {
  takenDepth.set(err, depth);
  return err;
}

function isRecord(v: unknown): v is ErrorRecord {
  return typeof v === 'object' && v !== null && typeof (v as ErrorRecord).message === 'string';
}

// A cause, or one of the errors, as received at `level`: an error value
// (ext 2) is an Error already, a record becomes one, anything else stays.
function received(value: unknown, level: number): unknown {
  if (value instanceof Error) return takenAt(value, level + 1);
  return isRecord(value) ? recordToError(value, level + 1) : value;
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
  const level = into ? (takenDepth.get(into) ?? depth) : depth;
  const deeper = level < MAX_CAUSE_DEPTH;
  const cause = record.cause !== undefined && deeper ? received(record.cause, level) : undefined;
  // Anything but an array is no list of errors: ignored, as an odd name is.
  const errors = Array.isArray(record.errors) && deeper ? record.errors.map((item) => received(item, level)) : undefined;
  const raw = record.code as unknown;
  const code = typeof raw === 'string' ? raw : typeof raw === 'number' ? String(raw) : RpcCode.INTERNAL;
  let err: RpcError | RemoteAggregateError;
  if (into) {
    err = errors ? aggregated(into, errors) : into;
    err.message = record.message;
    err.code = code;
    if (record.data !== undefined) err.data = record.data;
    // As the Error constructor makes it: own, not enumerable.
    if (cause !== undefined) Object.defineProperty(err, 'cause', { value: cause, writable: true, configurable: true });
  } else {
    err = unstacked(record.message, { code, data: record.data, cause }, errors);
  }
  err.name = typeof record.name === 'string' ? record.name : 'Error';
  if (typeof record.stack === 'string') (err as RpcError & { remoteStack?: string }).remoteStack = record.stack;
  return err;
}

// An error made from a record (a cause, one of the errors). Its stack
// would show only the decoder, and capturing one is most of what making an
// error costs, which a peer would have us do for every error it lists: it
// gets none, as the decoder's placeholders get none.
function unstacked(message: string, options: RpcErrorOptions, errors: unknown[] | undefined): RpcError | RemoteAggregateError {
  return errors ? withoutStack(() => new RemoteAggregateError(errors, message, options)) : stackless(message, options);
}

/** An RpcError that captures no stack (decoded errors: their stack would show only the decoder). */
export function stackless(message: string, options?: RpcErrorOptions): RpcError {
  return withoutStack(() => new RpcError(message, options));
}

function withoutStack<T>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

// The decoder's placeholder, made before anyone knew it would have errors,
// turned into the AggregateError it stands for (it is already in the
// decoded value: it cannot be replaced). An Error has no internal state
// beyond an AggregateError's; `errors` is own and not enumerable, as
// AggregateError's constructor makes it.
function aggregated(placeholder: RpcError, errors: unknown[]): RemoteAggregateError {
  Object.setPrototypeOf(placeholder, RemoteAggregateError.prototype);
  Object.defineProperty(placeholder, 'errors', { value: errors, writable: true, configurable: true });
  return placeholder as unknown as RemoteAggregateError;
}
