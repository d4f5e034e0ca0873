export { FramingError, type FramingErrorCode } from './errors.js';
export {
  DEFAULT_MAX_FRAME_SIZE,
  FRAME_MAGIC,
  FRAME_VERSION,
  type FrameLimits,
  HEADER_SIZE,
  type ResolvedLimits,
  MAX_FDS_PER_FRAME,
  MAX_PAYLOAD_LENGTH,
  encodeHeader,
  resolveLimits,
  writeHeader,
} from './header.js';
export { FrameDecoder, type FrameHandler } from './decoder.js';
export { FramedChannel, type FrameListener, type FramedEvents, type FramedStats } from './channel.js';
/** The largest payload FramedChannel.sendCopy() copies into its slab (larger ones get a Buffer of their own). */
export { SMALL_FRAME } from './writer.js';
