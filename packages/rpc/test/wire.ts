// A raw peer on the byte level, for tests that break the protocol on purpose:
// it sends whatever bytes it is given and collects the frames it gets back.
import { closeSync } from 'node:fs';
import { type FramedChannel, HEADER_SIZE, encodeHeader } from '@afunix/framing';
import { type ReceivedFds, type UnixSocket, connect } from '@afunix/transport';
import { decode, encode, encodeToBuffer } from '../src/codec.js';
import { releaseFds } from '../src/fd.js';
import { Msg, PROTOCOL_VERSION } from '../src/protocol.js';

/** One frame around an arbitrary payload. */
export function frame(payload: Uint8Array): Buffer {
  return Buffer.concat([encodeHeader(payload.length), payload]);
}

/** One frame holding an encoded message, e.g. [Msg.REQUEST, 1, 'add', [1, 2]]. */
export function messageFrame(message: unknown[]): Buffer {
  return frame(encodeToBuffer(message));
}

export const helloFrame = (hello: object = { protocol: PROTOCOL_VERSION, streams: [] }): Buffer => messageFrame([Msg.HELLO, hello]);

export interface RawPeer {
  socket: UnixSocket;
  /** Messages received so far, decoded. */
  received: unknown[][];
  /** Resolves once the peer has ended or closed the connection (how, for messages). */
  closed: Promise<string>;
  /** Resolves with the next decoded message. */
  nextMessage(): Promise<unknown[]>;
  send(bytes: Uint8Array): void;
  destroy(): void;
}

export async function rawPeer(address: string): Promise<RawPeer> {
  const socket = await connect(address);
  const received: unknown[][] = [];
  const waiters: Array<(m: unknown[]) => void> = [];
  let buffered = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= HEADER_SIZE) {
      const length = buffered.readUInt32LE(4);
      if (buffered.length < HEADER_SIZE + length) break;
      const payload = buffered.subarray(HEADER_SIZE, HEADER_SIZE + length);
      buffered = buffered.subarray(HEADER_SIZE + length);
      const message = decode(payload, null, () => {}).message as unknown[];
      const waiter = waiters.shift();
      if (waiter) waiter(message);
      else received.push(message);
    }
  });
  socket.on('error', () => {}); // a write after the peer hung up: seen through `closed`
  const closed = new Promise<string>((resolve) => {
    socket.once('end', () => resolve('end'));
    socket.once('error', (err: Error & { code?: string }) => resolve(`error ${err.code}`));
    socket.once('close', () => resolve('close'));
  });
  return {
    socket,
    received,
    closed,
    nextMessage: () =>
      new Promise((resolve, reject) => {
        const m = received.shift();
        if (m) return resolve(m);
        waiters.push(resolve);
        void closed.then((how) => reject(new Error(`the connection closed (${how}) before the next message`)));
      }),
    send: (bytes) => void socket.write(bytes),
    destroy: () => socket.destroy(),
  };
}

export interface FramedPeer {
  channel: FramedChannel;
  /** The server's hello. */
  hello: unknown[];
  /** Resolves with the next decoded message (its fds, if any, closed). */
  nextMessage(): Promise<unknown[]>;
  /** Sends a REQUEST (or any message) and resolves with the next message. */
  call(message: unknown[]): Promise<unknown[]>;
}

/**
 * A peer that speaks framing but writes its messages by hand, fds
 * included: it sends a hello and waits for the server's.
 */
export async function framedPeer(channel: FramedChannel, hello: object = { protocol: PROTOCOL_VERSION, streams: [] }): Promise<FramedPeer> {
  const received: unknown[][] = [];
  const waiters: Array<(m: unknown[]) => void> = [];
  channel.on('error', () => {}); // the tests look at what arrives, or does not
  channel.on('frame', (payload: Buffer, fds: ReceivedFds | null) => {
    const message = decode(payload, fds ? fds.take() : null, closeQuietly).message as unknown[];
    releaseFds(message);
    const waiter = waiters.shift();
    if (waiter) waiter(message);
    else received.push(message);
  });
  const nextMessage = () =>
    new Promise<unknown[]>((resolve) => {
      const m = received.shift();
      if (m) resolve(m);
      else waiters.push(resolve);
    });
  channel.send(encodeToBuffer([Msg.HELLO, hello]));
  const serverHello = await nextMessage();
  return {
    channel,
    hello: serverHello,
    nextMessage,
    call(message) {
      channel.send(encode(message).bytes);
      return nextMessage();
    },
  };
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // gone already
  }
}
