// Timeouts without a timer each. Things given the same timeout expire in
// the order they were added, so one timer per timeout value, set for the
// oldest, serves them all, and each timeout's items wait in a list linked
// through the items themselves (Node's own timer lists work so). A timer
// for each handshake was ~0.2 KB of garbage and an async resource per
// connection; a Map per timeout, in which a server's handshakes come and
// go, reallocated its table as it grew and shrank (~150 B per connection).

import { invalidArgValue, shownValue } from './errors.js';

// Milliseconds on a monotonic clock: process.hrtime() reads the one
// performance.now() does (uv_hrtime), without loading perf_hooks at a
// connection's first handshake (~1.5 ms of a short-lived client's start).
function nowMs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e3 + ns / 1e6;
}

/** setTimeout's largest delay; a longer one would fire at once. */
export const MAX_DELAY = 2 ** 31 - 1;

/** The error for a timeout option that is not a number of ms ≥ 0 (Infinity: none; null or undefined: the default), or null. */
export function badTimeout(name: string, value: unknown): TypeError | null {
  if (value === undefined || value === null || (typeof value === 'number' && value >= 0)) return null;
  return invalidArgValue(name, `must be a non-negative number of milliseconds, or Infinity for none; received ${shownValue(value)}`);
}

/** Something Deadlines can hold: the links are its own fields, so that adding and removing it allocates nothing. */
export class Timed {
  /** @internal The list it waits in, if any. */
  deadlineQueue: Queue | null = null;
  /** @internal */
  deadlinePrev: Timed | null = null;
  /** @internal */
  deadlineNext: Timed | null = null;
  /** @internal When it is due (nowMs()). */
  deadlineAt = 0;
}

class Queue {
  head: Timed | null = null;
  tail: Timed | null = null;
  timer: NodeJS.Timeout | null = null;

  append(item: Timed): void {
    item.deadlineQueue = this;
    item.deadlinePrev = this.tail;
    item.deadlineNext = null;
    if (this.tail) this.tail.deadlineNext = item;
    else this.head = item;
    this.tail = item;
  }

  remove(item: Timed): void {
    const { deadlinePrev: prev, deadlineNext: next } = item;
    if (prev) prev.deadlineNext = next;
    else this.head = next;
    if (next) next.deadlinePrev = prev;
    else this.tail = prev;
    item.deadlineQueue = item.deadlinePrev = item.deadlineNext = null;
  }
}

export class Deadlines<T extends Timed> {
  readonly #queues = new Map<number, Queue>();
  readonly #expired: (item: T, ms: number) => void;

  /** `expired` runs for each item whose time is up; the item is gone from here by then. */
  constructor(expired: (item: T, ms: number) => void) {
    this.#expired = expired;
  }

  /** Adds `item`, due in `ms` (a number; an item added again moves to the back, with its new time). */
  add(item: T, ms: number): void {
    let queue = this.#queues.get(ms);
    if (!queue) this.#queues.set(ms, (queue = new Queue()));
    // The list must stay in due order: an item set again goes to its end.
    item.deadlineQueue?.remove(item);
    item.deadlineAt = nowMs() + ms;
    queue.append(item);
    if (!queue.timer) this.#arm(queue, ms, ms);
  }

  /**
   * Forgets an item. Its queue's timer stays: it finds the queue empty when
   * it fires (clearing it for every item that completes in time would cost
   * the timer this saves).
   */
  delete(item: T): void {
    item.deadlineQueue?.remove(item);
  }

  /** Every item waiting, as a snapshot (what is done with one may add or delete others). */
  items(): T[] {
    const all: T[] = [];
    for (const queue of this.#queues.values()) {
      for (let item = queue.head; item !== null; item = item.deadlineNext) all.push(item as T);
    }
    return all;
  }

  #arm(queue: Queue, ms: number, delay: number): void {
    queue.timer = setTimeout(() => this.#fire(queue, ms), Math.min(Math.max(1, Math.ceil(delay)), MAX_DELAY));
    queue.timer.unref();
  }

  // queue.timer stays set while this runs, so that items added meanwhile
  // (by an expired callback) arm nothing: the loop reaches them.
  #fire(queue: Queue, ms: number): void {
    let next = -1;
    try {
      for (let item = queue.head; item !== null; item = queue.head) {
        // Read each time: the callbacks before may have taken a while.
        const now = nowMs();
        if (item.deadlineAt > now) {
          next = item.deadlineAt - now;
          break;
        }
        queue.remove(item);
        this.#expired(item as T, ms);
      }
    } finally {
      // A callback that threw leaves the rest due now: they go on at once.
      if (next < 0 && queue.head !== null) next = 0;
      if (next >= 0) {
        this.#arm(queue, ms, next);
      } else {
        // Nothing waits with this timeout: a program that used many
        // different ones must not keep a queue for each.
        queue.timer = null;
        this.#queues.delete(ms);
      }
    }
  }
}
