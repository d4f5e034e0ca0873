// Property-based: whatever the frames and however the stream is cut, the
// decoder gives back the same frames with the same fds; and whatever bytes
// a peer sends, it fails only with a FramingError, within its limits, with
// every fd accounted for exactly once.
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FrameDecoder, FramingError, type FrameLimits, HEADER_SIZE, encodeHeader } from '../src/index.js';
import type { Decoded, TestFrame } from './helpers.js';

const RUNS = 300;

// Frames with fake fd numbers, unique across the whole sequence so that a
// misrouted fd is visible.
const framesArb = fc
  .array(fc.record({ payload: fc.uint8Array({ maxLength: 300 }), fdCount: fc.nat({ max: 4 }) }), { maxLength: 25 })
  .map((list) => {
    let next = 100;
    return list.map(({ payload, fdCount }): TestFrame => ({
      payload: Buffer.from(payload),
      fds: Array.from({ length: fdCount }, () => next++),
    }));
  });

interface Chunk {
  bytes: Buffer;
  fds: number[] | null;
}

// Cuts the encoded stream at `cuts`; each chunk carries the fds of the
// frames whose first byte (header byte 0) lies in it, in order.
// With `keep`, only the stream's first `keep` bytes are cut up.
function cutStream(frames: TestFrame[], cuts: number[], keep = Infinity): Chunk[] {
  const parts = frames.flatMap((f) => [encodeHeader(f.payload.length, f.fds.length), f.payload]);
  const whole = Buffer.concat(parts);
  const stream = whole.subarray(0, Math.min(keep, whole.length));
  const starts: Array<{ at: number; fds: number[] }> = [];
  let at = 0;
  for (const f of frames) {
    starts.push({ at, fds: f.fds });
    at += HEADER_SIZE + f.payload.length;
  }
  const bounds = [...new Set([0, ...cuts.map((c) => c % (stream.length + 1)), stream.length])].sort((a, b) => a - b);
  const chunks: Chunk[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const [from, to] = [bounds[i]!, bounds[i + 1]!];
    const fds = starts.filter((s) => s.at >= from && s.at < to).flatMap((s) => s.fds);
    chunks.push({ bytes: stream.subarray(from, to), fds: fds.length > 0 ? fds : null });
  }
  return chunks;
}

function decodeAll(chunks: Chunk[], limits?: FrameLimits): { frames: Decoded[]; decoder: FrameDecoder } {
  const frames: Decoded[] = [];
  const decoder = new FrameDecoder((payload, fds) => frames.push({ payload: Buffer.from(payload), fds }), limits);
  for (const c of chunks) decoder.push(c.bytes, c.fds);
  return { frames, decoder };
}

function expected(frames: TestFrame[]): Decoded[] {
  return frames.map((f) => ({ payload: f.payload, fds: f.fds.length > 0 ? f.fds : null }));
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('round trip under any chunking', () => {
  it('decodes any frames, cut anywhere, to the same frames with the same fds', () => {
    fc.assert(
      fc.property(framesArb, fc.array(fc.nat(), { maxLength: 40 }), (frames, cuts) => {
        const { frames: got, decoder } = decodeAll(cutStream(frames, cuts));
        expect(got).toEqual(expected(frames));
        expect(decoder.buffered).toBe(0);
        expect(decoder.reset()).toEqual([]);
      }),
      { numRuns: RUNS },
    );
  });

  it('fds moved to any chunk but the one where their frame starts are a protocol error', () => {
    fc.assert(
      fc.property(framesArb, fc.array(fc.nat(), { minLength: 1, maxLength: 20 }), fc.nat(), fc.nat(), (frames, cuts, pick, to) => {
        const chunks = cutStream(frames, cuts);
        const carriers = chunks.map((c, i) => i).filter((i) => chunks[i]!.fds);
        fc.pre(carriers.length > 0 && chunks.length > 1);
        const from = carriers[pick % carriers.length]!;
        const target = (from + 1 + (to % (chunks.length - 1))) % chunks.length;
        const moved = chunks.map((c) => ({ ...c }));
        moved[target]!.fds = [...(moved[target]!.fds ?? []), ...moved[from]!.fds!];
        moved[from]!.fds = null;
        let code: string | undefined;
        try {
          decodeAll(moved);
        } catch (err) {
          code = (err as FramingError).code;
        }
        expect(code).toBe('PROTOCOL_ERROR');
      }),
      { numRuns: RUNS },
    );
  });

  it('decodes byte by byte', () => {
    fc.assert(
      fc.property(framesArb, (frames) => {
        const total = frames.reduce((n, f) => n + HEADER_SIZE + f.payload.length, 0);
        const cuts = Array.from({ length: total }, (_, i) => i);
        expect(decodeAll(cutStream(frames, cuts)).frames).toEqual(expected(frames));
      }),
      { numRuns: 50 },
    );
  });

  it('a stream cut short keeps the whole frames before the cut and holds the rest', () => {
    fc.assert(
      fc.property(framesArb, fc.array(fc.nat(), { maxLength: 10 }), fc.nat(), (frames, cuts, end) => {
        const total = frames.reduce((n, f) => n + HEADER_SIZE + f.payload.length, 0);
        const keep = total === 0 ? 0 : end % total;
        const { frames: got, decoder } = decodeAll(cutStream(frames, cuts, keep));
        let partialStart = 0;
        const whole: TestFrame[] = [];
        for (const f of frames) {
          if (partialStart + HEADER_SIZE + f.payload.length > keep) break;
          whole.push(f);
          partialStart += HEADER_SIZE + f.payload.length;
        }
        expect(got).toEqual(expected(whole));
        const cutMidFrame = keep > partialStart;
        expect(decoder.buffered > 0).toBe(cutMidFrame);
        // The fds of the frame cut off are held, and come back from reset().
        expect(decoder.reset()).toEqual(cutMidFrame ? frames[whole.length]!.fds : []);
      }),
      { numRuns: RUNS },
    );
  });
});

// Bytes a hostile or broken peer might send: noise, or real frames with a
// few bytes flipped, cut short or spliced.
const hostileArb = fc.oneof(
  fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
  fc
    .tuple(framesArb, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 4 }), fc.nat())
    .map(([frames, flips, cut]) => {
      const bytes = Buffer.concat(frames.flatMap((f) => [encodeHeader(f.payload.length, f.fds.length), f.payload]));
      for (const [at, value] of flips) if (bytes.length > 0) bytes[at % bytes.length] = value;
      return bytes.subarray(0, bytes.length === 0 ? 0 : cut % (bytes.length + 1));
    }),
);

const limitsArb = fc.record({
  maxFrameSize: fc.integer({ min: 0, max: 1000 }),
  maxFds: fc.integer({ min: 0, max: 253 }),
  maxBuffered: fc.integer({ min: 0, max: 1200 }),
});

describe('hostile input', () => {
  it('never throws anything but a FramingError, never exceeds its limits, and accounts for every fd once', () => {
    fc.assert(
      fc.property(
        hostileArb,
        fc.array(fc.tuple(fc.nat(), fc.nat({ max: 3 })), { maxLength: 12 }),
        limitsArb,
        (bytes, cutSpec, limits) => {
          let biggest = 0;
          const real = Buffer.allocUnsafe;
          vi.spyOn(Buffer, 'allocUnsafe').mockImplementation((size: number) => {
            biggest = Math.max(biggest, size);
            return real(size);
          });
          let nextFd = 1000;
          const cuts = [...new Set([0, ...cutSpec.map(([c]) => c % (bytes.length + 1)), bytes.length])].sort((a, b) => a - b);
          const delivered: number[] = [];
          const returnedOnError: number[] = [];
          const passed: number[] = [];
          const decoder = new FrameDecoder((payload, fds) => {
            expect(payload.length).toBeLessThanOrEqual(limits.maxFrameSize);
            if (fds) delivered.push(...fds);
          }, limits);
          for (let i = 0; i + 1 < cuts.length; i++) {
            const count = cutSpec[i]?.[1] ?? 0;
            const fds = Array.from({ length: count }, () => nextFd++);
            passed.push(...fds);
            try {
              decoder.push(bytes.subarray(cuts[i], cuts[i + 1]), fds);
            } catch (err) {
              expect(err).toBeInstanceOf(FramingError);
              returnedOnError.push(...fds);
              break;
            }
            expect(decoder.buffered).toBeLessThanOrEqual(limits.maxBuffered);
          }
          vi.restoreAllMocks();
          expect(biggest).toBeLessThanOrEqual(Math.max(limits.maxBuffered, 0));
          const held = decoder.reset();
          const accounted = [...delivered, ...held, ...returnedOnError].sort((a, b) => a - b);
          expect(accounted).toEqual(passed);
        },
      ),
      { numRuns: RUNS * 3 },
    );
  });

  it('pushMessage on any packet fails only with a FramingError', () => {
    fc.assert(
      fc.property(hostileArb, fc.nat({ max: 3 }), limitsArb, (packet, fdCount, limits) => {
        const fds = Array.from({ length: fdCount }, (_, i) => 50 + i);
        let got: number[] | null = null;
        const decoder = new FrameDecoder((payload, f) => {
          expect(payload.length + HEADER_SIZE).toBe(packet.length);
          got = f;
        }, limits);
        try {
          decoder.pushMessage(packet, fds);
          expect(got ?? []).toEqual(fds);
        } catch (err) {
          expect(err).toBeInstanceOf(FramingError);
          expect(got).toBeNull();
        }
      }),
      { numRuns: RUNS },
    );
  });
});
