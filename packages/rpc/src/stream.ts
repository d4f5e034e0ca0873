// Streams with credit-based flow control: a producer sends at most
// STREAM_WINDOW items beyond what the consumer has taken, so a slow consumer
// never makes the producer buffer without bound.
import { releaseFds } from './fd.js';
import { STREAM_WINDOW } from './protocol.js';

/** What the consumer side needs from its connection. */
export interface StreamLink {
  grant(id: number, n: number): void;
  cancel(id: number): void;
}

const NO_LINK: StreamLink = { grant() {}, cancel() {} };

/** @internal A stream call that could not start: its first next() rejects with `err`. */
export function failedStream<T>(err: Error): RpcStream<T> {
  const stream = new RpcStream<T>(-1, NO_LINK);
  stream.end(err);
  return stream;
}

// What a stream call has received and who waits for it: the call's record
// holds this, not the RpcStream the caller holds, so that a stream its
// caller dropped (without break or return()) can be collected, and is then
// cancelled (see `abandoned`). Nothing here refers back to the RpcStream.
class StreamState<T> {
  readonly id: number;
  readonly link: StreamLink;
  items: T[] = [];
  taken = 0;
  finished = false;
  error: Error | null = null;
  // next() calls waiting for an item, in order: a caller may make several
  // without awaiting each.
  waiters: Array<{ resolve: (r: IteratorResult<T>) => void; reject: (e: Error) => void }> = [];

  constructor(id: number, link: StreamLink) {
    this.id = id;
    this.link = link;
  }

  push(item: T): void {
    if (this.finished) return releaseFds(item);
    const waiter = this.waiters.shift();
    if (waiter) {
      this.took();
      waiter.resolve({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  end(err?: Error): void {
    if (this.finished) return;
    this.finished = true;
    // Kept until the consumer has taken the items before it (or is waiting
    // now): an error must never pass for a normal end.
    if (err) this.error = err;
    if (this.items.length === 0) this.settleWaiters(err ?? null);
  }

  // The caller gave up (abort, deadline): at once, as a call's promise
  // settles at once; what was buffered is dropped, not read past the end.
  abort(err: Error): void {
    if (this.finished) return;
    this.dropItems();
    this.end(err);
  }

  cancel(): void {
    this.dropItems();
    this.error = null; // stopped by the consumer: from now on only done
    if (this.finished) return;
    this.finished = true;
    this.link.cancel(this.id);
    this.settleWaiters(null);
  }

  // Items the consumer will never take: nobody else would close their fds.
  dropItems(): void {
    const items = this.items;
    this.items = [];
    for (const item of items) releaseFds(item);
  }

  // Credit goes back in half-window steps: one message per 16 items.
  took(): void {
    if (++this.taken >= STREAM_WINDOW / 2 && !this.finished) {
      this.link.grant(this.id, this.taken);
      this.taken = 0;
    }
  }

  // The stream is over: the first waiter hears why (if it failed), the
  // others that it is done, as their next() would say after that.
  settleWaiters(err: Error | null): void {
    const waiters = this.waiters;
    if (waiters.length === 0) return;
    this.waiters = [];
    for (const waiter of waiters) {
      if (err) {
        this.error = null;
        waiter.reject(err);
        err = null;
      } else {
        waiter.resolve({ value: undefined, done: true });
      }
    }
  }
}

export type { StreamState };

// A stream its caller dropped unfinished (read with next() and let go,
// without break or return()) kept its producer suspended on the peer, held
// one of the peer's maxInFlight slots, and up to 32 items (their fds too)
// here, for good: 64 such streams made every later call OVERLOADED.
// Collected, it is cancelled as return() would.
const abandoned = new FinalizationRegistry<StreamState<unknown>>((state) => state.cancel());

/** The consumer side of a streamed result: `for await` it; `break` cancels it. */
export class RpcStream<T> implements AsyncIterable<T>, AsyncIterator<T> {
  readonly #state: StreamState<T>;

  /** @internal */
  constructor(id: number, link: StreamLink) {
    this.#state = new StreamState<T>(id, link);
    abandoned.register(this, this.#state as StreamState<unknown>);
  }

  /** @internal What the call's record holds: the items, and who waits for them. */
  static stateOf<T>(stream: RpcStream<T>): StreamState<T> {
    return stream.#state;
  }

  get id(): number {
    return this.#state.id;
  }

  /** @internal The producer ended (err: it failed, or the call was lost). */
  end(err?: Error): void {
    this.#state.end(err);
  }

  /** Items received but not yet consumed (never more than the window). */
  get buffered(): number {
    return this.#state.items.length;
  }

  next(): Promise<IteratorResult<T>> {
    const state = this.#state;
    if (state.items.length > 0) {
      const value = state.items.shift()!;
      state.took();
      return Promise.resolve({ value, done: false });
    }
    if (state.error) {
      const err = state.error;
      state.error = null;
      return Promise.reject(err);
    }
    if (state.finished) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      state.waiters.push({ resolve, reject });
    });
  }

  /** Stops the stream; the producer's handler sees its signal aborted. */
  return(): Promise<IteratorResult<T>> {
    this.cancel();
    return Promise.resolve({ value: undefined, done: true });
  }

  cancel(): void {
    this.#state.cancel();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

export function isStreamHandler(fn: unknown): boolean {
  return typeof fn === 'function' && Object.getPrototypeOf(fn)?.constructor?.name === 'AsyncGeneratorFunction';
}

export function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  if (value === null || typeof value !== 'object') return false;
  try {
    return typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
  } catch {
    return false; // (a getter that throws: a value, sent as one)
  }
}

/** The producer side's credit: how many items may go out now. */
export class Credit {
  #available = STREAM_WINDOW;
  #wake: (() => void) | null = null;

  add(n: number): void {
    this.#available += n;
    this.#release();
  }

  /** Resolves when at least one item may be sent (or the stream was stopped). */
  wait(): Promise<void> | null {
    if (this.#available > 0) return null;
    return new Promise((resolve) => {
      this.#wake = resolve;
    });
  }

  spend(): void {
    this.#available--;
  }

  /** Wakes a waiting producer so it can notice cancellation. */
  interrupt(): void {
    this.#release();
  }

  #release(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
