// How large a message may be, each way. On a stream only the frame limit
// counts; on seqpacket a message is one packet, and a packet cannot be
// larger than the sender's send buffer or the receiver's maxMessageSize.
import { type FramedChannel, HEADER_SIZE, MAX_PAYLOAD_LENGTH } from '@afunix/framing';
import { UnixSocket } from '@afunix/transport';
import { invalidArgValue, shownValue } from './errors.js';
import { MIN_MAX_MESSAGE_SIZE } from './protocol.js';

/**
 * Refuses a maxMessageSize option below the protocol's minimum at once:
 * every handshake would be refused for it (MESSAGE_SIZE_TOO_SMALL).
 */
export function checkMaxMessageSize(value: unknown): void {
  if (value === undefined || value === null) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value > MAX_PAYLOAD_LENGTH) {
    throw invalidArgValue('maxMessageSize', `must be a whole number of bytes, at most ${MAX_PAYLOAD_LENGTH} (a frame's limit); received ${shownValue(value)}`);
  }
  if (value >= MIN_MAX_MESSAGE_SIZE) return;
  throw invalidArgValue('maxMessageSize', `must be at least ${MIN_MAX_MESSAGE_SIZE} bytes (the protocol's minimum), received ${String(value)}`);
}

function packetLimits(channel: FramedChannel): { send: number; receive: number } | null {
  const t = channel.transport;
  // (A destroyed socket has no limits to ask for: the handshake on it fails
  // with CONNECTION_CLOSED, as it should, rather than here.)
  return t instanceof UnixSocket && !t.destroyed ? t.messageLimits() : null;
}

/** What this side announces in its hello: the largest payload it accepts. */
export function receiveLimit(channel: FramedChannel): number {
  const packet = packetLimits(channel);
  const frame = channel.limits.maxFrameSize;
  return packet ? Math.min(frame, packet.receive - HEADER_SIZE) : frame;
}

/** The largest payload our own socket can send (a seqpacket packet), or undefined on a stream. */
export function ownSendLimit(channel: FramedChannel): number | undefined {
  const packet = packetLimits(channel);
  return packet ? packet.send - HEADER_SIZE : undefined;
}

/** The largest payload this side may send: the peer's word, and our packet size. */
export function sendLimit(channel: FramedChannel, peerAnnounced: number | undefined): number | undefined {
  const packet = packetLimits(channel);
  const ours = packet ? packet.send - HEADER_SIZE : undefined;
  if (peerAnnounced === undefined) return ours;
  return ours === undefined ? peerAnnounced : Math.min(ours, peerAnnounced);
}
