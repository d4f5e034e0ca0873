// RpcConnection: one established connection, symmetric. Each side can call
// the other's methods, emit events, and stream results; the server/client
// split is only who listens and who connects.
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { debuglog } from 'node:util';
import { type FramedChannel, FramingError } from '@afunix/framing';
import type { Credentials, ReceivedFds } from '@afunix/transport';
import type { TypedEmitter } from './emitter.js';
import { type Decoded, decode, encode, prepareValue } from './codec.js';
import { RpcCode, RpcError, rpcError } from './errors.js';
import type { Fd } from './fd.js';
import { IncomingCall, type CallContext, type Handler, type Interceptor } from './incoming.js';
import { Msg, STREAM_WINDOW } from './protocol.js';
import { Credit, RpcStream, type StreamLink, isAsyncIterable } from './stream.js';
import { remoteProxy } from './proxy.js';
import { type Validator, validateArgs } from './validation.js';

const debug = debuglog('afunix');

export interface CallOptions {
  signal?: AbortSignal;
  /** Milliseconds until the call fails with ETIMEDOUT (and is cancelled on the peer). */
  timeout?: number;
}

export interface ConnectionOptions {
  handlers: ReadonlyMap<string, Handler>;
  /** Methods of the peer that stream (from its hello). */
  peerStreams: readonly string[];
  /** The largest message the peer accepts (from its hello). */
  peerMaxMessage?: number | undefined;
  /** Bytes queued for a peer that does not read before it is cut off (default 32 MiB). */
  maxOutboundBytes?: number | undefined;
  validators?: ReadonlyMap<string, Validator> | undefined;
  exposeStack?: boolean | undefined;
  maxInFlight?: number | undefined;
  intercept?: Interceptor | undefined;
  /** Send an event only if the peer subscribed to it (servers do). */
  filterEvents?: boolean | undefined;
  onEvent?: ((name: string, args: unknown[], conn: RpcConnection) => void) | undefined;
  peer: Credentials | null;
}

export interface ConnectionStats {
  callsOut: number;
  callsIn: number;
  inFlightOut: number;
  inFlightIn: number;
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
}

type ConnectionEvents = {
  close: (reason: Error | null) => void;
  subscribe: (names: string[]) => void;
  /** No call from the peer is being handled any more (after drain()). */
  idle: () => void;
};

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  stream: RpcStream<unknown> | null;
  timer: NodeJS.Timeout | null;
  signal: AbortSignal | null;
  onAbort: (() => void) | null;
}

// Shared empty collections, only ever read: each field is given its own
// collection before its first write.
const NO_PENDING: Map<number, Pending> = new Map();
const NO_INCOMING: Map<number, IncomingCall> = new Map();
const NO_CALLS: Set<IncomingCall> = new Set();
const NO_NAMES: Set<string> = new Set();

const DEFAULT_MAX_IN_FLIGHT = 1024;
const CLOSE_GRACE_MS = 2_000;
const DEFAULT_MAX_OUTBOUND = 32 * 1024 * 1024;
// Event names one connection may subscribe to. The peer chooses the names,
// so without a bound its subscriptions would grow with every byte it sends
// (2 000 000 names took a server from 55 to 213 MiB).
const MAX_SUBSCRIPTIONS = 4096;

function closeFdQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Nothing to release.
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as PromiseLike<unknown>).then === 'function';
}

function abortError(reason: unknown): RpcError {
  const err = new RpcError('the call was aborted', { code: RpcCode.ABORTED, cause: reason });
  err.name = 'AbortError';
  return err;
}

export class RpcConnection extends (EventEmitter as new () => TypedEmitter<ConnectionEvents>) implements StreamLink {
  /** The peer's pid/uid/gid, or null over a transport that cannot tell. */
  readonly peer: Credentials | null;
  readonly channel: FramedChannel;
  #options: ConnectionOptions;
  #nextId = 1;
  // Collections are made on first use: an idle connection (servers hold
  // thousands) carries none of them, about 0.9 KB less each.
  #pending: Map<number, Pending> = NO_PENDING;
  #incoming: Map<number, IncomingCall> = NO_INCOMING;
  // Notifications being handled: they count against maxInFlight too.
  #notifications: Set<IncomingCall> = NO_CALLS;
  #peerStreams: Set<string>;
  #peerSubscriptions: Set<string> = NO_NAMES;
  #closed = false;
  #draining = false;
  #callsOut = 0;
  #callsIn = 0;
  #remote: unknown;

  constructor(channel: FramedChannel, options: ConnectionOptions) {
    super();
    this.channel = channel;
    this.peer = options.peer;
    this.#options = options;
    this.#peerStreams = options.peerStreams.length > 0 ? new Set(options.peerStreams) : NO_NAMES;
    channel.onFrame = (payload, fds) => this.#onFrame(payload, fds);
    channel.on('error', (err) => {
      debug('connection error %s', err.message);
      // A peer that broke the framing rules is cut off with that rule's code
      // (FRAME_TOO_LARGE, TRUNCATED_FRAME, PROTOCOL_ERROR, ...); a transport
      // failure (ECONNRESET, ...) is the connection closing, with it as cause.
      // 'close' follows, and finds this teardown done.
      this.#teardown(err instanceof FramingError ? err : new RpcError(`the connection closed: ${err.message}`, { code: RpcCode.CONNECTION_CLOSED, cause: err }));
    });
    channel.on('close', () => this.#teardown(rpcError(RpcCode.CONNECTION_CLOSED, 'the connection closed')));
    // The peer is done: nothing more can be answered, so end our side too.
    channel.on('end', () => {
      this.#teardown(rpcError(RpcCode.CONNECTION_CLOSED, 'the peer ended the connection'));
      this.close();
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The peer's methods as a proxy (untyped here; the client and context type it). */
  get remote(): unknown {
    return (this.#remote ??= remoteProxy(() => this));
  }

  get stats(): ConnectionStats {
    const s = this.channel.stats;
    return {
      callsOut: this.#callsOut,
      callsIn: this.#callsIn,
      inFlightOut: this.#pending.size,
      inFlightIn: this.#incoming.size,
      framesIn: s.framesIn,
      framesOut: s.framesOut,
      bytesIn: s.bytesIn,
      bytesOut: s.bytesOut,
    };
  }

  /** Calls a method of the peer. Stream methods give an RpcStream instead of a promise. */
  call(method: string, args: unknown[], options?: CallOptions): Promise<unknown> | RpcStream<unknown> {
    if (this.#peerStreams.has(method)) return this.stream(method, args, options);
    return new Promise((resolve, reject) => this.#start(method, args, options, { resolve, reject, stream: null }));
  }

  /** Calls a method whose result is a stream. */
  stream(method: string, args: unknown[], options?: CallOptions): RpcStream<unknown> {
    const id = this.#nextId;
    const stream = new RpcStream<unknown>(id, this);
    this.#start(method, args, options, { resolve: () => {}, reject: (err) => stream.end(err), stream });
    return stream;
  }

  /** Fire and forget: no answer, no error from the peer. */
  notify(method: string, args: unknown[]): void {
    this.#send([Msg.NOTIFY, method, prepareValue(args, 'args')]);
  }

  /** Sends an event, unless the peer did not subscribe to it (on a server). */
  emitEvent(name: string, args: unknown[]): boolean {
    if (this.#closed) return false;
    if (this.#options.filterEvents && !this.#peerSubscriptions.has(name)) return false;
    this.#send([Msg.EVENT, name, prepareValue(args, 'args')]);
    return true;
  }

  subscribe(names: string[]): void {
    if (names.length > 0 && !this.#closed) this.#send([Msg.SUBSCRIBE, names]);
  }

  unsubscribe(names: string[]): void {
    if (names.length > 0 && !this.#closed) this.#send([Msg.UNSUBSCRIBE, names]);
  }

  /** Whether the peer asked for this event. */
  isSubscribed(name: string): boolean {
    return this.#peerSubscriptions.has(name);
  }

  /** Number of calls from the peer still being handled here. */
  get handling(): number {
    return this.#incoming.size;
  }

  /** Stop taking new calls (they fail with SHUTTING_DOWN); tell the peer. */
  drain(): void {
    if (this.#draining || this.#closed) return;
    this.#draining = true;
    this.#trySend([Msg.GOODBYE]);
  }

  /**
   * Closes the connection: pending calls fail with CONNECTION_CLOSED, queued
   * writes are flushed, and a peer that does not close its side in time is
   * cut off.
   */
  close(): void {
    if (!this.channel.closed) {
      this.channel.end();
      setTimeout(() => this.channel.destroy(), CLOSE_GRACE_MS).unref();
    }
    this.#teardown(rpcError(RpcCode.CONNECTION_CLOSED, 'the connection was closed locally'));
  }

  destroy(err?: Error): void {
    this.channel.destroy(err);
    this.#teardown(err ?? rpcError(RpcCode.CONNECTION_CLOSED, 'the connection was destroyed'));
  }

  /** @internal StreamLink: the consumer took n items. */
  grant(id: number, n: number): void {
    this.#trySend([Msg.CREDIT, id, n]);
  }

  /** @internal StreamLink: the consumer stopped. */
  cancel(id: number): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#settle(id, pending);
    this.#trySend([Msg.CANCEL, id]);
  }

  #start(method: string, args: unknown[], options: CallOptions | undefined, p: Omit<Pending, 'timer' | 'signal' | 'onAbort'>): void {
    if (this.#closed) return p.reject(rpcError(RpcCode.CONNECTION_CLOSED, `cannot call ${method}: the connection is closed`));
    const signal = options?.signal ?? null;
    if (signal?.aborted) return p.reject(abortError(signal.reason));
    const id = this.#nextId++;
    let message: unknown[];
    try {
      message = [Msg.REQUEST, id, method, prepareValue(args, 'args')];
      this.#send(message);
    } catch (err) {
      return p.reject(err as Error);
    }
    this.#callsOut++;
    // Every field spelled out: a spread here made each call's record a
    // slow dictionary-mode object (17% of a pipelined call's CPU).
    const pending: Pending = { resolve: p.resolve, reject: p.reject, stream: p.stream, timer: null, signal, onAbort: null };
    if (this.#pending === NO_PENDING) this.#pending = new Map();
    this.#pending.set(id, pending);
    if (options?.timeout !== undefined) {
      pending.timer = setTimeout(() => this.#abandon(id, rpcError(RpcCode.TIMEOUT, `${method} timed out after ${options.timeout} ms`)), options.timeout);
      pending.timer.unref();
    }
    if (signal) {
      pending.onAbort = () => this.#abandon(id, abortError(signal.reason));
      signal.addEventListener('abort', pending.onAbort, { once: true });
    }
  }

  // The caller gave up (abort or deadline): fail locally, tell the peer.
  #abandon(id: number, err: Error): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#settle(id, pending);
    pending.reject(err);
    this.#trySend([Msg.CANCEL, id]);
  }

  #settle(id: number, pending: Pending): void {
    this.#pending.delete(id);
    if (pending.timer) clearTimeout(pending.timer);
    if (pending.onAbort) pending.signal!.removeEventListener('abort', pending.onAbort);
  }

  /** Encodes and sends; throws ENCODE_ERROR or MESSAGE_TOO_LARGE. */
  #send(message: unknown[]): boolean {
    const { bytes, length, fds, transfers } = encode(message, this.#options.exposeStack);
    const release = transfers ? () => closeAll(transfers) : undefined;
    const limit = this.#options.peerMaxMessage;
    if (limit !== undefined && length > limit) {
      release?.();
      throw rpcError(RpcCode.MESSAGE_TOO_LARGE, `a message of ${length} bytes is more than the peer accepts (${limit})`);
    }
    try {
      const ok = this.channel.send(bytes, fds, release);
      if (!ok) this.#checkOutbound();
      return ok;
    } catch (err) {
      release?.();
      const code = (err as { code?: string }).code;
      if (code === 'FRAME_TOO_LARGE') throw rpcError(RpcCode.MESSAGE_TOO_LARGE, (err as Error).message);
      if (code === 'ERR_AFUNIX_UNSUPPORTED') throw rpcError('ERR_AFUNIX_UNSUPPORTED', 'this transport cannot carry file descriptors');
      if (this.#closed || this.channel.closed) throw rpcError(RpcCode.CONNECTION_CLOSED, 'the connection is closed');
      throw err;
    }
  }

  /** For control messages where failure only means the peer is gone. */
  #trySend(message: unknown[]): void {
    if (this.#closed) return;
    try {
      this.#send(message);
    } catch (err) {
      debug('could not send control message: %s', (err as Error).message);
    }
  }

  #onFrame(payload: Buffer, fds: ReceivedFds | null): void {
    let decoded: Decoded;
    try {
      decoded = decode(payload, fds ? fds.take() : null, closeFdQuietly);
    } catch (err) {
      return this.#protocolError((err as Error).message);
    }
    const m = decoded.message;
    if (!Array.isArray(m)) return this.#protocolError('a message must be an array');
    try {
      this.#dispatch(m, decoded.fds);
    } catch (err) {
      for (const fd of decoded.fds ?? []) fd.close();
      if (err instanceof RpcError && err.code === RpcCode.PROTOCOL_ERROR) this.#protocolError(err.message);
      else throw err;
    }
  }

  #dispatch(m: unknown[], fds: Fd[] | null): void {
    switch (m[0]) {
      case Msg.REQUEST:
        return this.#onRequest(id(m[1]), str(m[2]), list(m[3]), fds);
      case Msg.NOTIFY:
        return this.#onNotify(str(m[1]), list(m[2]), fds);
      case Msg.RESULT:
        return this.#onResult(id(m[1]), m[2]);
      case Msg.ERROR:
        return this.#onError(id(m[1]), m[2]);
      case Msg.STREAM_ITEM:
        return this.#onStreamItem(id(m[1]), m[2]);
      case Msg.STREAM_END:
        return this.#onStreamEnd(id(m[1]));
      case Msg.CANCEL:
        return this.#incoming.get(id(m[1]))?.cancel(abortError('the caller cancelled'));
      case Msg.CREDIT:
        return this.#incoming.get(id(m[1]))?.credit?.add(count(m[2]));
      case Msg.EVENT:
        return this.#onEvent(str(m[1]), list(m[2]), fds);
      case Msg.SUBSCRIBE:
        if (this.#peerSubscriptions === NO_NAMES) this.#peerSubscriptions = new Set();
        for (const name of list(m[1])) {
          this.#peerSubscriptions.add(str(name));
          if (this.#peerSubscriptions.size > MAX_SUBSCRIPTIONS) {
            throw rpcError(RpcCode.PROTOCOL_ERROR, `more than ${MAX_SUBSCRIPTIONS} event subscriptions on one connection`);
          }
        }
        return void this.emit('subscribe', list(m[1]) as string[]);
      case Msg.UNSUBSCRIBE:
        for (const name of list(m[1])) this.#peerSubscriptions.delete(str(name));
        return;
      case Msg.GOODBYE:
        return; // the peer finishes what it has; our new calls would fail there
      default:
        throw rpcError(RpcCode.PROTOCOL_ERROR, `unknown message kind ${String(m[0])}`);
    }
  }

  #onResult(callId: number, value: unknown): void {
    const pending = this.#pending.get(callId);
    if (!pending) return releaseFds(value);
    this.#settle(callId, pending);
    if (pending.stream) pending.stream.end(rpcError(RpcCode.NOT_A_STREAM, 'the method returned a value, not a stream'));
    else pending.resolve(value);
  }

  #onError(callId: number, error: unknown): void {
    const pending = this.#pending.get(callId);
    if (!pending) return;
    this.#settle(callId, pending);
    pending.reject(error instanceof Error ? error : rpcError(RpcCode.PROTOCOL_ERROR, 'malformed error from peer'));
  }

  // An item for a call that was awaited as a promise: the peer streams a
  // method we did not know to be a stream, so the promise resolves to one.
  #onStreamItem(callId: number, value: unknown): void {
    const pending = this.#pending.get(callId);
    if (!pending) return releaseFds(value);
    if (!pending.stream) {
      pending.stream = new RpcStream<unknown>(callId, this);
      const stream = pending.stream;
      pending.reject = (err) => stream.end(err);
      pending.resolve(stream);
    }
    // Items not yet taken are at most the window when the producer keeps to
    // its credit; one that does not would make us buffer without bound.
    // (The fds of this item are closed with the message's.)
    if (pending.stream.buffered >= STREAM_WINDOW) {
      throw rpcError(RpcCode.PROTOCOL_ERROR, `stream ${callId}: more items than its credit allows`);
    }
    pending.stream.push(value);
  }

  #onStreamEnd(callId: number): void {
    const pending = this.#pending.get(callId);
    if (!pending) return;
    this.#settle(callId, pending);
    if (pending.stream) pending.stream.end();
    else pending.resolve(new RpcStream<unknown>(callId, this));
  }

  #onNotify(method: string, args: unknown[], fds: Fd[] | null): void {
    const handler = this.#options.handlers.get(method);
    if (!handler) return closeAll(fds);
    // A notification has no answer to carry OVERLOADED or SHUTTING_DOWN:
    // past the limit (or while draining) it is dropped, or a peer could
    // start handlers without bound (200 000 notifications of a 60 s
    // handler took a server to 867 MiB).
    const max = this.#options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (this.#draining || this.#incoming.size + this.#notifications.size >= max) {
      debug('dropping notification %s: %s', method, this.#draining ? 'shutting down' : `more than ${max} calls in flight`);
      return closeAll(fds);
    }
    const call = new IncomingCall(0, method, this, this.#options.peer);
    if (this.#notifications === NO_CALLS) this.#notifications = new Set();
    this.#notifications.add(call);
    this.#run(call, handler, args, fds, false);
  }

  #onEvent(name: string, args: unknown[], fds: Fd[] | null): void {
    try {
      this.#options.onEvent?.(name, args, this);
    } finally {
      closeAll(fds); // fds in events must be taken by a listener, synchronously
    }
  }

  #onRequest(callId: number, method: string, args: unknown[], fds: Fd[] | null): void {
    this.#callsIn++;
    const refuse = this.#refusal(callId, method);
    if (refuse) {
      closeAll(fds);
      return this.#reply(callId, Msg.ERROR, refuse);
    }
    const call = new IncomingCall(callId, method, this, this.#options.peer);
    if (this.#incoming === NO_INCOMING) this.#incoming = new Map();
    this.#incoming.set(callId, call);
    this.#run(call, this.#options.handlers.get(method)!, args, fds, true);
  }

  #refusal(callId: number, method: string): RpcError | null {
    if (this.#incoming.has(callId)) throw rpcError(RpcCode.PROTOCOL_ERROR, `call id ${callId} is already in use`);
    if (this.#draining) return rpcError(RpcCode.SHUTTING_DOWN, 'the server is shutting down');
    const max = this.#options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (this.#incoming.size + this.#notifications.size >= max) return rpcError(RpcCode.OVERLOADED, `more than ${max} calls in flight on this connection`);
    if (!this.#options.handlers.has(method)) return rpcError(RpcCode.METHOD_NOT_FOUND, `no method named ${JSON.stringify(method)}`);
    return null;
  }

  // Validation, then the interceptor (if any), then the handler; a sync
  // handler's result is answered without a promise in between.
  #invoke(call: IncomingCall, handler: Handler, args: unknown[]): unknown {
    const validator = this.#options.validators?.get(call.method);
    const checked = validator ? validateArgs(validator, call.method, args) : args;
    const intercept = this.#options.intercept;
    const run = (a: unknown[]) =>
      intercept ? intercept({ method: call.method, args: a, context: call }, async () => handler(...a, call)) : handler(...a, call);
    return Array.isArray(checked) ? run(checked) : checked.then(run);
  }

  #run(call: IncomingCall, handler: Handler, args: unknown[], fds: Fd[] | null, answer: boolean): void {
    let result: unknown;
    try {
      result = this.#invoke(call, handler, args);
    } catch (err) {
      return this.#finish(call, fds, answer, Msg.ERROR, err);
    }
    if (isThenable(result)) {
      result.then(
        (value) => this.#finish(call, fds, answer, Msg.RESULT, value),
        (err) => this.#finish(call, fds, answer, Msg.ERROR, err),
      );
    } else {
      this.#finish(call, fds, answer, Msg.RESULT, result);
    }
  }

  #finish(call: IncomingCall, fds: Fd[] | null, answer: boolean, kind: number, value: unknown): void {
    if (answer && kind === Msg.RESULT && isAsyncIterable(value) && !this.#closed && !call.cancelled) {
      void this.#produce(call, value, fds);
      return;
    }
    closeAll(fds);
    if (!answer) {
      this.#notifications.delete(call);
      if (kind === Msg.ERROR) debug('notification %s failed: %s', call.method, (value as Error)?.message);
      return;
    }
    this.#forget(call.id);
    if (call.cancelled || this.#closed) return;
    this.#reply(call.id, kind, value);
  }

  #reply(callId: number, kind: number, value: unknown): void {
    try {
      this.#send([kind, callId, kind === Msg.ERROR ? toError(value) : prepareValue(value, 'result')]);
    } catch (err) {
      if (err instanceof RpcError && err.code === RpcCode.CONNECTION_CLOSED) return;
      // The answer could not travel (unencodable, too large, too many fds):
      // the caller still gets one that says why, or it would wait forever.
      this.#replyFailed(callId, err);
    }
  }

  #replyFailed(callId: number, err: unknown): void {
    const code = (err as { code?: unknown } | null)?.code;
    const why = err instanceof RpcError
      ? err
      : rpcError(typeof code === 'string' ? code : RpcCode.ENCODE_ERROR, `the answer could not be sent: ${err instanceof Error ? err.message : String(err)}`);
    try {
      this.#send([Msg.ERROR, callId, why]);
    } catch {
      // Not even that (its data cannot travel either): the bare code and message.
      this.#trySend([Msg.ERROR, callId, rpcError(why.code, why.message)]);
    }
  }

  async #produce(call: IncomingCall, iterable: AsyncIterable<unknown>, fds: Fd[] | null): Promise<void> {
    const credit = (call.credit = new Credit());
    const iterator = iterable[Symbol.asyncIterator]();
    call.onCancel = () => credit.interrupt();
    try {
      for (;;) {
        await credit.wait();
        if (call.cancelled || this.#closed) break;
        const step = await iterator.next();
        if (step.done || call.cancelled || this.#closed) break;
        credit.spend();
        if (!this.#send([Msg.STREAM_ITEM, call.id, prepareValue(step.value, 'item')])) await this.#drained();
      }
      if (!call.cancelled && !this.#closed) this.#send([Msg.STREAM_END, call.id]);
    } catch (err) {
      if (!call.cancelled && !this.#closed) this.#reply(call.id, Msg.ERROR, err);
    } finally {
      this.#forget(call.id);
      closeAll(fds);
      if (call.cancelled || this.#closed) await iterator.return?.().catch(() => {});
    }
  }

  // Results and events do not wait for 'drain' (streams do): a peer that
  // never reads would make them pile up here. Past the cap it is cut off,
  // and only it.
  #checkOutbound(): void {
    const queued = this.channel.transport.writableLength;
    const cap = this.#options.maxOutboundBytes ?? DEFAULT_MAX_OUTBOUND;
    if (queued <= cap) return;
    debug('peer is not reading: %d bytes queued, over the cap of %d', queued, cap);
    const err = rpcError(RpcCode.SLOW_CONSUMER, `the peer stopped reading: more than ${cap} bytes were waiting for it`);
    this.channel.destroy(err);
    this.#teardown(err);
  }

  #forget(callId: number): void {
    this.#incoming.delete(callId);
    if (this.#draining && this.#incoming.size === 0) this.emit('idle');
  }

  /** Resolves once no call from the peer is being handled (or the connection closed). */
  idle(): Promise<void> {
    if (this.#incoming.size === 0 || this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.off('idle', done);
        this.off('close', done);
        resolve();
      };
      this.on('idle', done);
      this.on('close', done);
    });
  }

  #drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.channel.off('drain', done);
        this.channel.off('close', done);
        resolve();
      };
      this.channel.on('drain', done);
      this.channel.on('close', done);
    });
  }

  #protocolError(message: string): void {
    debug('protocol error: %s', message);
    const err = rpcError(RpcCode.PROTOCOL_ERROR, `protocol error from peer: ${message}`);
    this.channel.destroy(err);
    this.#teardown(err);
  }

  // Everything in flight ends now, exactly once: our calls fail, the peer's
  // handlers see their signal aborted, streams stop.
  #teardown(reason: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    const lost = reason instanceof RpcError && reason.code === RpcCode.CONNECTION_CLOSED
      ? reason
      : new RpcError(`the connection closed: ${reason.message}`, { code: RpcCode.CONNECTION_CLOSED, cause: reason });
    for (const [callId, pending] of this.#pending) {
      this.#settle(callId, pending);
      pending.reject(lost);
    }
    for (const call of this.#incoming.values()) call.cancel(lost);
    for (const call of this.#notifications) call.cancel(lost);
    this.emit('close', reason);
  }
}

function id(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw rpcError(RpcCode.PROTOCOL_ERROR, 'bad call id');
  return v;
}

function count(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v > 1 << 20) throw rpcError(RpcCode.PROTOCOL_ERROR, 'bad credit');
  return v;
}

function str(v: unknown): string {
  if (typeof v !== 'string') throw rpcError(RpcCode.PROTOCOL_ERROR, 'expected a string');
  return v;
}

function list(v: unknown): unknown[] {
  if (!Array.isArray(v)) throw rpcError(RpcCode.PROTOCOL_ERROR, 'expected an array');
  return v;
}

function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return rpcError(RpcCode.INTERNAL, `the handler threw a non-Error: ${String(value)}`);
}

function closeAll(fds: Fd[] | null): void {
  if (fds) for (const fd of fds) fd.close();
}

// Fds inside a result nobody waits for any more must not leak.
function releaseFds(value: unknown, depth = 0): void {
  if (depth > 32 || value === null || typeof value !== 'object') return;
  if (typeof (value as Fd).take === 'function' && typeof (value as Fd).close === 'function') return (value as Fd).close();
  for (const v of Object.values(value as object)) releaseFds(v, depth + 1);
}
