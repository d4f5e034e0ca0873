// Message kinds and protocol constants. Every frame payload is one msgpack
// array whose first element is the kind; docs/PROTOCOL.md defines each.

import { DEFAULT_MAX_FRAME_SIZE } from '@afunix/framing';

export const PROTOCOL_VERSION = 1;

export const Msg = {
  /** [0, hello]: first message each way; see Hello. */
  HELLO: 0,
  /** [1, id, method, args] */
  REQUEST: 1,
  /** [2, method, args]: a call that wants no answer. */
  NOTIFY: 2,
  /** [3, id, value] */
  RESULT: 3,
  /** [4, id, error] */
  ERROR: 4,
  /** [5, id]: the caller gave up on call id. */
  CANCEL: 5,
  /** [6, name, args] */
  EVENT: 6,
  /** [7, names]: send me these events. */
  SUBSCRIBE: 7,
  /** [8, names] */
  UNSUBSCRIBE: 8,
  /** [9, id, value]: one item of a streamed result. */
  STREAM_ITEM: 9,
  /** [10, id]: the stream ended normally. */
  STREAM_END: 10,
  /** [11, id, n]: the consumer took n more items; the producer may send n more. */
  CREDIT: 11,
  /** [12]: the sender is shutting down and takes no new calls. */
  GOODBYE: 12,
} as const;

/**
 * The smallest maxMessageSize a peer may announce in its hello: below it
 * the handshake is refused. An error answer is bounded (handling.ts cuts
 * the last resort to fit), so every call can always be answered.
 */
export const MIN_MAX_MESSAGE_SIZE = 4096;

/** The maxMessageSize a side announces unless told otherwise (16 MiB). */
export const DEFAULT_MAX_MESSAGE_SIZE = DEFAULT_MAX_FRAME_SIZE;

/**
 * Event names one connection may subscribe to. The peer chooses the names,
 * so without a bound its subscriptions would grow with every byte it sends
 * (2 000 000 names took a server from 55 to 213 MiB): past it, a
 * SUBSCRIBE is a PROTOCOL_ERROR.
 */
export const MAX_SUBSCRIPTIONS = 4096;

/**
 * The longest event name a peer may subscribe to. The count above bounds
 * the names, not their size: each could be as long as a message (150 names
 * of 1 MiB took a server from 56 to 245 MiB). Event names are identifiers,
 * like method names, and the envelope writes names up to 246 characters
 * itself (envelope.ts); 256 leaves a connection's names at most ~1 MiB.
 */
export const MAX_EVENT_NAME = 256;

/** Items a producer may send before the first CREDIT. */
export const STREAM_WINDOW = 32;

/** The handshake record: msgpack map, first frame in each direction. */
export interface Hello {
  protocol: number;
  /** The service this side offers (server) or expects (client). */
  service?: string;
  version?: string;
  /** Methods of this side that return streams. */
  streams?: string[];
  /** The largest message this side accepts; the peer refuses to send more. */
  maxMessageSize?: number;
  /** false: this side cannot receive fds (no SCM_RIGHTS on its transport); the peer sends it none. */
  fds?: boolean;
  /** Set by a server that refuses the client; the connection then closes. */
  error?: unknown;
}
