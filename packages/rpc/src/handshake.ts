// The first frame each way is a HELLO: protocol version and service name are
// checked before any call, so a mismatch is a clear error on both sides.
import { type FramedChannel, FramingError, HEADER_SIZE, type ResolvedLimits, resolveLimits } from '@afunix/framing';
import type { ReceivedFds } from '@afunix/transport';
import { decode, encode } from './codec.js';
import { RpcCode, RpcError, rpcError } from './errors.js';
import { Deadlines, Timed } from './deadlines.js';
import { ownerOf, setOwner } from './owner.js';
import { receiveLimit } from './limits.js';
import { type Hello, MIN_MAX_MESSAGE_SIZE, Msg, PROTOCOL_VERSION } from './protocol.js';

const DEFAULT_TIMEOUT = 10_000;

// A hello is decoded before anything is known about the peer, and decoding
// costs CPU per byte (an 8 MiB hello of Sets held a server's event loop for
// 8.5 s). Hellos are a few hundred bytes: past this one is refused undecoded.
const MAX_HELLO_BYTES = 256 * 1024;

// The limits a channel reads the hello under (and a refused peer's frames):
// refused at its header, a hello larger than that is never buffered (each
// connection that never said hello could otherwise hold up to
// maxMessageSize, 16 MiB, for the whole handshake timeout: 10 such took a
// server from 61 to 234 MiB), nor one that says it carries fds (a hello
// carries none: 4 such headers held ~1000 of a server's fds).
function helloLimits(limits: ResolvedLimits): ResolvedLimits {
  const maxFrameSize = Math.min(limits.maxFrameSize, MAX_HELLO_BYTES);
  return resolveLimits({ maxFrameSize, maxFds: 0, maxBuffered: Math.min(limits.maxBuffered, maxFrameSize + HEADER_SIZE) });
}

function readHello(payload: Buffer, fds: ReceivedFds | null): Hello {
  fds?.close(); // a hello carries no fds
  if (payload.length > MAX_HELLO_BYTES) {
    throw rpcError(RpcCode.PROTOCOL_ERROR, `a hello of ${payload.length} bytes; at most ${MAX_HELLO_BYTES} are read before the handshake`);
  }
  const { message } = decode(payload, null, noClose);
  if (!Array.isArray(message) || message[0] !== Msg.HELLO || typeof message[1] !== 'object' || message[1] === null) {
    throw rpcError(RpcCode.PROTOCOL_ERROR, 'the peer did not start with an afunix hello');
  }
  const hello = message[1] as Hello;
  if (typeof hello.protocol !== 'number') throw rpcError(RpcCode.PROTOCOL_ERROR, 'the hello has no protocol version');
  // The fields used below must have their types: a BigInt service name made
  // the mismatch message (JSON.stringify) throw after the handshake timer
  // was cleared, and the connection then hung with neither side told.
  checkString(hello, 'service');
  checkString(hello, 'version');
  checkStreams(hello);
  if (hello.fds !== undefined && typeof hello.fds !== 'boolean') throw rpcError(RpcCode.PROTOCOL_ERROR, "the hello's fds is not a boolean");
  const max = hello.maxMessageSize;
  if (max !== undefined && (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 0)) {
    throw rpcError(RpcCode.PROTOCOL_ERROR, "the hello's maxMessageSize is not a non-negative integer");
  }
  return hello;
}

function checkString(hello: Hello, key: 'service' | 'version'): void {
  if (hello[key] !== undefined && typeof hello[key] !== 'string') throw rpcError(RpcCode.PROTOCOL_ERROR, `the hello's ${key} is not a string`);
}

// Dropping the odd entries instead would leave the caller expecting a plain
// value from a method that streams: its calls would fail one by one later,
// far from the cause.
function checkStreams(hello: Hello): void {
  const { streams } = hello;
  if (streams === undefined) return;
  if (!Array.isArray(streams) || !streams.every((name) => typeof name === 'string')) {
    throw rpcError(RpcCode.PROTOCOL_ERROR, "the hello's streams is not an array of strings");
  }
}

export function sendHello(channel: FramedChannel, hello: Hello): void {
  channel.send(encode([Msg.HELLO, hello]).bytes);
}

function encodeHello(hello: Hello): Buffer {
  const { bytes } = encode([Msg.HELLO, hello]);
  // (A copy: msgpackr's output is a view of its shared write buffer.)
  return Array.isArray(bytes) ? Buffer.concat(bytes) : Buffer.from(bytes);
}

// A side that cannot receive fds says so (fds: false), and the other then
// fails such sends at home: a frame with fds it cannot deliver would reach
// the peer as a broken one, and cost the whole connection.
function heedFds(theirs: Hello, channel: FramedChannel): void {
  if (theirs.fds === false) channel.refuseFdsForPeer();
}

function withFdsSaid(hello: Hello, channel: FramedChannel): Hello {
  if (!channel.fdPassing) hello.fds = false;
  return hello;
}

function streamsOf(hello: Hello): string[] {
  return hello.streams ?? []; // checked by readHello()
}

/**
 * How a handshake ends, told the channel too: one pair of functions can
 * serve every connection of a server, where closures for each would be
 * garbage made per connection.
 */
export type HelloAccepted = (hello: Hello, channel: FramedChannel) => void;
export type HandshakeFailed = (err: Error, channel: FramedChannel) => void;

function ignoreError(): void {
  // The channel's owner reports its errors; this only keeps one from being thrown.
}

function noClose(): void {
  // A hello carries no fds: decode() finds none to close.
}

/**
 * Waits for the first frame and hands it to accepted() synchronously, inside
 * the frame callback, so that the connection built there sees every frame
 * that follows in the same read. A subclass for each side says what a hello
 * leads to (a subclass rather than a callback: no closure per connection).
 */
abstract class HelloWait extends Timed {
  readonly channel: FramedChannel;
  protected readonly fail: HandshakeFailed;
  readonly #timeout: number;
  // The channel's own limits, back in place once the hello is in.
  readonly #limits: ResolvedLimits;
  #done = false;
  static readonly #deadlines = new Deadlines<HelloWait>((wait, ms) =>
    wait.#finish(rpcError(RpcCode.HANDSHAKE_TIMEOUT, `no hello within ${ms} ms`)),
  );

  constructor(channel: FramedChannel, timeout: number, fail: HandshakeFailed) {
    super();
    this.channel = channel;
    this.fail = fail;
    this.#timeout = Number(timeout); // as setTimeout would take it
    this.#limits = channel.limits;
    channel.setLimits(helloLimits(this.#limits));
    setOwner(channel, this);
    // A channel error (bytes that are not afunix framing, a reset) fails the
    // handshake with its reason. An 'error' listener stays afterwards: a
    // channel destroyed with an error emits it, and an 'error' event nobody
    // listens to is thrown, which would take the whole process down.
    channel.on('error', HelloWait.#failed);
    channel.on('close', HelloWait.#closed);
    channel.on('end', HelloWait.#ended);
    channel.onFrame = HelloWait.#frame;
    HelloWait.#deadlines.add(this, this.#timeout);
  }

  // The channel's HelloWait while its handshake runs (the listeners below
  // are shared by every channel and find it through owner.ts).
  static #of(channel: FramedChannel): HelloWait | undefined {
    const owner = ownerOf(channel);
    return owner instanceof HelloWait && !owner.#done ? owner : undefined;
  }

  static #frame(this: FramedChannel, payload: Buffer, fds: ReceivedFds | null): void {
    this.onFrame = null;
    const wait = HelloWait.#of(this);
    if (!wait) return fds?.close();
    this.setLimits(wait.#limits); // (before the frames that came with the hello)
    let hello: Hello;
    try {
      hello = readHello(payload, fds);
    } catch (err) {
      return wait.#finish(err as Error);
    }
    wait.#finish(null, hello, payload);
  }

  static #failed(this: FramedChannel, err: Error): void {
    const wait = HelloWait.#of(this);
    if (wait) wait.#finish(handshakeError(err));
  }

  static #closed(this: FramedChannel): void {
    const wait = HelloWait.#of(this);
    if (wait) wait.#finish(rpcError(RpcCode.CONNECTION_CLOSED, 'the connection closed during the handshake'));
  }

  // A peer that half-closes without a hello will never send one: no need to
  // hold its connection until the timeout.
  static #ended(this: FramedChannel): void {
    const wait = HelloWait.#of(this);
    if (wait) wait.#finish(rpcError(RpcCode.CONNECTION_CLOSED, 'the peer ended the connection without a hello'));
  }

  /** The handshakes still waiting for a hello, of every server and client. */
  static pending(): HelloWait[] {
    return HelloWait.#deadlines.items();
  }

  // No more waiting: the deadline goes, and so do the listeners (but for
  // one on 'error', see the constructor). Nothing is reported after this.
  protected stopWaiting(): void {
    const channel = this.channel;
    this.#done = true;
    HelloWait.#deadlines.delete(this);
    channel.on('error', ignoreError);
    channel.off('error', HelloWait.#failed);
    channel.off('close', HelloWait.#closed);
    channel.off('end', HelloWait.#ended);
  }

  #finish(err: Error | null, hello?: Hello, payload?: Buffer): void {
    if (this.#done) return;
    const channel = this.channel;
    this.stopWaiting();
    if (err) {
      channel.destroy(err);
      this.fail(err, channel);
      return;
    }
    try {
      this.accepted(hello!, payload!);
    } finally {
      // The connection made in accepted() listens for errors itself: a second
      // listener would make the channel keep a listener array (~50 bytes).
      if (channel.listenerCount('error') > 1) channel.off('error', ignoreError);
    }
  }

  /** `payload`: the hello's bytes, valid during the call. */
  protected abstract accepted(hello: Hello, payload: Buffer): void;
}

function handshakeError(err: Error): RpcError {
  if (err instanceof RpcError) return err;
  // (With the framing rule's code, as after the handshake: FRAME_TOO_LARGE,
  // TRUNCATED_FRAME, UNSUPPORTED_VERSION, PROTOCOL_ERROR...)
  if (err instanceof FramingError) {
    return new RpcError(`protocol error during the handshake: ${err.message}`, { code: err.code, cause: err });
  }
  return new RpcError(`the connection failed during the handshake: ${err.message}`, { code: RpcCode.CONNECTION_CLOSED, cause: err });
}

/** What a server says in every hello: the same for all its connections. */
export interface ServerHello {
  service: string;
  version?: string | undefined;
  streams: string[];
  timeout?: number | undefined;
}

/**
 * Server side: read the client's hello, answer with ours, or with
 * `refusal` (e.g. ACCESS_DENIED, decided before the hello is read).
 */
export function serverHandshake(
  channel: FramedChannel,
  ours: ServerHello,
  refusal: RpcError | null,
  ready: HelloAccepted,
  fail: HandshakeFailed,
): void {
  const maxMessageSize = receiveLimit(channel);
  if (refusal) return refuseAtOnce(channel, serverReply(ours, maxMessageSize, refusal), refusal, fail);
  new ServerHelloWait(channel, ours, maxMessageSize, ready, fail);
}

/**
 * Refuses, with `refusal`, every client whose hello the server that says
 * `ours` still awaits: it gets the answer it would get had it connected
 * now (a server that shuts down), and its hello is never read. Each is
 * reported once, through the `fail` its handshake was given. Returns their
 * channels, which close once the peer has the answer, or after a grace period.
 */
export function refusePending(ours: ServerHello, refusal: RpcError): FramedChannel[] {
  const refused: FramedChannel[] = [];
  for (const wait of HelloWait.pending()) {
    if (!(wait instanceof ServerHelloWait) || !wait.serves(ours)) continue;
    refused.push(wait.channel);
    try {
      wait.refuse(refusal);
    } catch {
      // Its channel failed under the refusal (already ended): it goes, and
      // the others are refused all the same.
      wait.channel.destroy();
    }
  }
  return refused;
}

class ServerHelloWait extends HelloWait {
  readonly #ours: ServerHello;
  readonly #maxMessageSize: number;
  readonly #ready: HelloAccepted;

  constructor(channel: FramedChannel, ours: ServerHello, maxMessageSize: number, ready: HelloAccepted, fail: HandshakeFailed) {
    super(channel, ours.timeout ?? DEFAULT_TIMEOUT, fail);
    this.#ours = ours;
    this.#maxMessageSize = maxMessageSize;
    this.#ready = ready;
  }

  /** Whether this waits for a client of the server that says `ours`. */
  serves(ours: ServerHello): boolean {
    return this.#ours === ours;
  }

  /** Answers with `refusal` now, as if the client had connected now; reported through `fail`, once. */
  refuse(refusal: RpcError): void {
    this.stopWaiting();
    refuseAtOnce(this.channel, serverReply(this.#ours, this.#maxMessageSize, refusal), refusal, this.fail);
  }

  protected accepted(hello: Hello): void {
    const { channel } = this;
    const mismatched = mismatch(hello, this.#ours.service);
    if (mismatched) {
      // Like a refusal: the peer has the reason, and a grace period to go.
      closeAfterGrace(channel);
      try {
        sendHello(channel, serverReply(this.#ours, this.#maxMessageSize, mismatched));
      } finally {
        channel.end();
        this.fail(mismatched, channel);
      }
      return;
    }
    channel.send(channel.fdPassing ? acceptingHello(this.#ours, this.#maxMessageSize) : encodeHello(withFdsSaid(serverReply(this.#ours, this.#maxMessageSize), channel)));
    hello.streams = streamsOf(hello);
    heedFds(hello, channel);
    this.#ready(hello, channel);
  }
}

function serverReply(ours: ServerHello, maxMessageSize: number, error?: RpcError): Hello {
  const reply: Hello = { protocol: PROTOCOL_VERSION, service: ours.service, streams: ours.streams, maxMessageSize };
  if (ours.version !== undefined) reply.version = ours.version;
  if (error) reply.error = error;
  return reply;
}

// The hello a server answers the clients it accepts with, encoded once for
// the size limit last used: the sockets of one listener share it. (Encoding
// it for each connection was ~0.4 KB of garbage and a few µs there.) A copy
// is kept: msgpackr's output is a view of its whole, shared write buffer.
const accepting = new WeakMap<ServerHello, { maxMessageSize: number; bytes: Buffer }>();

function acceptingHello(ours: ServerHello, maxMessageSize: number): Buffer {
  const cached = accepting.get(ours);
  if (cached && cached.maxMessageSize === maxMessageSize) return cached.bytes;
  const bytes = encodeHello(serverReply(ours, maxMessageSize));
  accepting.set(ours, { maxMessageSize, bytes });
  return bytes;
}

/** How long a refused peer may keep its connection open after the refusal. */
const REFUSED_GRACE_MS = 2_000;

// A peer refused on its credentials alone (or while the server shuts down)
// gets the refusal at once. Its hello is never read, let alone decoded, so
// an unauthorised peer costs no more than the bytes it sends, skipped; the
// connection closes when the peer closes it, or after a grace period.
function refuseAtOnce(channel: FramedChannel, reply: Hello, refusal: RpcError, fail: HandshakeFailed): void {
  reply.error = refusal;
  channel.on('error', () => {}); // whatever the peer does now, the refusal stands
  channel.setLimits(helloLimits(channel.limits)); // (before it is read at all)
  channel.onFrame = (_payload, fds) => fds?.close();
  closeAfterGrace(channel);
  try {
    sendHello(channel, reply);
  } finally {
    channel.end();
    fail(refusal, channel);
  }
}

// A refused peer that never closes its end is cut off (refusals are rare:
// a timer each is no cost).
function closeAfterGrace(channel: FramedChannel): void {
  const timer = setTimeout(() => channel.destroy(), REFUSED_GRACE_MS);
  timer.unref();
  channel.once('close', () => clearTimeout(timer));
}

function mismatch(hello: Hello, service: string): RpcError | null {
  if (hello.protocol !== PROTOCOL_VERSION) {
    return rpcError(RpcCode.PROTOCOL_MISMATCH, `protocol version ${hello.protocol} is not supported (this server speaks ${PROTOCOL_VERSION})`);
  }
  if (hello.service !== undefined && hello.service !== service) {
    return rpcError(RpcCode.SERVICE_MISMATCH, `this is ${JSON.stringify(service)}, not ${JSON.stringify(hello.service)}`);
  }
  return tooSmall(hello.maxMessageSize);
}

// A peer that accepts less than the minimum could be sent no answer at all,
// not even the error saying its answer was too large: refused up front.
function tooSmall(maxMessageSize: number | undefined): RpcError | null {
  if (maxMessageSize === undefined || maxMessageSize >= MIN_MAX_MESSAGE_SIZE) return null;
  return rpcError(
    RpcCode.MESSAGE_SIZE_TOO_SMALL,
    `a maxMessageSize of ${maxMessageSize} bytes is below the protocol's minimum of ${MIN_MAX_MESSAGE_SIZE}`,
  );
}

export interface ClientHello {
  service?: string | undefined;
  streams: string[];
  maxMessageSize: number;
  timeout?: number | undefined;
}

/** Client side: send our hello, wait for the server's. */
export function clientHandshake(channel: FramedChannel, ours: ClientHello, ready: HelloAccepted, fail: HandshakeFailed): void {
  const hello: Hello = { protocol: PROTOCOL_VERSION, streams: ours.streams, maxMessageSize: ours.maxMessageSize };
  if (ours.service !== undefined) hello.service = ours.service;
  const bytes = encodeHello(withFdsSaid(hello, channel));
  new ClientHelloWait(channel, ours, bytes, ready, fail);
  channel.send(bytes);
}

class ClientHelloWait extends HelloWait {
  readonly #ours: ClientHello;
  readonly #sent: Buffer;
  readonly #ready: HelloAccepted;

  constructor(channel: FramedChannel, ours: ClientHello, sent: Buffer, ready: HelloAccepted, fail: HandshakeFailed) {
    super(channel, ours.timeout ?? DEFAULT_TIMEOUT, fail);
    this.#ours = ours;
    this.#sent = sent;
    this.#ready = ready;
  }

  protected accepted(theirs: Hello, payload: Buffer): void {
    const { channel } = this;
    const notServer = notAServer(theirs, payload, this.#sent);
    if (notServer) {
      channel.destroy(notServer);
      return this.fail(notServer, channel);
    }
    if (theirs.error !== undefined) {
      channel.destroy();
      return this.fail(theirs.error instanceof Error ? theirs.error : rpcError(RpcCode.PROTOCOL_ERROR, 'the server refused the connection'), channel);
    }
    const refusal = mismatch({ ...theirs, service: this.#ours.service ?? theirs.service }, theirs.service!);
    if (refusal) {
      channel.destroy(refusal);
      return this.fail(refusal, channel);
    }
    theirs.streams = streamsOf(theirs);
    heedFds(theirs, channel);
    this.#ready(theirs, channel);
  }
}

// A server's hello names its service, with its keys in another order than
// a client's: what a peer that echoes its input sends back (our own hello)
// or another client's hello is never one.
function notAServer(theirs: Hello, payload: Buffer, sent: Buffer): RpcError | null {
  if (payload.equals(sent)) return rpcError(RpcCode.PROTOCOL_ERROR, 'the peer sent our own hello back: it is not an afunix server');
  if (theirs.service === undefined) return rpcError(RpcCode.PROTOCOL_ERROR, "the peer's hello names no service: it is not an afunix server");
  return null;
}
