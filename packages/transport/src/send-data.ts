// What send() hands over, made ready for the write queue: its data as
// pieces (checked), and, for a send() that goes through the Writable, a
// carrier chunk with the fds attached.
import { type AfunixError, afunixError, invalidArg } from './errors.js';

/**
 * Called once the kernel has a send()'s first byte and its fds, or never
 * will: with an error if it refused the fds (EBADF: one is not open), and
 * nothing of that send() left; with none if they left, or the socket was
 * destroyed first.
 */
export type SentCallback = (err?: AfunixError) => void;

// The fds that travel with a chunk given to send(), and who hears of them.
// Keyed by a fresh view made in send(), so a user's Buffer is never tagged.
export interface Attachment {
  fds: number[] | null;
  onSent: SentCallback | null;
}
const attachments = new WeakMap<object, Attachment>();

// The most pieces one sendmsg takes (IOV_MAX is 1024 on Linux and macOS),
// with room for the queue to gather a few more writes after them.
export const MAX_IOV = 1024;
const MAX_SEND_PIECES = MAX_IOV - 16;

/** The fds and pieces attached to a chunk by prepareSend(), if any. */
export function attachmentOf(chunk: object): Attachment | undefined {
  return attachments.get(chunk);
}

/** send()'s data as pieces of the caller's bytes (none empty) and their size; refuses what cannot be sent. */
export function sendPieces(type: 'stream' | 'seqpacket', data: Uint8Array | readonly Uint8Array[], fds: number[] | null): { pieces: Uint8Array[]; size: number } {
  let pieces: Uint8Array[];
  let size = 0;
  if (Array.isArray(data)) {
    pieces = [];
    for (let i = 0; i < data.length; i++) {
      const piece = checkedPiece(data[i]);
      if (piece.byteLength === 0) continue;
      pieces.push(piece);
      size += piece.byteLength;
    }
  } else {
    size = checkedPiece(data).byteLength;
    pieces = size > 0 ? [data as Uint8Array] : [];
  }
  if (size === 0 && (type === 'stream' || !fds)) {
    // A stream cannot carry fds without a byte; an empty seqpacket message
    // would read as end-of-stream on the other side.
    throw afunixError('ERR_AFUNIX_EMPTY', `${type} sockets cannot send an empty message${fds ? ' (fds need at least one byte)' : ''}`);
  }
  // (A seqpacket message of fds alone still needs a buffer to send.)
  if (pieces.length === 0) pieces.push(Buffer.alloc(0));
  // More than a sendmsg takes: one copy, rather than a send the kernel
  // refuses (EINVAL) or a seqpacket message cut in two.
  if (pieces.length > MAX_SEND_PIECES) pieces = [Buffer.concat(pieces, size)];
  return { pieces, size };
}

function checkedPiece(piece: unknown): Uint8Array {
  if (piece instanceof Uint8Array) return piece;
  throw invalidArg('data', 'must be a Uint8Array (a Buffer) or an array of them');
}

/**
 * send()'s data as writes to the Writable: the first carries the fds (on
 * seqpacket, or with fds, it is the whole send); `sent` is `onSent`,
 * callable once.
 */
export function prepareSend(
  type: 'stream' | 'seqpacket',
  data: Uint8Array | readonly Uint8Array[],
  fds: number[] | null,
  onSent: SentCallback | undefined,
): { carrier: Buffer; others: Uint8Array[]; sent: SentCallback | null } {
  // For a send() that must wait behind writes held in the Writable: it
  // goes through the Writable too. On a stream each piece is its own write
  // (the queue gathers them into one sendmsg, no copy). A seqpacket
  // message must stay one chunk, and so must a send() with fds (a refusal
  // of its fds takes back all of it, see WriteQueue): its pieces are
  // joined, a copy on this path only, so that the Writable counts every
  // byte of it.
  const { pieces, size } = sendPieces(type, data, fds);
  const whole = pieces.length > 1 && (type === 'seqpacket' || fds !== null);
  const first = whole ? Buffer.concat(pieces, size) : pieces[0]!;
  // A fresh view to hang the attachment on, so a caller's Buffer is never tagged.
  const carrier = Buffer.from(first.buffer, first.byteOffset, first.byteLength);
  const sent = onSent ? once(onSent) : null;
  attachments.set(carrier, { fds, onSent: sent });
  return { carrier, others: whole ? [] : pieces.slice(1), sent };
}

function once(fn: SentCallback): SentCallback {
  let called = false;
  return (err) => {
    if (called) return;
    called = true;
    fn(err);
  };
}
