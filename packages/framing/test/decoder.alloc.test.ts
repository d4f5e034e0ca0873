// A frame's buffer that cannot be allocated (strict overcommit, memory
// pressure) must not strand the fds that came with the read.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FrameDecoder, encodeHeader } from '../src/index.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('FrameDecoder when a buffer cannot be allocated', () => {
  it('keeps the fds it had not handed out, for reset(), and hands out none twice', () => {
    const delivered: number[] = [];
    const decoder = new FrameDecoder((_payload, fds) => {
      if (fds) delivered.push(...fds);
    });
    const real = Buffer.allocUnsafe;
    vi.spyOn(Buffer, 'allocUnsafe').mockImplementation((size: number) => {
      if (size >= 1024 * 1024) throw new RangeError('Array buffer allocation failed');
      return real(size);
    });
    // One read: a whole frame with fds 10 and 11, then the start of a 4 MiB
    // frame with fd 12, whose buffer cannot be had.
    const small = Buffer.concat([encodeHeader(3, 2), Buffer.from('abc')]);
    const big = Buffer.concat([encodeHeader(4 * 1024 * 1024, 1), Buffer.alloc(100)]);
    expect(() => decoder.push(Buffer.concat([small, big]), [10, 11, 12])).toThrow(RangeError);
    expect(delivered).toEqual([10, 11]);
    expect(decoder.reset()).toEqual([12]);
  });

  it('also for a frame whose header arrived in two reads, its fds with the first', () => {
    const decoder = new FrameDecoder(() => {});
    const real = Buffer.allocUnsafe;
    vi.spyOn(Buffer, 'allocUnsafe').mockImplementation((size: number) => {
      if (size >= 1024 * 1024) throw new RangeError('Array buffer allocation failed');
      return real(size);
    });
    const header = encodeHeader(4 * 1024 * 1024, 1);
    decoder.push(header.subarray(0, 4), [20]);
    expect(() => decoder.push(Buffer.concat([header.subarray(4), Buffer.alloc(100)]))).toThrow(RangeError);
    expect(decoder.reset()).toEqual([20]);
  });
});
