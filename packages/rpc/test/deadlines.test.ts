import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Deadlines, Timed } from '../src/deadlines.js';

// An item with a name, as the tests below show it.
class Item extends Timed {
  constructor(readonly name: string) {
    super();
  }
}

/** Items by name, made on first use: the same name is the same item. */
function items(): (name: string | number) => Item {
  const made = new Map<string, Item>();
  return (name) => {
    const key = String(name);
    let item = made.get(key);
    if (!item) made.set(key, (item = new Item(key)));
    return item;
  };
}

describe('Deadlines (one timer per timeout value)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'hrtime'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('expires each item at its own time, not with the oldest', () => {
    const named = items();
    const expired: string[] = [];
    const d = new Deadlines<Item>((item, ms) => expired.push(`${item.name}@${ms}`));
    d.add(named('a'), 100);
    vi.advanceTimersByTime(60);
    d.add(named('b'), 100);
    vi.advanceTimersByTime(39);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual(['a@100']);
    vi.advanceTimersByTime(59);
    expect(expired).toEqual(['a@100']);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual(['a@100', 'b@100']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('never expires an item deleted in time, and keeps the others', () => {
    const named = items();
    const expired: string[] = [];
    const d = new Deadlines<Item>((item) => expired.push(item.name));
    d.add(named('a'), 50);
    d.add(named('b'), 50);
    d.add(named('c'), 50);
    d.delete(named('b'));
    vi.advanceTimersByTime(50);
    expect(expired).toEqual(['a', 'c']);
  });

  it('keeps different timeouts apart', () => {
    const named = items();
    const expired: string[] = [];
    const d = new Deadlines<Item>((item) => expired.push(item.name));
    d.add(named('slow'), 300);
    d.add(named('fast'), 100);
    vi.advanceTimersByTime(100);
    expect(expired).toEqual(['fast']);
    vi.advanceTimersByTime(200);
    expect(expired).toEqual(['fast', 'slow']);
  });

  it('goes on with the rest when a callback throws, and with items added by a callback', () => {
    const named = items();
    const expired: string[] = [];
    const d = new Deadlines<Item>((item) => {
      expired.push(item.name);
      if (item.name === 'a') d.add(named('late'), 10);
      if (item.name === 'b') throw new Error('boom');
    });
    d.add(named('a'), 10);
    d.add(named('b'), 10);
    d.add(named('c'), 10);
    expect(() => vi.advanceTimersByTime(10)).toThrow('boom');
    vi.advanceTimersByTime(1);
    expect(expired).toEqual(['a', 'b', 'c']);
    vi.advanceTimersByTime(9);
    expect(expired).toEqual(['a', 'b', 'c', 'late']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an item added again moves to the back, with its new time', () => {
    const named = items();
    const expired: string[] = [];
    const d = new Deadlines<Item>((item) => expired.push(item.name));
    d.add(named('a'), 100);
    vi.advanceTimersByTime(10);
    d.add(named('b'), 100);
    vi.advanceTimersByTime(10);
    d.add(named('a'), 100); // now due at 120, after b (110)
    vi.advanceTimersByTime(90);
    expect(expired).toEqual(['b']);
    vi.advanceTimersByTime(10);
    expect(expired).toEqual(['b', 'a']);
  });

  it('never fires an item with an infinite timeout, and a callback may delete a later item', () => {
    const named = items();
    const expired: string[] = [];
    const d = new Deadlines<Item>((item) => {
      expired.push(item.name);
      if (item.name === 'a') d.delete(named('b'));
    });
    d.add(named('forever'), Number.POSITIVE_INFINITY);
    d.add(named('a'), 10);
    d.add(named('b'), 10);
    vi.advanceTimersByTime(10);
    expect(expired).toEqual(['a']);
    vi.advanceTimersByTime(2 ** 31);
    expect(expired).toEqual(['a']);
  });

  it('an item added with another timeout leaves its first list; deleting one never added does nothing', () => {
    const named = items();
    const expired: string[] = [];
    const d = new Deadlines<Item>((item, ms) => expired.push(`${item.name}@${ms}`));
    d.add(named('a'), 100);
    d.add(named('b'), 100);
    d.add(named('a'), 50);
    d.delete(named('never added'));
    vi.advanceTimersByTime(50);
    expect(expired).toEqual(['a@50']);
    vi.advanceTimersByTime(50);
    expect(expired).toEqual(['a@50', 'b@100']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('uses one timer for many items with the same timeout', () => {
    const named = items();
    const d = new Deadlines<Item>(() => {});
    for (let i = 0; i < 1000; i++) d.add(named(i), 5_000);
    expect(vi.getTimerCount()).toBe(1);
    for (let i = 0; i < 1000; i++) d.delete(named(i));
    // The timer stays until it fires and finds nothing; then none is left.
    vi.advanceTimersByTime(5_000);
    expect(vi.getTimerCount()).toBe(0);
  });
});
