// Calls from the peer: admission (in-flight limit, draining, unknown
// methods), validation and interceptor, the handler, and its answer: a
// RESULT or ERROR, or a credit-paced stream of items.
import { debuglog } from 'node:util';
import { CallTable } from './call-table.js';
import { prepareValue } from './codec.js';
import { RpcCode, RpcError, cancelReason, describeThrown, rpcError } from './errors.js';
import { type Fd, closeAll, closeTransfers } from './fd.js';
import { IncomingCall, type Handler, type Interceptor } from './incoming.js';
import { Msg } from './protocol.js';
import type { MessageSender } from './sender.js';
import { Credit, isAsyncIterable, isStreamHandler } from './stream.js';
import { type Validator, validateArgs } from './validation.js';
import type { RpcConnection } from './connection.js';

const debug = debuglog('afunix');

const DEFAULT_MAX_IN_FLIGHT = 1024;
// Arguments are spread into the handler's call, on the stack: a REQUEST of
// a million arguments overflowed it (a codeless RangeError back to the
// caller). No method takes more than this many.
export const MAX_ARGUMENTS = 4096;

export interface HandlingOptions {
  handlers: ReadonlyMap<string, Handler>;
  validators?: ReadonlyMap<string, Validator> | undefined;
  maxInFlight?: number | undefined;
  intercept?: Interceptor | undefined;
}

// Shared, only ever read: each field gets its own collection before its
// first write, so an idle connection carries none.
const NO_INCOMING = new CallTable<IncomingCall>();
const NO_CALLS: Set<IncomingCall> = new Set();

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as PromiseLike<unknown>).then === 'function';
}

function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  const like = errorLike(value);
  if (like) return like;
  return rpcError(RpcCode.INTERNAL, `the handler threw a non-Error: ${describeThrown(value)}`);
}

// `throw { code: 'E_X', message: '...' }`, common in plain JavaScript: the
// caller's handling turns on that code, so it travels as an error's would.
function errorLike(value: unknown): RpcError | null {
  if (value === null || typeof value !== 'object') return null;
  try {
    const { code, message, data } = value as { code?: unknown; message?: unknown; data?: unknown };
    return typeof code === 'string' && typeof message === 'string' ? rpcError(code, message, data) : null;
  } catch {
    return null;
  }
}

// Where an ENCODE_ERROR found what could not travel, cut short ('' if none).
function pathOf(err: unknown): string {
  try {
    const path = (err as { data?: { path?: unknown } } | null)?.data?.path;
    return typeof path === 'string' ? path.slice(0, 200) : '';
  } catch {
    return '';
  }
}

// An error's string code, if reading it does not throw.
function codeOf(err: unknown): string | null {
  try {
    const code = (err as { code?: unknown } | null)?.code;
    return typeof code === 'string' ? code : null;
  } catch {
    return null;
  }
}

// The last resort answer: the code and message alone, cut short so that it
// fits in MIN_MAX_MESSAGE_SIZE (a UTF-16 unit is at most 3 bytes of UTF-8:
// 3 * (128 + 1000) plus the envelope is well under 4096), the least any
// peer accepts, so that a caller always hears why.
const BARE_CODE_UNITS = 128;
const BARE_MESSAGE_UNITS = 1000;

function cutMessage(message: string): string {
  return message.length > BARE_MESSAGE_UNITS ? `${message.slice(0, BARE_MESSAGE_UNITS - 1)}…` : message;
}

function bareError(err: RpcError): RpcError {
  const message = cutMessage(err.message);
  return rpcError(err.code.slice(0, BARE_CODE_UNITS), message);
}

export class IncomingCalls {
  readonly #connection: RpcConnection;
  readonly #sender: MessageSender;
  readonly #options: HandlingOptions;
  #incoming: CallTable<IncomingCall> = NO_INCOMING;
  // Notifications being handled: they count against maxInFlight too.
  #notifications: Set<IncomingCall> = NO_CALLS;
  // Answers sent whose fds have not left yet: a closing server waits for
  // them (so a refusal still reaches the caller), but their calls are done.
  #answersInTransit = 0;
  /** Set by drain(): new calls are refused with SHUTTING_DOWN. */
  draining = false;
  /** Calls received, for stats. */
  received = 0;

  constructor(connection: RpcConnection, sender: MessageSender, options: HandlingOptions) {
    this.#connection = connection;
    this.#sender = sender;
    this.#options = options;
  }

  /** Calls (not notifications) still being handled, or answered with fds not yet gone. */
  get size(): number {
    return this.#incoming.size + this.#answersInTransit;
  }

  /** CANCEL from the peer, with the reason it gave (a code), if any. */
  cancel(callId: number, why: string | undefined): void {
    this.#incoming.get(callId)?.cancel(cancelReason(why));
  }

  /** CREDIT from the peer, for one of our streams. */
  credit(callId: number, n: number): void {
    this.#incoming.get(callId)?.credit?.add(n);
  }

  /** The connection is gone: every handler's signal is aborted. */
  cancelAll(reason: Error): void {
    for (const call of this.#incoming.entries()) call.cancel(reason);
    for (const call of this.#notifications) call.cancel(reason);
  }

  onNotify(method: string, args: unknown[], fds: Fd[] | null): void {
    const handler = this.#options.handlers.get(method);
    if (!handler || args.length > MAX_ARGUMENTS) return closeAll(fds);
    // A notification has no answer to carry OVERLOADED or SHUTTING_DOWN:
    // past the limit (or while draining) it is dropped, or a peer could
    // start handlers without bound (200 000 notifications of a 60 s
    // handler took a server to 867 MiB).
    const max = this.#options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (this.draining || this.#incoming.size + this.#notifications.size >= max) {
      debug('dropping notification %s: %s', method, this.draining ? 'shutting down' : `more than ${max} calls in flight`);
      return closeAll(fds);
    }
    const call = new IncomingCall(0, method, this.#connection, this.#connection.peer);
    if (this.#notifications === NO_CALLS) this.#notifications = new Set();
    this.#notifications.add(call);
    this.#run(call, handler, args, fds, false);
  }

  onRequest(callId: number, method: string, args: unknown[], fds: Fd[] | null): void {
    this.received++;
    const refuse = this.#refusal(callId, method, args.length);
    if (refuse) {
      closeAll(fds);
      void this.#reply(callId, Msg.ERROR, refuse); // (an RpcError: no fds)
      return;
    }
    const call = new IncomingCall(callId, method, this.#connection, this.#connection.peer);
    if (this.#incoming === NO_INCOMING) this.#incoming = new CallTable();
    this.#incoming.add(call);
    this.#run(call, this.#options.handlers.get(method)!, args, fds, true);
  }

  #refusal(callId: number, method: string, argCount: number): RpcError | null {
    if (this.#incoming.has(callId)) throw rpcError(RpcCode.PROTOCOL_ERROR, `call id ${callId} is already in use`);
    if (this.draining) return rpcError(RpcCode.SHUTTING_DOWN, 'the server is shutting down');
    const max = this.#options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (this.#incoming.size + this.#notifications.size >= max) return rpcError(RpcCode.OVERLOADED, `more than ${max} calls in flight on this connection`);
    if (!this.#options.handlers.has(method)) return rpcError(RpcCode.METHOD_NOT_FOUND, `no method named ${JSON.stringify(method)}`);
    if (argCount > MAX_ARGUMENTS) return rpcError(RpcCode.INVALID_ARGUMENTS, `${argCount} arguments; a call takes at most ${MAX_ARGUMENTS}`);
    return null;
  }

  // Validation, then the interceptor (if any), then the handler; a sync
  // handler's result is answered without a promise in between.
  #invoke(call: IncomingCall, handler: Handler, args: unknown[]): unknown {
    const validator = this.#options.validators?.get(call.method);
    const checked = validator ? validateArgs(validator, call.method, args) : args;
    const intercept = this.#options.intercept;
    const run = (a: unknown[]) =>
      intercept ? intercept({ method: call.method, args: a, context: call }, async () => handler(call, ...a)) : handler(call, ...a);
    return Array.isArray(checked) ? run(checked) : checked.then(run);
  }

  #run(call: IncomingCall, handler: Handler, args: unknown[], fds: Fd[] | null, answer: boolean): void {
    let result: unknown;
    try {
      result = this.#invoke(call, handler, args);
      // (A native Promise calls back once and never throws: no guard needed.)
      if (result instanceof Promise && Object.getPrototypeOf(result) === Promise.prototype) {
        result.then(
          (value) => this.#finish(call, fds, answer, Msg.RESULT, value),
          (err) => this.#finish(call, fds, answer, Msg.ERROR, err),
        );
        return;
      }
      if (isThenable(result)) return this.#awaitThenable(call, fds, answer, result);
    } catch (err) {
      return this.#finish(call, fds, answer, Msg.ERROR, err);
    }
    this.#finish(call, fds, answer, Msg.RESULT, result);
  }

  // Another library's thenable may call back twice, or call back and then
  // throw: its first word counts, as a Promise would take it.
  #awaitThenable(call: IncomingCall, fds: Fd[] | null, answer: boolean, thenable: PromiseLike<unknown>): void {
    let settled = false;
    const settle = (kind: number, value: unknown): void => {
      if (settled) return;
      settled = true;
      this.#finish(call, fds, answer, kind, value);
    };
    try {
      thenable.then(
        (value) => settle(Msg.RESULT, value),
        (err) => settle(Msg.ERROR, err),
      );
    } catch (err) {
      settle(Msg.ERROR, err);
    }
  }

  #finish(call: IncomingCall, fds: Fd[] | null, answer: boolean, kind: number, value: unknown): void {
    if (answer && kind === Msg.RESULT && isAsyncIterable(value) && !this.#connection.closed && !call.cancelled) {
      if (isStreamHandler(this.#options.handlers.get(call.method))) {
        void this.#produce(call, value, fds);
        return;
      }
      // The peer was told in the hello which methods stream, and this one
      // was not among them: its caller awaits a value (typed as a stream).
      stopIterating(value);
      kind = Msg.ERROR;
      value = rpcError(RpcCode.NOT_A_STREAM, `${call.method} returned an AsyncIterable, but only an async generator function (async function*) is announced as a stream: write it as one (yield* the iterable)`);
    }
    if (!answer) {
      closeAll(fds);
      this.#notifications.delete(call);
      if (kind === Msg.ERROR) debug('notification %s failed: %s', call.method, describeThrown(value));
      return closeTransfers(value); // a notification's answer goes nowhere
    }
    if (!this.#answering(call)) {
      closeAll(fds);
      this.#forget(call.id);
      return closeTransfers(value);
    }
    // Its arguments' fds are closed once the answer is packed: an answer
    // that carries one (a handler returning what it was given) holds it
    // open until it has left.
    try {
      this.#answered(call.id, this.#reply(call.id, kind, value));
    } finally {
      closeAll(fds);
    }
  }

  // The call is done: a CANCEL or the connection's end no longer aborts its
  // handler, even while its answer's fds (if `replied`) wait to leave.
  #answered(callId: number, replied: Promise<void> | undefined): void {
    if (replied) {
      this.#answersInTransit++;
      void replied.then(() => {
        this.#answersInTransit--;
        this.#checkIdle();
      });
    }
    this.#forget(callId);
  }

  // Whether the caller still waits for an answer to this call.
  #answering(call: IncomingCall): boolean {
    return !call.cancelled && !this.#connection.closed;
  }

  // Sends the answer; if it carries fds, returns a promise settled once
  // they left, or once the caller heard that the kernel refused them.
  #reply(callId: number, kind: number, value: unknown): Promise<void> | undefined {
    let sent: boolean | Promise<boolean>;
    try {
      sent = this.#sender.sendAwaitingFds(kind, callId, kind === Msg.ERROR ? toError(value) : prepareValue(value, 'result'));
    } catch (err) {
      // (The sender closes what it was handed; a value refused before it
      // got there still holds its own.)
      closeTransfers(value);
      if (err instanceof RpcError && err.code === RpcCode.CONNECTION_CLOSED) return;
      // The answer could not travel (unencodable, too large, too many fds):
      // the caller still gets one that says why, or it would wait forever.
      if (kind === Msg.ERROR) this.#errorFailed(callId, toError(value), err);
      else this.#replyFailed(callId, err);
      return;
    }
    if (typeof sent === 'boolean') return;
    return sent.then(
      () => {},
      (err: unknown) => this.#replyFailed(callId, err),
    );
  }

  #replyFailed(callId: number, err: unknown): void {
    const why = err instanceof RpcError ? err : rpcError(codeOf(err) ?? RpcCode.ENCODE_ERROR, `the answer could not be sent: ${describeThrown(err)}`);
    try {
      this.#sender.sendMessage(Msg.ERROR, callId, null, why);
    } catch {
      // Not even that (its data cannot travel either): the bare code and message.
      this.#sender.trySend([Msg.ERROR, callId, bareError(why)]);
    }
  }

  // A handler's error that cannot travel whole (its data does not encode,
  // its message is huge) still tells the caller its code, the one its
  // handling turns on (PROTOCOL.md 2.2): with its message cut short, and in
  // `data.lost` why the rest stayed behind. A codeless one is answered with
  // why it failed, as any other answer.
  #errorFailed(callId: number, error: Error, why: unknown): void {
    const code = codeOf(error);
    if (code === null) return this.#replyFailed(callId, why);
    const lost = { code: codeOf(why) ?? RpcCode.ENCODE_ERROR, path: pathOf(why) };
    const cut = cutMessage(describeThrown(error));
    try {
      this.#sender.sendMessage(Msg.ERROR, callId, null, rpcError(code.slice(0, BARE_CODE_UNITS), cut, { lost }));
    } catch {
      this.#sender.trySend([Msg.ERROR, callId, bareError(rpcError(code, cut))]);
    }
  }

  async #produce(call: IncomingCall, iterable: AsyncIterable<unknown>, fds: Fd[] | null): Promise<void> {
    const credit = (call.credit = new Credit());
    const iterator = iterable[Symbol.asyncIterator]();
    call.onCancel = () => credit.interrupt();
    // Why the iterator, still suspended at a yield, must be stopped; null
    // once it is done.
    let stop: unknown = null;
    let replied: Promise<void> | undefined;
    try {
      if (await this.#pump(call, iterator, credit)) {
        if (this.#answering(call)) this.#sender.send([Msg.STREAM_END, call.id]);
      } else {
        stop = STOPPED;
      }
    } catch (err) {
      // The iterator threw (it is done then), or an item could not be sent.
      if (err instanceof ItemNotSent) stop = err.reason;
      if (this.#answering(call)) replied = this.#reply(call.id, Msg.ERROR, err instanceof ItemNotSent ? err.reason : err);
    } finally {
      this.#answered(call.id, replied);
      closeAll(fds);
    }
    if (stop !== null) await stopProducer(call, iterator, stop);
  }

  // Items, as credit allows. Resolves true once the iterator is done, false
  // if the call ended first; throws what the iterator threw, or ItemNotSent.
  async #pump(call: IncomingCall, iterator: AsyncIterator<unknown>, credit: Credit): Promise<boolean> {
    for (let sinceTurn = 0; ; sinceTurn++) {
      const waiting = credit.wait();
      if (waiting) {
        await waiting; // for a CREDIT message: a turn of the event loop
        sinceTurn = 0;
      } else if (sinceTurn >= ITEMS_PER_TURN) {
        await nextTurn();
        sinceTurn = 0;
      }
      if (!this.#answering(call)) return false;
      const step = await iterator.next();
      if (step.done) return true;
      if (!this.#answering(call)) {
        closeTransfers(step.value); // produced for nobody
        return false;
      }
      credit.spend();
      const sent = this.#sendItem(call.id, step.value);
      if (!(typeof sent === 'boolean' ? sent : await sent)) {
        await this.#sender.drained();
        sinceTurn = 0; // (it may have waited for 'drain': a turn, or as good as one)
      }
    }
  }

  // An item with fds is waited for until they have left: if the kernel
  // refuses them, the stream fails right there, before any item after it
  // (or its end) is sent.
  #sendItem(callId: number, item: unknown): boolean | Promise<boolean> {
    let sent: boolean | Promise<boolean>;
    try {
      sent = this.#sender.sendAwaitingFds(Msg.STREAM_ITEM, callId, prepareValue(item, 'item'));
    } catch (err) {
      closeTransfers(item);
      throw new ItemNotSent(err);
    }
    if (typeof sent === 'boolean') return sent;
    return sent.catch((err: unknown) => {
      throw new ItemNotSent(err);
    });
  }

  #forget(callId: number): void {
    this.#incoming.delete(callId);
    this.#checkIdle();
  }

  #checkIdle(): void {
    if (this.draining && this.size === 0) this.#connection.emit('idle');
  }
}

// A stream item that could not be sent (unencodable, too large): the stream
// fails with `reason`, and its producer, still at its yield, is stopped.
class ItemNotSent {
  constructor(readonly reason: unknown) {}
}

// The reason a stream stopped by its caller or a lost connection gives: its
// call was cancelled with the real one already.
const STOPPED = Symbol('stopped');

// A stream that ends before its iterator did: the handler hears it through
// ctx.signal (unless that was aborted already), and return() runs its
// finally blocks.
async function stopProducer(call: IncomingCall, iterator: AsyncIterator<unknown>, reason: unknown): Promise<void> {
  call.cancel(reason);
  await returnQuietly(iterator);
}

async function returnQuietly(iterator: AsyncIterator<unknown>): Promise<void> {
  try {
    await iterator.return?.();
  } catch {
    // Its own failure to stop has nobody to go to.
  }
}

// A consumer may grant any credit (up to 2^20 a message, any number of
// messages), and a generator that never waits on I/O resolves each item at
// once: without a turn of the event loop now and then, such a stream held
// the whole server (other connections, timers, the close of its own
// connection) for as long as the credit lasted (51 grants of 2^20: 47 s).
const ITEMS_PER_TURN = 64;
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

// An iterable a handler returned that will not be consumed: an async
// generator's finally blocks run, an RpcStream from another peer is cancelled.
function stopIterating(iterable: AsyncIterable<unknown>): void {
  try {
    void returnQuietly(iterable[Symbol.asyncIterator]());
  } catch {
    // (Its [Symbol.asyncIterator] threw: there is nothing to stop.)
  }
}
