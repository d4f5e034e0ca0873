// RpcConnection: one established connection, symmetric. Each side can call
// the other's methods, emit events, and stream results; the server/client
// split is only who listens and who connects.
//
// The work is split by direction: MessageSender (sender.ts) puts messages
// on the channel, OutgoingCalls (outgoing.ts) tracks our calls until the
// peer answers, IncomingCalls (handling.ts) runs the peer's calls. This
// file reads frames, routes each message to one of them, and owns the
// connection's lifetime and event subscriptions.
import { EventEmitter } from 'node:events';
import { debuglog } from 'node:util';
import { type FramedChannel, FramingError } from '@afunix/framing';
import { type Credentials, type ReceivedFds, closeFd } from '@afunix/transport';
import type { TypedEmitter } from './emitter.js';
import { type Decoded, decode, prepareValue } from './codec.js';
import { MAX_DELAY, badTimeout } from './deadlines.js';
import { NO_ID, readMessage } from './envelope.js';
import { RpcCode, RpcError, invalidArgValue, lostReason, rpcError } from './errors.js';
import { type Fd, closeAll } from './fd.js';
import { count, id, list, optionalStr, str } from './fields.js';
import { IncomingCalls, MAX_ARGUMENTS } from './handling.js';
import type { Handler, Interceptor } from './incoming.js';
import { type CallOptions, OutgoingCalls } from './outgoing.js';
import { MAX_EVENT_NAME, MAX_SUBSCRIPTIONS, Msg } from './protocol.js';
import { ownerOf, setOwner } from './owner.js';
import { MessageSender } from './sender.js';
import type { RpcStream, StreamLink } from './stream.js';
import { remoteProxy } from './proxy.js';
import type { Validator } from './validation.js';

export type { CallOptions } from './outgoing.js';

const debug = debuglog('afunix');

/**
 * How connections behave: one object can serve every connection of a
 * server. What differs per connection is in ConnectionPeer.
 */
export interface ConnectionOptions {
  handlers: ReadonlyMap<string, Handler>;
  /** Bytes queued for a peer that does not read before it is cut off (default 32 MiB). */
  maxOutboundBytes?: number | undefined;
  validators?: ReadonlyMap<string, Validator> | undefined;
  exposeStack?: boolean | undefined;
  maxInFlight?: number | undefined;
  intercept?: Interceptor | undefined;
  /** Send an event only if the peer subscribed to it (servers do). */
  filterEvents?: boolean | undefined;
  onEvent?: ((name: string, args: unknown[], conn: RpcConnection) => void) | undefined;
  /** Runs once when the connection closes, before its 'close' listeners. */
  onClose?: ((conn: RpcConnection, reason: Error) => void) | undefined;
}

/** Who is on the other end: its credentials, and what its hello said. */
export interface ConnectionPeer {
  credentials: Credentials | null;
  /** Methods of the peer that stream. */
  streams: readonly string[];
  /** The largest message the peer accepts. */
  maxMessage?: number | undefined;
}

export interface ConnectionStats {
  callsOut: number;
  callsIn: number;
  inFlightOut: number;
  inFlightIn: number;
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
}

type ConnectionEvents = {
  close: (reason: Error | null) => void;
  subscribe: (names: string[]) => void;
  /** No call from the peer is being handled any more (after drain()). */
  idle: () => void;
};

/** @internal What a socket offers to keep (or not) the event loop alive: UnixSocket, net.Socket. */
export interface Refable {
  ref(): unknown;
  unref(): unknown;
}

// Shared, only ever read: replaced by a Set of its own before its first write.
const NO_NAMES: Set<string> = new Set();

/** How long close() waits for the peer to end its side, unless told. */
const CLOSE_GRACE_MS = 2_000;

function destroyChannel(channel: FramedChannel): void {
  channel.destroy();
}

export class RpcConnection extends (EventEmitter as new () => TypedEmitter<ConnectionEvents>) implements StreamLink {
  /** The peer's pid/uid/gid, or null over a transport that cannot tell. */
  readonly peer: Credentials | null;
  readonly channel: FramedChannel;
  #options: ConnectionOptions;
  #peerMaxMessage: number | undefined;
  // Made on first use, through the getters below: a server's idle
  // connection never needs them (~220 bytes).
  #madeSender: MessageSender | null = null;
  #madeOutgoing: OutgoingCalls | null = null;
  #madeIncoming: IncomingCalls | null = null;
  #peerStreams: Set<string>;
  #peerSubscriptions: Set<string> = NO_NAMES;
  #closed = false;
  #unrefd = false;
  #remote: unknown;

  /** Throws ERR_INVALID_ARG_VALUE if `channel` ever carried a connection: the first would never hear it close. */
  constructor(channel: FramedChannel, options: ConnectionOptions, peer: ConnectionPeer) {
    super();
    // EventEmitter's constructor gives each emitter a dictionary for its
    // listeners (~180 bytes), and makes one on the first on() if there is
    // none: a server's connections mostly never get a listener.
    (this as unknown as { _events: unknown })._events = undefined;
    if (ownerOf(channel) instanceof RpcConnection) {
      throw invalidArgValue('channel', 'already carries an RpcConnection');
    }
    // The channel listeners below are shared by every connection and find
    // theirs here (see owner.ts).
    setOwner(channel, this);
    this.channel = channel;
    this.peer = peer.credentials;
    this.#options = options;
    this.#peerMaxMessage = peer.maxMessage;
    this.#peerStreams = peer.streams.length > 0 ? new Set(peer.streams) : NO_NAMES;
    channel.onFrame = RpcConnection.#channelFrame;
    channel.on('error', RpcConnection.#channelFailed);
    channel.on('close', RpcConnection.#channelClosed);
    channel.on('end', RpcConnection.#channelEnded);
  }

  static #channelFrame(this: FramedChannel, payload: Buffer, fds: ReceivedFds | null): void {
    (ownerOf(this) as RpcConnection).#onFrame(payload, fds);
  }

  static #channelFailed(this: FramedChannel, err: Error): void {
    debug('connection error %s', err.message);
    // A peer that broke the framing rules is cut off with that rule's code
    // (FRAME_TOO_LARGE, TRUNCATED_FRAME, PROTOCOL_ERROR, ...); a transport
    // failure (ECONNRESET, ...) is the connection closing, with it as cause.
    // 'close' follows, and finds this teardown done.
    const conn = ownerOf(this) as RpcConnection;
    if (conn.#closed) return;
    conn.#teardown(err instanceof FramingError ? err : new RpcError(`the connection closed: ${err.message}`, { code: RpcCode.CONNECTION_CLOSED, cause: err }));
  }

  // (Each of these checks first: a connection closes once, and an error
  // made for nobody costs a stack trace, ~5 µs here, several per close.)
  static #channelClosed(this: FramedChannel): void {
    const conn = ownerOf(this) as RpcConnection;
    if (!conn.#closed) conn.#teardown(rpcError(RpcCode.CONNECTION_CLOSED, 'the connection closed'));
  }

  // The peer is done: nothing more can be answered, so end our side too.
  static #channelEnded(this: FramedChannel): void {
    const conn = ownerOf(this) as RpcConnection;
    if (!conn.#closed) conn.#teardown(rpcError(RpcCode.CONNECTION_CLOSED, 'the peer ended the connection'));
    conn.close();
  }

  get #sender(): MessageSender {
    return (this.#madeSender ??= new MessageSender(this.channel, this.#options, this, this.#peerMaxMessage));
  }

  get #outgoing(): OutgoingCalls {
    return (this.#madeOutgoing ??= new OutgoingCalls(this.#sender, this));
  }

  get #incoming(): IncomingCalls {
    return (this.#madeIncoming ??= new IncomingCalls(this, this.#sender, this.#options));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The peer's methods as a proxy (untyped here; the client and context type it). */
  get remote(): unknown {
    return (this.#remote ??= remoteProxy({ current: () => this, streams: (method) => this.#peerStreams.has(method) }));
  }

  get stats(): ConnectionStats {
    const s = this.channel.stats;
    return {
      callsOut: this.#madeOutgoing?.started ?? 0,
      callsIn: this.#madeIncoming?.received ?? 0,
      inFlightOut: this.#madeOutgoing?.size ?? 0,
      inFlightIn: this.handling,
      framesIn: s.framesIn,
      framesOut: s.framesOut,
      bytesIn: s.bytesIn,
      bytesOut: s.bytesOut,
    };
  }

  /** Calls a method of the peer. Stream methods give an RpcStream instead of a promise. */
  call(method: string, args: unknown[], options?: CallOptions): Promise<unknown> | RpcStream<unknown> {
    if (this.#peerStreams.has(method)) return this.#outgoing.stream(method, args, options);
    return this.#outgoing.call(method, args, options);
  }

  /** Calls a method whose result is a stream. */
  stream(method: string, args: unknown[], options?: CallOptions): RpcStream<unknown> {
    return this.#outgoing.stream(method, args, options);
  }

  /** Fire and forget: no answer, no error from the peer. */
  notify(method: string, args: unknown[]): void {
    this.#sender.sendMessage(Msg.NOTIFY, NO_ID, method, prepareValue(args, 'args'));
  }

  /** Sends an event, unless the peer did not subscribe to it (on a server). */
  emitEvent(name: string, args: unknown[]): boolean {
    if (this.#closed) return false;
    if (this.#options.filterEvents && !this.#peerSubscriptions.has(name)) return false;
    this.#sender.sendMessage(Msg.EVENT, NO_ID, name, prepareValue(args, 'args'));
    return true;
  }

  subscribe(names: string[]): void {
    if (names.length > 0 && !this.#closed) this.#sender.send([Msg.SUBSCRIBE, names]);
  }

  unsubscribe(names: string[]): void {
    if (names.length > 0 && !this.#closed) this.#sender.send([Msg.UNSUBSCRIBE, names]);
  }

  /**
   * Lets the process exit while this connection is idle, as
   * net.Socket#unref() does. Our calls awaiting answers (streams not yet
   * ended included) still hold it: their callers wait for them, and an
   * exit would leave those awaits unsettled. No-op over a Duplex without
   * unref().
   */
  unref(): void {
    this.#unrefd = true;
    // (Made now, on a connection that may never call: the hook must be in
    // place before its first call. A closure of its own only here: servers
    // hold thousands of connections that never unref.)
    this.#outgoing.onBusy ??= (busy) => this.#hold(busy);
    this.#hold(this.#outgoing.size > 0);
  }

  /** Undoes unref(): the connection holds its process again, as it did. */
  ref(): void {
    this.#unrefd = false;
    // (Calls need not tell us of themselves any more.)
    if (this.#madeOutgoing) this.#madeOutgoing.onBusy = null;
    this.#hold(true);
  }

  // Whether the socket keeps the event loop alive: always, unless unref'd,
  // and then while calls await answers.
  #hold(busy: boolean): void {
    const transport = this.channel.transport as Partial<Refable>;
    if (busy || !this.#unrefd) transport.ref?.();
    else transport.unref?.();
  }

  /** Whether the peer asked for this event. */
  isSubscribed(name: string): boolean {
    return this.#peerSubscriptions.has(name);
  }

  /** Number of calls from the peer still being handled here. */
  get handling(): number {
    return this.#madeIncoming?.size ?? 0;
  }

  /** Stop taking new calls (they fail with SHUTTING_DOWN); tell the peer. */
  drain(): void {
    if (this.#closed || this.#incoming.draining) return;
    this.#incoming.draining = true;
    this.#sender.trySend([Msg.GOODBYE]);
  }

  /**
   * Closes the connection: pending calls fail with CONNECTION_CLOSED at
   * once; what is queued is sent and our side ends. It closes when the peer
   * ends its side too, or `grace` ms later if it does not (default 2,000;
   * 0: at once, waiting for nothing; Infinity: for as long as the peer
   * takes). A second close() may only shorten the wait.
   */
  close(grace = CLOSE_GRACE_MS): void {
    const bad = badTimeout('grace', grace);
    if (bad) throw bad;
    if (!this.channel.closed) {
      if (grace <= 0) this.channel.destroy();
      else {
        this.channel.end();
        // (Past setTimeout's range it would fire at once: the longest it waits is MAX_DELAY, 24.8 days.)
        if (grace !== Infinity) setTimeout(destroyChannel, Math.min(grace, MAX_DELAY), this.channel).unref();
      }
    }
    if (!this.#closed) this.#teardown(rpcError(RpcCode.CONNECTION_CLOSED, 'the connection was closed locally'));
  }

  destroy(err?: Error): void {
    this.channel.destroy(err);
    if (!this.#closed) this.#teardown(err ?? rpcError(RpcCode.CONNECTION_CLOSED, 'the connection was destroyed'));
  }

  /** @internal SenderOwner: the kernel refused a message's fds (EBADF), so it was not sent; the connection goes on. */
  fdsRefused(kind: number, callId: number, err: Error): void {
    debug('a message (kind %d) was not sent: %s', kind, err.message);
    if (this.#closed) return;
    if (kind === Msg.REQUEST) return this.#outgoing.failUnsent(callId, err);
    // A notification or an event has nobody waiting to hear of it. (Answers
    // and stream items wait for their fds themselves: see IncomingCalls.)
  }

  /** @internal StreamLink: the consumer took n items. */
  grant(id: number, n: number): void {
    this.#sender.trySend([Msg.CREDIT, id, n]);
  }

  /** @internal StreamLink: the consumer stopped. */
  cancel(id: number): void {
    this.#outgoing.cancel(id);
  }

  /** Resolves once no call from the peer is being handled (or the connection closed). */
  idle(): Promise<void> {
    if (this.handling === 0 || this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.off('idle', done);
        this.off('close', done);
        resolve();
      };
      this.on('idle', done);
      this.on('close', done);
    });
  }

  #onFrame(payload: Buffer, received: ReceivedFds | null): void {
    // Closed here (close() waits for the peer to end its side): what the
    // peer still sends has nobody to run it, and no way to be answered.
    if (this.#closed) return void received?.close();
    // Kept, not taken: until someone takes an Fd made of them, the addon
    // closes them if this thread goes first (a worker terminated).
    const fds = received ? received.keep() : null;
    let kind: number;
    let callId: number;
    let name: string;
    let value: unknown;
    let wrapped: Fd[] | null;
    try {
      const m = readMessage(payload, fds, closeFd);
      if (!m) return this.#onOtherFrame(payload, fds);
      // Out of the shared record before anything else can read a message.
      ({ kind, id: callId, name, value, fds: wrapped } = m);
    } catch (err) {
      return this.#protocolError((err as Error).message);
    }
    try {
      this.#route(kind, callId, name, value, wrapped);
    } catch (err) {
      this.#failedMessage(err, wrapped);
    }
  }

  // The messages that carry a value (the ones readMessage() reads), their
  // fields checked already; the value is checked here.
  #route(kind: number, callId: number, name: string, value: unknown, fds: Fd[] | null): void {
    switch (kind) {
      case Msg.REQUEST:
        return this.#incoming.onRequest(callId, name, list(value), fds);
      case Msg.RESULT:
        return this.#outgoing.onResult(callId, value);
      case Msg.ERROR:
        return this.#outgoing.onError(callId, value);
      case Msg.STREAM_ITEM:
        return this.#outgoing.onStreamItem(callId, value);
      case Msg.NOTIFY:
        return this.#incoming.onNotify(name, list(value), fds);
      case Msg.EVENT:
        return this.#onEvent(name, list(value), fds);
    }
  }

  // Any other message, or one written in another way than ours: decoded
  // whole, its fields checked one by one.
  #onOtherFrame(payload: Buffer, fds: number[] | null): void {
    let decoded: Decoded;
    try {
      decoded = decode(payload, fds, closeFd);
    } catch (err) {
      return this.#protocolError((err as Error).message);
    }
    const m = decoded.message;
    if (!Array.isArray(m)) {
      closeAll(decoded.fds);
      return this.#protocolError('a message must be an array');
    }
    try {
      this.#dispatch(m, decoded.fds);
    } catch (err) {
      this.#failedMessage(err, decoded.fds);
    }
  }

  #failedMessage(err: unknown, fds: Fd[] | null): void {
    if (fds) for (const fd of fds) fd.close();
    if (err instanceof RpcError && err.code === RpcCode.PROTOCOL_ERROR) this.#protocolError(err.message);
    else throw err;
  }

  #dispatch(m: unknown[], fds: Fd[] | null): void {
    switch (m[0]) {
      // The messages readMessage() reads, here with their fields checked one by one.
      case Msg.REQUEST:
        return this.#route(Msg.REQUEST, id(m[1]), str(m[2]), m[3], fds);
      case Msg.NOTIFY:
        return this.#route(Msg.NOTIFY, NO_ID, str(m[1]), m[2], fds);
      case Msg.EVENT:
        return this.#route(Msg.EVENT, NO_ID, str(m[1]), m[2], fds);
      case Msg.RESULT:
      case Msg.ERROR:
      case Msg.STREAM_ITEM:
        return this.#route(m[0] as number, id(m[1]), '', m[2], fds);
    }
    // The others carry no value for an Fd to travel in: one sent with them
    // anyway is nobody's, and closed now (the peer could repeat it until
    // this process ran out of fds).
    closeAll(fds);
    switch (m[0]) {
      case Msg.STREAM_END:
        return this.#outgoing.onStreamEnd(id(m[1]));
      case Msg.CANCEL:
        // (The reason, new in [5, id, reason], is checked as any field is.)
        return this.#incoming.cancel(id(m[1]), optionalStr(m[2]));
      case Msg.CREDIT:
        return this.#incoming.credit(id(m[1]), count(m[2]));
      case Msg.SUBSCRIBE:
        return this.#onSubscribe(list(m[1]));
      case Msg.UNSUBSCRIBE:
        for (const name of list(m[1])) this.#peerSubscriptions.delete(str(name));
        return;
      case Msg.GOODBYE:
        return; // the peer finishes what it has; our new calls would fail there
      default:
        throw rpcError(RpcCode.PROTOCOL_ERROR, `unknown message kind ${String(m[0])}`);
    }
  }

  #onEvent(name: string, args: unknown[], fds: Fd[] | null): void {
    try {
      // As a notification with too many arguments: dropped (spread into
      // emit(), 300,000 of them overflowed the stack).
      if (args.length > MAX_ARGUMENTS) return debug('dropping event %s: %d arguments', name, args.length);
      this.#options.onEvent?.(name, args, this);
    } finally {
      closeAll(fds); // fds in events must be taken by a listener, synchronously
    }
  }

  #onSubscribe(names: unknown[]): void {
    if (this.#peerSubscriptions === NO_NAMES) this.#peerSubscriptions = new Set();
    for (const name of names) {
      this.#peerSubscriptions.add(eventName(name));
      if (this.#peerSubscriptions.size > MAX_SUBSCRIPTIONS) {
        throw rpcError(RpcCode.PROTOCOL_ERROR, `more than ${MAX_SUBSCRIPTIONS} event subscriptions on one connection`);
      }
    }
    this.emit('subscribe', names as string[]);
  }

  #protocolError(message: string): void {
    debug('protocol error: %s', message);
    const err = rpcError(RpcCode.PROTOCOL_ERROR, `protocol error from peer: ${message}`);
    this.channel.destroy(err);
    this.#teardown(err);
  }

  // Everything in flight ends now, exactly once: our calls fail, the peer's
  // handlers see their signal aborted, streams stop.
  #teardown(reason: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    const lost = reason instanceof RpcError && reason.code === RpcCode.CONNECTION_CLOSED
      ? reason
      : new RpcError(`the connection closed: ${reason.message}`, { code: RpcCode.CONNECTION_CLOSED, cause: reason });
    this.#madeOutgoing?.failAll(lost);
    this.#madeIncoming?.cancelAll(lostReason(lost));
    this.#options.onClose?.(this, reason);
    this.emit('close', reason);
  }
}

// A name in a SUBSCRIBE: a string of at most MAX_EVENT_NAME characters.
function eventName(v: unknown): string {
  const name = str(v);
  if (name.length > MAX_EVENT_NAME) {
    throw rpcError(RpcCode.PROTOCOL_ERROR, `an event name of ${name.length} characters (at most ${MAX_EVENT_NAME})`);
  }
  return name;
}
