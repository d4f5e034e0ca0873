// Timeouts without a timer each. Things given the same timeout expire in
// the order they were added, so one timer per timeout value, set for the
// oldest, serves them all (Node's own timer lists work so). A timer for
// each handshake was ~0.2 KB of garbage and an async resource per
// connection.

/** setTimeout's largest delay; a longer one would fire at once. */
export const MAX_DELAY = 2 ** 31 - 1;

class Queue<T> {
  // Item -> when it is due (performance.now() ms), oldest first.
  readonly due = new Map<T, number>();
  timer: NodeJS.Timeout | null = null;
}

export class Deadlines<T> {
  readonly #queues = new Map<number, Queue<T>>();
  readonly #expired: (item: T, ms: number) => void;

  /** `expired` runs for each item whose time is up; the item is gone from here by then. */
  constructor(expired: (item: T, ms: number) => void) {
    this.#expired = expired;
  }

  /** Adds `item`, due in `ms` (a number; an item added again moves to the back). */
  add(item: T, ms: number): void {
    let queue = this.#queues.get(ms);
    if (!queue) this.#queues.set(ms, (queue = new Queue()));
    // The Map keeps insertion order, which must be due order: an item set
    // again would keep its old place.
    queue.due.delete(item);
    queue.due.set(item, performance.now() + ms);
    if (!queue.timer) this.#arm(queue, ms, ms);
  }

  /**
   * Forgets an item added with `ms`. Its queue's timer stays: it finds the
   * queue empty when it fires (clearing it for every item that completes
   * in time would cost the timer this saves).
   */
  delete(item: T, ms: number): void {
    this.#queues.get(ms)?.due.delete(item);
  }

  #arm(queue: Queue<T>, ms: number, delay: number): void {
    queue.timer = setTimeout(() => this.#fire(queue, ms), Math.min(Math.max(1, Math.ceil(delay)), MAX_DELAY));
    queue.timer.unref();
  }

  // queue.timer stays set while this runs, so that items added meanwhile
  // (by an expired callback) arm nothing: the loop reaches them.
  #fire(queue: Queue<T>, ms: number): void {
    let next = -1;
    try {
      for (const [item, at] of queue.due) {
        // Read each time: the callbacks before may have taken a while.
        const now = performance.now();
        if (at > now) {
          next = at - now;
          break;
        }
        queue.due.delete(item);
        this.#expired(item, ms);
      }
    } finally {
      // A callback that threw leaves the rest due now: they go on at once.
      if (next < 0 && queue.due.size > 0) next = 0;
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
