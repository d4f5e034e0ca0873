// Putting frames on the wire: gathered writes, never a copy of a large
// payload just to put a header in front of it.
import type { Duplex } from 'node:stream';
import type { FdLike } from '@afunix/transport';
import { HEADER_SIZE, encodeHeader, writeHeader } from './header.js';

/** What a native socket (or the transport's net fallback) offers for sending. */
export interface GatheringSocket extends Duplex {
  send(data: Uint8Array | readonly Uint8Array[], fds?: readonly FdLike[] | null, onSent?: () => void): boolean;
}

export type FrameWriter = (
  pieces: readonly Uint8Array[],
  length: number,
  fds: readonly FdLike[] | null,
  onSent?: () => void,
) => boolean;

// Below this size, copying header and payload into one buffer costs less
// than a second write() (one more queue entry, one more iovec); measured
// with bench/suites/framing.mjs.
export const SMALL_FRAME = 1024;

/** Header and payload in one new buffer: for small frames only. */
export function joinFrame(pieces: readonly Uint8Array[], length: number, fdCount: number): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_SIZE + length);
  writeHeader(frame, 0, length, fdCount);
  let at = HEADER_SIZE;
  for (const piece of pieces) {
    frame.set(piece, at);
    at += piece.byteLength;
  }
  return frame;
}

/**
 * Frames through the socket's gathering send(): the header and the
 * payload's pieces leave in one sendmsg (on seqpacket, as one packet), fds
 * attached to the header's first byte. The socket coalesces the frames
 * written in one tick into one sendmsg.
 */
export function gatheringWriter(socket: GatheringSocket): FrameWriter {
  return (pieces, length, fds, onSent) => {
    const fdCount = fds ? fds.length : 0;
    if (length <= SMALL_FRAME && fdCount === 0) return socket.write(joinFrame(pieces, length, 0));
    return socket.send([encodeHeader(length, fdCount), ...pieces], fds, onSent);
  };
}

/**
 * Frames over any Duplex: corked for the rest of the tick, so the frames
 * written in one tick reach the stream's _writev together (one writev for
 * a net.Socket).
 */
export function duplexWriter(stream: Duplex): FrameWriter {
  let corked = false;
  const uncork = (): void => {
    corked = false;
    stream.uncork();
  };
  return (pieces, length) => {
    if (!corked) {
      corked = true;
      stream.cork();
      process.nextTick(uncork);
    }
    if (length <= SMALL_FRAME) return stream.write(joinFrame(pieces, length, 0));
    let ok = stream.write(encodeHeader(length, 0));
    for (const piece of pieces) if (piece.byteLength > 0) ok = stream.write(piece);
    return ok;
  };
}
