import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Deadlines } from '../src/deadlines.js';

describe('Deadlines (one timer per timeout value)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('expires each item at its own time, not with the oldest', () => {
    const expired: string[] = [];
    const d = new Deadlines<string>((item, ms) => expired.push(`${item}@${ms}`));
    d.add('a', 100);
    vi.advanceTimersByTime(60);
    d.add('b', 100);
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
    const expired: string[] = [];
    const d = new Deadlines<string>((item) => expired.push(item));
    d.add('a', 50);
    d.add('b', 50);
    d.add('c', 50);
    d.delete('b', 50);
    vi.advanceTimersByTime(50);
    expect(expired).toEqual(['a', 'c']);
  });

  it('keeps different timeouts apart', () => {
    const expired: string[] = [];
    const d = new Deadlines<string>((item) => expired.push(item));
    d.add('slow', 300);
    d.add('fast', 100);
    vi.advanceTimersByTime(100);
    expect(expired).toEqual(['fast']);
    vi.advanceTimersByTime(200);
    expect(expired).toEqual(['fast', 'slow']);
  });

  it('goes on with the rest when a callback throws, and with items added by a callback', () => {
    const expired: string[] = [];
    const d = new Deadlines<string>((item) => {
      expired.push(item);
      if (item === 'a') d.add('late', 10);
      if (item === 'b') throw new Error('boom');
    });
    d.add('a', 10);
    d.add('b', 10);
    d.add('c', 10);
    expect(() => vi.advanceTimersByTime(10)).toThrow('boom');
    vi.advanceTimersByTime(1);
    expect(expired).toEqual(['a', 'b', 'c']);
    vi.advanceTimersByTime(9);
    expect(expired).toEqual(['a', 'b', 'c', 'late']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an item added again moves to the back, with its new time', () => {
    const expired: string[] = [];
    const d = new Deadlines<string>((item) => expired.push(item));
    d.add('a', 100);
    vi.advanceTimersByTime(10);
    d.add('b', 100);
    vi.advanceTimersByTime(10);
    d.add('a', 100); // now due at 120, after b (110)
    vi.advanceTimersByTime(90);
    expect(expired).toEqual(['b']);
    vi.advanceTimersByTime(10);
    expect(expired).toEqual(['b', 'a']);
  });

  it('never fires an item with an infinite timeout, and a callback may delete a later item', () => {
    const expired: string[] = [];
    const d = new Deadlines<string>((item) => {
      expired.push(item);
      if (item === 'a') d.delete('b', 10);
    });
    d.add('forever', Number.POSITIVE_INFINITY);
    d.add('a', 10);
    d.add('b', 10);
    vi.advanceTimersByTime(10);
    expect(expired).toEqual(['a']);
    vi.advanceTimersByTime(2 ** 31);
    expect(expired).toEqual(['a']);
  });

  it('uses one timer for many items with the same timeout', () => {
    const d = new Deadlines<number>(() => {});
    for (let i = 0; i < 1000; i++) d.add(i, 5_000);
    expect(vi.getTimerCount()).toBe(1);
    for (let i = 0; i < 1000; i++) d.delete(i, 5_000);
    // The timer stays until it fires and finds nothing; then none is left.
    vi.advanceTimersByTime(5_000);
    expect(vi.getTimerCount()).toBe(0);
  });
});
