// Shared by the framing tests: frames as plain data. (The fd census is
// transport's: openFds() and addedSince() in its test helpers.)
import { FrameDecoder, type FrameLimits, encodeHeader } from '../src/index.js';

export interface TestFrame {
  payload: Buffer;
  fds: number[];
}

export interface Decoded {
  payload: Buffer;
  fds: number[] | null;
}

/** A decoder that records what it emits. */
export function recordingDecoder(limits?: FrameLimits): { decoder: FrameDecoder; frames: Decoded[] } {
  const frames: Decoded[] = [];
  const decoder = new FrameDecoder((payload, fds) => frames.push({ payload: Buffer.from(payload), fds }), limits);
  return { decoder, frames };
}

export function frameBytes(payload: Uint8Array, fdCount = 0): Buffer {
  return Buffer.concat([encodeHeader(payload.length, fdCount), payload]);
}

/** A header with every field under the test's control. */
export function rawHeader(fields: { magic?: number; version?: number; flags?: number; fds?: number; length: number }): Buffer {
  const h = Buffer.alloc(8);
  h[0] = fields.magic ?? 0xaf;
  h[1] = fields.version ?? 1;
  h[2] = fields.flags ?? 0;
  h[3] = fields.fds ?? 0;
  h.writeUInt32LE(fields.length, 4);
  return h;
}

export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}
