// The writing side of a connection: a message is encoded, checked against
// what the peer accepts, and handed to the framing channel, and a peer that
// stops reading is cut off before its backlog grows without bound.
import { debuglog } from 'node:util';
import type { FramedChannel } from '@afunix/framing';
import { type Encoded, encode } from './codec.js';
import { encodeMessage } from './envelope.js';
import { RpcCode, rpcError } from './errors.js';
import { closeAll } from './fd.js';

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
    return this.#sendEncoded(encode(message, this.#options.exposeStack));
  }

  /** send() of [kind, id, name, value] (envelope.ts), without building the array. */
  sendMessage(kind: number, id: number, name: string | null, value: unknown): boolean {
    return this.#sendEncoded(encodeMessage(kind, id, name, value, this.#options.exposeStack));
  }

  #sendEncoded(encoded: Encoded): boolean {
    const { bytes, length, fds, transfers } = encoded;
    const release = transfers ? () => closeAll(transfers) : undefined;
    const limit = this.#peerMaxMessage;
    if (limit !== undefined && length > limit) {
      release?.();
      throw rpcError(RpcCode.MESSAGE_TOO_LARGE, `a message of ${length} bytes is more than the peer accepts (${limit})`);
    }
    try {
      const ok = this.#channel.send(bytes, fds, release);
      if (!ok) this.#checkOutbound();
      return ok;
    } catch (err) {
      release?.();
      const code = (err as { code?: string }).code;
      if (code === 'FRAME_TOO_LARGE') throw rpcError(RpcCode.MESSAGE_TOO_LARGE, (err as Error).message);
      if (code === 'ERR_AFUNIX_UNSUPPORTED') throw rpcError('ERR_AFUNIX_UNSUPPORTED', 'this transport cannot carry file descriptors');
      if (this.#owner.closed || this.#channel.closed) throw rpcError(RpcCode.CONNECTION_CLOSED, 'the connection is closed');
      throw err;
    }
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

  /** Resolves once the channel drained (or closed). */
  drained(): Promise<void> {
    const channel = this.#channel;
    return new Promise((resolve) => {
      const done = () => {
        channel.off('drain', done);
        channel.off('close', done);
        resolve();
      };
      channel.on('drain', done);
      channel.on('close', done);
    });
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
