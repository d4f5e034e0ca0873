// Calls to the peer: the table of those awaiting an answer, their deadlines
// and abort signals, and the answers (RESULT, ERROR, STREAM_*) that settle them.
import { prepareValue } from './codec.js';
import { CallTable } from './call-table.js';
import { MAX_DELAY, badTimeout } from './deadlines.js';
import { RpcCode, type RpcError, invalidArgValue, rpcError, shownValue, signalError } from './errors.js';
import { closeTransfers, releaseFds } from './fd.js';
import { Msg, STREAM_WINDOW } from './protocol.js';
import type { MessageSender } from './sender.js';
import { RpcStream, type StreamLink, type StreamState } from './stream.js';

export interface CallOptions {
  signal?: AbortSignal;
  /**
   * Milliseconds until the call fails with ETIMEDOUT (and is cancelled on
   * the peer); Infinity for none. Anything but a non-negative number fails
   * the call with ERR_INVALID_ARG_VALUE.
   */
  timeout?: number;
}

interface Pending {
  id: number;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  // (The stream's state, not the RpcStream its caller holds: see stream.ts.)
  stream: StreamState<unknown> | null;
  timer: NodeJS.Timeout | null;
  signal: AbortSignal | null;
}

// The calls of one connection that share a signal, and the one 'abort'
// listener they share: a listener per call would make Node warn of a leak
// past ten calls in flight with one AbortController, a common pattern.
interface SignalWatch {
  // One call's id (a signal per call is as common), or the Set of them
  // once calls share the signal.
  ids: number | Set<number>;
  readonly onAbort: () => void;
}

// Shared, only ever read: the table gets one of its own before its first
// write, so an idle connection (servers hold thousands) carries none.
const NO_PENDING = new CallTable<Pending>();

const noop = (): void => {};

// Every field spelled out, in one place: a spread here once made each
// call's record a slow dictionary-mode object (17% of a pipelined call's CPU).
function newPending(resolve: Pending['resolve'], reject: Pending['reject'], stream: Pending['stream']): Pending {
  return { id: 0, resolve, reject, stream, timer: null, signal: null };
}

// The record whose resolvers a promise's executor hands over: set just
// before new Promise() runs it (at once), so that a call needs no closure
// of its own (with a context for its arguments) only to take them.
let filling: Pending | null = null;

function takeResolvers(resolve: Pending['resolve'], reject: Pending['reject']): void {
  filling!.resolve = resolve;
  filling!.reject = reject;
}

/** The connection, as its calls see it. */
export interface CallerLink extends StreamLink {
  readonly closed: boolean;
}

export class OutgoingCalls {
  readonly #sender: MessageSender;
  // Streams call back through the connection (credit, cancel).
  readonly #link: CallerLink;
  #nextId = 1;
  #pending: CallTable<Pending> = NO_PENDING;
  #watches: Map<AbortSignal, SignalWatch> | null = null;
  /** Calls started, for stats. */
  started = 0;
  /**
   * Told when the first call starts awaiting its answer (true) and when the
   * last one is settled (false): an unref'd connection holds its process
   * while someone awaits a call (RpcConnection.unref()).
   */
  onBusy: ((busy: boolean) => void) | null = null;

  constructor(sender: MessageSender, link: CallerLink) {
    this.#sender = sender;
    this.#link = link;
  }

  /** Calls awaiting an answer. */
  get size(): number {
    return this.#pending.size;
  }

  call(method: string, args: unknown[], options: CallOptions | undefined): Promise<unknown> {
    const pending = newPending(noop, noop, null);
    filling = pending;
    const promise = new Promise(takeResolvers);
    filling = null;
    // (As a throw in an executor would: the promise fails, nothing throws.)
    try {
      this.#start(method, args, options, pending);
    } catch (err) {
      pending.reject(err as Error);
    }
    return promise;
  }

  stream(method: string, args: unknown[], options: CallOptions | undefined): RpcStream<unknown> {
    const stream = new RpcStream<unknown>(this.#nextId, this.#link);
    const state = RpcStream.stateOf(stream);
    this.#start(method, args, options, newPending(noop, (err) => state.end(err), state));
    return stream;
  }

  #start(method: string, args: unknown[], options: CallOptions | undefined, pending: Pending): void {
    const refused = this.#refusal(method, options);
    if (refused) {
      closeTransfers(args); // given away with a call that never leaves
      return pending.reject(refused);
    }
    const id = this.#nextId++;
    const signal = options?.signal ?? null;
    pending.id = id;
    pending.signal = signal;
    // Pending before it is sent: a send that cuts the connection off (a
    // burst past maxOutboundBytes) fails every pending call, this one too.
    if (this.#pending === NO_PENDING) this.#pending = new CallTable();
    this.#pending.add(pending);
    if (this.onBusy !== null && this.#pending.size === 1) this.onBusy(true);
    try {
      this.#sender.sendMessage(Msg.REQUEST, id, method, prepareValue(args, 'args'));
    } catch (err) {
      closeTransfers(args);
      return this.#fail(id, err as Error);
    }
    this.started++;
    if (!this.#pending.has(id)) return; // failed by the send itself
    const timeout = options?.timeout;
    if (timeout != null && timeout !== Infinity) this.#armDeadline(id, pending, method, timeout, timeout);
    if (signal) this.#watch(signal, id);
  }

  #watch(signal: AbortSignal, id: number): void {
    const watches = (this.#watches ??= new Map());
    const watch = watches.get(signal);
    if (!watch) {
      const onAbort = () => this.#aborted(signal);
      signal.addEventListener('abort', onAbort, { once: true });
      watches.set(signal, { ids: id, onAbort });
    } else if (typeof watch.ids === 'number') {
      watch.ids = new Set([watch.ids, id]);
    } else {
      watch.ids.add(id);
    }
  }

  #unwatch(signal: AbortSignal, id: number): void {
    const watch = this.#watches?.get(signal);
    if (!watch) return;
    if (typeof watch.ids === 'number' ? watch.ids !== id : !watch.ids.delete(id) || watch.ids.size > 0) return;
    this.#watches!.delete(signal);
    signal.removeEventListener('abort', watch.onAbort);
  }

  #aborted(signal: AbortSignal): void {
    const watch = this.#watches?.get(signal);
    if (!watch) return;
    this.#watches!.delete(signal); // (so #settle's #unwatch leaves the ids alone)
    const ids = typeof watch.ids === 'number' ? [watch.ids] : watch.ids;
    for (const id of ids) this.#abandon(id, signalError(signal.reason));
  }

  // Why a call cannot start at all, or null.
  #refusal(method: string, options: CallOptions | undefined): Error | null {
    if (this.#link.closed) return rpcError(RpcCode.CONNECTION_CLOSED, `cannot call ${method}: the connection is closed`);
    const badTime = badTimeout('options.timeout', options?.timeout);
    if (badTime) return badTime;
    const signal = options?.signal;
    if (signal !== undefined && signal !== null && !isAbortSignal(signal)) {
      return invalidArgValue('options.signal', `must be an AbortSignal; received ${shownValue(signal)}`);
    }
    if (signal?.aborted) return signalError(signal.reason);
    return null;
  }

  // setTimeout() fires at once for a delay past MAX_DELAY: a longer
  // deadline is waited for in steps.
  #armDeadline(id: number, pending: Pending, method: string, timeout: number, left: number): void {
    const delay = Math.min(left, MAX_DELAY);
    pending.timer = setTimeout(() => {
      if (left > delay) this.#armDeadline(id, pending, method, timeout, left - delay);
      else this.#abandon(id, rpcError(RpcCode.TIMEOUT, `${method} timed out after ${timeout} ms`));
    }, delay);
    pending.timer.unref();
  }

  /** The call's message could not be sent after all (its fds were refused): it fails with `err`. */
  failUnsent(id: number, err: Error): void {
    this.#fail(id, err);
  }

  // A call that failed locally before the peer heard of it.
  #fail(id: number, err: Error): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#settle(id, pending);
    pending.reject(err);
  }

  /** The consumer of a stream stopped: forget the call, tell the peer. */
  cancel(id: number): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#settle(id, pending);
    this.#sender.trySend([Msg.CANCEL, id, RpcCode.CANCELLED]);
  }

  // The caller gave up (abort or deadline): fail locally, and tell the peer
  // why (the code the call failed with here), so that its handler's signal
  // says the same.
  #abandon(id: number, err: RpcError): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#settle(id, pending);
    if (pending.stream) pending.stream.abort(err);
    else pending.reject(err);
    this.#sender.trySend([Msg.CANCEL, id, err.code]);
  }

  #settle(id: number, pending: Pending): void {
    this.#pending.delete(id);
    if (this.onBusy !== null && this.#pending.size === 0) this.onBusy(false);
    if (pending.timer) clearTimeout(pending.timer);
    if (pending.signal) this.#unwatch(pending.signal, id);
  }

  onResult(callId: number, value: unknown): void {
    const pending = this.#pending.get(callId);
    if (!pending) return releaseFds(value);
    this.#settle(callId, pending);
    if (!pending.stream) return pending.resolve(value);
    // Nobody will see this value, so nobody will close its fds.
    releaseFds(value);
    pending.stream.end(rpcError(RpcCode.NOT_A_STREAM, 'the method returned a value, not a stream'));
  }

  onError(callId: number, error: unknown): void {
    const pending = this.#pending.get(callId);
    if (!pending) return releaseFds(error);
    this.#settle(callId, pending);
    if (error instanceof Error) return pending.reject(error);
    releaseFds(error);
    pending.reject(rpcError(RpcCode.PROTOCOL_ERROR, 'malformed error from peer'));
  }

  // An item for a call that was awaited as a promise: the peer streams a
  // method we did not know to be a stream, so the promise resolves to one.
  onStreamItem(callId: number, value: unknown): void {
    const pending = this.#pending.get(callId);
    if (!pending) return releaseFds(value);
    if (!pending.stream) {
      const stream = new RpcStream<unknown>(callId, this.#link);
      const state = (pending.stream = RpcStream.stateOf(stream));
      pending.reject = (err) => state.end(err);
      pending.resolve(stream);
    }
    // Items not yet taken are at most the window when the producer keeps to
    // its credit; one that does not would make us buffer without bound.
    // (The fds of this item are closed with the message's.)
    if (pending.stream.items.length >= STREAM_WINDOW) {
      throw rpcError(RpcCode.PROTOCOL_ERROR, `stream ${callId}: more items than its credit allows`);
    }
    pending.stream.push(value);
  }

  onStreamEnd(callId: number): void {
    const pending = this.#pending.get(callId);
    if (!pending) return;
    this.#settle(callId, pending);
    if (pending.stream) return pending.stream.end();
    // A stream we did not know to be one, and it had no items: the caller
    // awaits a value and gets a stream, already over.
    const empty = new RpcStream<unknown>(callId, this.#link);
    empty.end();
    pending.resolve(empty);
  }

  /** The connection is gone: every call fails with `lost`. */
  failAll(lost: Error): void {
    for (const pending of this.#pending.entries()) {
      this.#settle(pending.id, pending);
      pending.reject(lost);
    }
  }
}

// As Node's own APIs check a signal: by its shape, so that one from another
// realm (a vm context, a polyfill) is taken too.
function isAbortSignal(value: unknown): value is AbortSignal {
  const signal = value as Partial<AbortSignal> | null;
  return (
    typeof signal === 'object' &&
    signal !== null &&
    typeof signal.aborted === 'boolean' &&
    typeof signal.addEventListener === 'function' &&
    typeof signal.removeEventListener === 'function'
  );
}
