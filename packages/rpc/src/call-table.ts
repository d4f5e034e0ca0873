// The calls of one connection in flight, by id. A Map did this at ~85 bytes
// of garbage a call (its hash table rebuilt as entries come and go); ids
// are mostly consecutive, so an array indexed by the id's low bits holds
// them with none. Ids that collide there with a call still in flight (a
// long stream, or ids a peer chose) go to a Map on the side. The array
// doubles once it is half full; each time it empties, it shrinks to what
// the calls since it last emptied needed: a connection that once had many
// calls in flight does not keep the room for them, and one that keeps
// answering its whole window at once does not grow it again every time.

/** What the table holds: anything that knows its own call id. */
export interface Keyed {
  readonly id: number;
}

const FIRST_SIZE = 8;

export class CallTable<T extends Keyed> {
  #slots: Array<T | undefined> = new Array<T | undefined>(FIRST_SIZE).fill(undefined);
  #mask = FIRST_SIZE - 1;
  #inSlots = 0;
  // The most calls in the array since it last emptied.
  #peak = 0;
  #overflow: Map<number, T> | null = null;

  get size(): number {
    return this.#inSlots + (this.#overflow?.size ?? 0);
  }

  get(id: number): T | undefined {
    const entry = this.#slots[id & this.#mask];
    if (entry !== undefined && entry.id === id) return entry;
    return this.#overflow?.get(id);
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  /** Adds `entry` under its id, which must not be in the table. */
  add(entry: T): void {
    if (this.#inSlots >= (this.#mask + 1) >> 1) this.#grow();
    const at = entry.id & this.#mask;
    if (this.#slots[at] === undefined) {
      this.#slots[at] = entry;
      if (++this.#inSlots > this.#peak) this.#peak = this.#inSlots;
    } else {
      (this.#overflow ??= new Map()).set(entry.id, entry);
    }
  }

  delete(id: number): boolean {
    const at = id & this.#mask;
    const entry = this.#slots[at];
    if (entry !== undefined && entry.id === id) {
      this.#slots[at] = undefined;
      if (--this.#inSlots === 0) this.#shrink();
      return true;
    }
    const overflow = this.#overflow;
    if (!overflow?.delete(id)) return false;
    if (overflow.size === 0) this.#overflow = null;
    return true;
  }

  /** Every entry, in the order of their ids (the order calls started in, for ids we give). */
  entries(): T[] {
    const all: T[] = [];
    for (const entry of this.#slots) if (entry !== undefined) all.push(entry);
    if (this.#overflow) for (const entry of this.#overflow.values()) all.push(entry);
    return all.sort((a, b) => a.id - b.id);
  }

  // Empty now: down to the size the peak since the last time fits in.
  #shrink(): void {
    let size = FIRST_SIZE;
    while (size <= this.#peak * 2) size *= 2;
    this.#peak = 0;
    if (size > this.#mask) return;
    this.#slots = new Array<T | undefined>(size).fill(undefined);
    this.#mask = size - 1;
  }

  #grow(): void {
    const old = this.#slots;
    const overflow = this.#overflow;
    this.#slots = new Array<T | undefined>(old.length * 2).fill(undefined);
    this.#mask = old.length * 2 - 1;
    this.#inSlots = 0;
    this.#overflow = null;
    for (const entry of old) if (entry !== undefined) this.add(entry);
    if (overflow) for (const entry of overflow.values()) this.add(entry);
  }
}
