// The 8-byte frame header (docs/PROTOCOL.md, section 1):
//   0 magic 0xAF | 1 version | 2 flags | 3 fd count | 4..7 payload length (u32 LE)
import { FramingError, invalidArg } from './errors.js';

export const HEADER_SIZE = 8;
export const FRAME_VERSION = 1;
export const FRAME_MAGIC = 0xaf;
/** The most fds one frame can declare: the kernel's SCM_MAX_FD. */
export const MAX_FDS_PER_FRAME = 253;
/** The largest payload length the header can express. */
export const MAX_PAYLOAD_LENGTH = 0xffff_ffff;

export interface FrameLimits {
  /** Largest payload accepted or sent, in bytes (default 16 MiB). */
  maxFrameSize?: number;
  /** Most fds one frame may carry (default 253, the most the format allows). */
  maxFds?: number;
  /** Most bytes held while a frame that spans reads completes (default maxFrameSize + HEADER_SIZE). */
  maxBuffered?: number;
}

/** Resolved limits are frozen: channels with the same limits share one object. */
export type ResolvedLimits = Readonly<Required<FrameLimits>>;

export const DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024;

function checkCount(name: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw invalidArg(name, `must be an integer from 0 to ${max}, got ${String(value)}`);
  }
  return value;
}

// A server's connections all ask for the same limits: handing each the one
// object last resolved keeps an idle connection two objects lighter.
let lastResolved: ResolvedLimits = Object.freeze({
  maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
  maxFds: MAX_FDS_PER_FRAME,
  maxBuffered: DEFAULT_MAX_FRAME_SIZE + HEADER_SIZE,
});
const resolved = new WeakSet<object>([lastResolved]);

export function resolveLimits(given?: FrameLimits | null): ResolvedLimits {
  // (null is no limits given, as undefined is; a number or a string is a mistake.)
  if (given !== undefined && given !== null && typeof given !== 'object') throw invalidArg('limits', `must be an object; received ${typeof given}`);
  // Resolved already (a channel's limits put back after its handshake): the
  // same object, still shared by the channels that have it.
  if (given && resolved.has(given)) return given as ResolvedLimits;
  const limits = given ?? {};
  const maxFrameSize = checkCount('maxFrameSize', limits.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE, MAX_PAYLOAD_LENGTH);
  const maxFds = checkCount('maxFds', limits.maxFds ?? MAX_FDS_PER_FRAME, MAX_FDS_PER_FRAME);
  const maxBuffered = checkCount('maxBuffered', limits.maxBuffered ?? maxFrameSize + HEADER_SIZE, Number.MAX_SAFE_INTEGER);
  const last = lastResolved;
  if (last.maxFrameSize === maxFrameSize && last.maxFds === maxFds && last.maxBuffered === maxBuffered) return last;
  lastResolved = Object.freeze({ maxFrameSize, maxFds, maxBuffered });
  resolved.add(lastResolved);
  return lastResolved;
}

/** The header for a payload of `payloadLength` bytes carrying `fdCount` fds. Pure. */
export function encodeHeader(payloadLength: number, fdCount = 0): Buffer {
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  writeHeader(header, 0, payloadLength, fdCount);
  return header;
}

/** Writes a header into `target` at `offset` (for callers that gather frames into one buffer). */
export function writeHeader(target: Uint8Array, offset: number, payloadLength: number, fdCount = 0): void {
  checkCount('payloadLength', payloadLength, MAX_PAYLOAD_LENGTH);
  checkCount('fdCount', fdCount, MAX_FDS_PER_FRAME);
  target[offset] = FRAME_MAGIC;
  target[offset + 1] = FRAME_VERSION;
  target[offset + 2] = 0;
  target[offset + 3] = fdCount;
  target[offset + 4] = payloadLength & 0xff;
  target[offset + 5] = (payloadLength >>> 8) & 0xff;
  target[offset + 6] = (payloadLength >>> 16) & 0xff;
  target[offset + 7] = payloadLength >>> 24;
}

/**
 * Rejects the first `available` bytes of a header as soon as they are
 * wrong, so that a peer that is not speaking this protocol (or a garbled
 * stream) is refused on its first byte, not after 8.
 */
export function checkHeaderPrefix(bytes: Uint8Array, offset: number, available: number): void {
  if (available > 0 && bytes[offset] !== FRAME_MAGIC) {
    throw new FramingError('PROTOCOL_ERROR', `bad frame magic 0x${hex(bytes[offset]!)} (expected 0xaf): the peer does not speak afunix framing`);
  }
  if (available > 1 && bytes[offset + 1] !== FRAME_VERSION) {
    throw new FramingError('UNSUPPORTED_VERSION', `frame version ${bytes[offset + 1]} is not supported (this side speaks version ${FRAME_VERSION})`);
  }
  if (available > 2 && bytes[offset + 2] !== 0) {
    throw new FramingError('PROTOCOL_ERROR', `frame flags 0x${hex(bytes[offset + 2]!)} set: version 1 defines none`);
  }
  if (available > 3 && bytes[offset + 3]! > MAX_FDS_PER_FRAME) {
    throw new FramingError('PROTOCOL_ERROR', `frame declares ${bytes[offset + 3]} fds; the format allows at most ${MAX_FDS_PER_FRAME}`);
  }
}

export function readPayloadLength(bytes: Uint8Array, offset: number): number {
  return (bytes[offset + 4]! | (bytes[offset + 5]! << 8) | (bytes[offset + 6]! << 16)) + bytes[offset + 7]! * 0x100_0000;
}

/**
 * Validates a complete header against the format and `limits`; returns the
 * payload length. The fd count is `bytes[offset + 3]` once this returns.
 */
export function checkHeader(bytes: Uint8Array, offset: number, limits: ResolvedLimits): number {
  checkHeaderPrefix(bytes, offset, HEADER_SIZE);
  const length = readPayloadLength(bytes, offset);
  if (length > limits.maxFrameSize) {
    throw new FramingError('FRAME_TOO_LARGE', `frame of ${length} bytes exceeds maxFrameSize (${limits.maxFrameSize})`);
  }
  const fdCount = bytes[offset + 3]!;
  if (fdCount > limits.maxFds) {
    throw new FramingError('TOO_MANY_FDS', `frame declares ${fdCount} fds; maxFds is ${limits.maxFds}`);
  }
  return length;
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, '0');
}
