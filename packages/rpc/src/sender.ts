// The writing side of a connection: a message is encoded, checked against
// what the peer accepts, and handed to the framing channel, and a peer that
// stops reading is cut off before its backlog grows without bound.
import { debuglog } from 'node:util';
import type { FramedChannel } from '@afunix/framing';
import type { SentCallback } from '@afunix/transport';
import { type Encoded, encode } from './codec.js';
import { NO_ID, encodeMessageLent } from './envelope.js';
import { RpcCode, messageTooLarge, rpcError } from './errors.js';
import { type Fd, sendsDone } from './fd.js';
import { ownSendLimit } from './limits.js';

const debug = debuglog('afunix');

const DEFAULT_MAX_OUTBOUND = 32 * 1024 * 1024;

export interface SenderOptions {
  /** Bytes queued for a peer that does not read before it is cut off (default 32 MiB). */
  maxOutboundBytes?: number | undefined;
  exposeStack?: boolean | undefined;
}

/** The connection a sender writes for. */
export interface SenderOwner {
  readonly closed: boolean;
  /** Cuts the connection off (a peer that stopped reading). */
  destroy(err: Error): void;
  /** The kernel refused the fds of a message (EBADF: one is not open): it was not sent. */
  fdsRefused(kind: number, id: number, err: Error): void;
}

export class MessageSender {
  readonly #channel: FramedChannel;
  readonly #options: SenderOptions;
  readonly #owner: SenderOwner;
  readonly #peerMaxMessage: number | undefined;

  /** `peerMaxMessage`: the largest message the peer accepts (from its hello). */
  constructor(channel: FramedChannel, options: SenderOptions, owner: SenderOwner, peerMaxMessage: number | undefined) {
    this.#channel = channel;
    this.#options = options;
    this.#owner = owner;
    this.#peerMaxMessage = peerMaxMessage;
  }

  /** Encodes and sends; throws ENCODE_ERROR or MESSAGE_TOO_LARGE. Returns false once the peer should be waited for. */
  send(message: unknown[]): boolean {
    const id = typeof message[1] === 'number' ? message[1] : NO_ID;
    return this.#sendEncoded(encode(message, this.#options.exposeStack), message[0] as number, id);
  }

  /** send() of [kind, id, name, value] (envelope.ts), without building the array. */
  sendMessage(kind: number, id: number, name: string | null, value: unknown): boolean {
    return this.#sendEncoded(encodeMessageLent(kind, id, name, value, this.#options.exposeStack === true), kind, id);
  }

  /**
   * sendMessage() for a message that nothing may follow until its fds have
   * left (a stream item): what send() returns, or, if it carries fds, a
   * promise of that, settled once they left, rejected with the kernel's
   * refusal of them.
   */
  sendAwaitingFds(kind: number, id: number, value: unknown): boolean | Promise<boolean> {
    const encoded = encodeMessageLent(kind, id, null, value, this.#options.exposeStack === true);
    if (!encoded.fds) return this.#sendEncoded(encoded, kind, id);
    return new Promise((resolve, reject) => {
      let ok: boolean | undefined;
      let left = false;
      // (The queue may send it, and call this, before #sendEncoded returns.)
      const onSent: SentCallback = (err) => {
        if (err) return reject(err);
        left = true;
        if (ok !== undefined) resolve(ok);
      };
      ok = this.#sendEncoded(encoded, kind, id, onSent);
      if (left) resolve(ok);
    });
  }

  #sendEncoded(encoded: Encoded, kind: number, id: number, onFdsSent?: SentCallback): boolean {
    // (Out of the record first: it may be encodeMessageLent()'s, reused.)
    const { bytes, length, fds, transfers, lent, start } = encoded;
    const limit = this.#peerMaxMessage;
    if (limit !== undefined && length > limit) {
      sendsDone(transfers);
      throw this.#tooLarge(length, limit);
    }
    // The message's Fds are let go once: by its onSent when it has left, or
    // below if the send threw. A send that threw after queueing it (from a
    // listener run inside send()) would otherwise let them go twice, and a
    // transfer that another queued message still carries would be closed
    // under it.
    const held = transfers ? new HeldFds(transfers) : null;
    let ok: boolean;
    try {
      ok = lent
        ? this.#channel.sendCopy(bytes as Buffer, start, start + length)
        : this.#channel.send(bytes, fds, fds ? this.#whenSent(kind, id, held, onFdsSent) : undefined);
    } catch (err) {
      held?.release();
      const code = (err as { code?: string }).code;
      if (code === 'FRAME_TOO_LARGE') throw messageTooLarge((err as Error).message, length, this.#channel.limits.maxFrameSize, 'sender');
      if (code === 'ERR_AFUNIX_UNSUPPORTED') throw rpcError('ERR_AFUNIX_UNSUPPORTED', (err as Error).message);
      throw this.#failure(err);
    }
    if (!ok) {
      try {
        this.#checkOutbound();
      } catch (err) {
        throw this.#failure(err);
      }
    }
    return ok;
  }

  // What a send that threw tells its caller: CONNECTION_CLOSED once the
  // connection is gone (a listener of its end may be what threw).
  #failure(err: unknown): unknown {
    return this.#owner.closed || this.#channel.closed ? rpcError(RpcCode.CONNECTION_CLOSED, 'the connection is closed') : err;
  }

  // Over the limit: the peer's (its hello's maxMessageSize), or, on
  // seqpacket, what our own socket can send in one packet.
  // Over our own limit too, it is ours that the caller must hear of: the
  // peer's could be raised and the message still not leave.
  #tooLarge(length: number, limit: number): Error {
    const frame = this.#channel.limits.maxFrameSize;
    if (length > frame) return messageTooLarge(`cannot send a frame of ${length} bytes: maxFrameSize is ${frame}`, length, frame, 'sender');
    const own = ownSendLimit(this.#channel);
    if (own !== undefined && own <= limit) {
      return messageTooLarge(`a message of ${length} bytes is more than this socket can send in one packet (${limit})`, length, limit, 'sender');
    }
    return messageTooLarge(`a message of ${length} bytes is more than the peer accepts (${limit})`, length, limit, 'receiver');
  }

  // A message with fds hears whether they left: transferred ones are closed
  // then, and a refusal of them (one is not open) fails this message alone,
  // through `onFdsSent` if the caller waits for it, else the owner.
  #whenSent(kind: number, id: number, held: HeldFds | null, onFdsSent: SentCallback | undefined): SentCallback {
    return (err) => {
      held?.release();
      if (onFdsSent) onFdsSent(err);
      else if (err) this.#owner.fdsRefused(kind, id, err);
    };
  }

  /** For control messages where failure only means the peer is gone. */
  trySend(message: unknown[]): void {
    if (this.#owner.closed) return;
    try {
      this.send(message);
    } catch (err) {
      debug('could not send control message: %s', (err as Error).message);
    }
  }

  /**
   * Resolves once sending may go on: at once if the channel owes no 'drain'
   * (it may have come already, while a stream item waited for its fds to
   * leave), else at the next 'drain', or when the channel closes.
   */
  drained(): Promise<void> {
    return this.#channel.drained().catch(() => {});
  }

  // Results and events do not wait for 'drain' (streams do): a peer that
  // never reads would make them pile up here. Past the cap it is cut off,
  // and only it.
  #checkOutbound(): void {
    const queued = this.#channel.transport.writableLength;
    const cap = this.#options.maxOutboundBytes ?? DEFAULT_MAX_OUTBOUND;
    if (queued <= cap) return;
    debug('peer is not reading: %d bytes queued, over the cap of %d', queued, cap);
    const err = rpcError(RpcCode.SLOW_CONSUMER, `${queued} bytes were waiting for the peer to read, over the cap of ${cap} (maxOutboundBytes)`);
    this.#owner.destroy(err);
  }
}

// The Fds one message holds open (Fd.holdForSend()), let go exactly once.
class HeldFds {
  #fds: Fd[] | null;

  constructor(fds: Fd[]) {
    this.#fds = fds;
  }

  release(): void {
    const fds = this.#fds;
    this.#fds = null;
    sendsDone(fds);
  }
}
