// RpcServer: serves a contract on a unix socket (or any Duplex), checks who
// connects, broadcasts events to subscribers, and shuts down gracefully.
import { EventEmitter } from 'node:events';
import { type Duplex, finished } from 'node:stream';
import { debuglog } from 'node:util';
import { type FrameLimits, FramedChannel, resolveLimits } from '@afunix/framing';
import { type Credentials, type ServerOptions as ListenOptions, type UnixServer, UnixSocket, afunixError, createServer as createListener, features } from '@afunix/transport';
import { type TypedEmitter, emitFromPeer } from './emitter.js';
import { type ConnectionOptions, RpcConnection } from './connection.js';
import type { ClientEventsOf, Contract, EventArgs, EventsOf, ListenersWith, MethodsOf, ServerHandlers } from './contract.js';
import { RpcCode, type RpcError, invalidArgValue, rpcError, shownValue } from './errors.js';
import { holdForSends, sendsDone } from './fd.js';
import { MAX_DELAY, badTimeout } from './deadlines.js';
import { checkServerOptions } from './server-options.js';
import { isStreamHandler } from './stream.js';
import { type HandshakeFailed, type HelloAccepted, type ServerHello, refusePending, serverHandshake } from './handshake.js';
import type { Handler, Interceptor } from './incoming.js';
import type { Hello } from './protocol.js';
import { sendLimit } from './limits.js';
import { DESCRIBE, describeService } from './describe.js';
import { type PeerPolicy, checkPeer } from './policy.js';
import type { Validator } from './validation.js';

const debug = debuglog('afunix');

export interface RpcServerOptions<C extends Contract> {
  /** The service name clients may ask for; checked in the handshake. */
  service: string;
  version?: string;
  handlers: ServerHandlers<C>;
  /** Standard Schema validators for argument lists, per method. */
  schemas?: { [K in keyof MethodsOf<C>]?: Validator };
  /** Who may connect (default 'any'). */
  allow?: PeerPolicy;
  /** Send stack traces with errors (default false: they reveal internals). */
  exposeStack?: boolean;
  /** Calls in flight per connection before OVERLOADED (default 1024). */
  maxInFlight?: number;
  /** Largest message in bytes (default 16 MiB). */
  maxMessageSize?: number;
  /** Bytes queued for a client that does not read before it is cut off with SLOW_CONSUMER (default 32 MiB). */
  maxOutboundBytes?: number;
  intercept?: Interceptor;
  /** Milliseconds a new connection has to say hello (default 10 s). */
  handshakeTimeout?: number;
  /** Event names to list in `$describe` (events are types only otherwise). */
  events?: ReadonlyArray<keyof EventsOf<C> & string>;
}

type ServerEvents = {
  connection: (conn: RpcConnection) => void;
  disconnect: (conn: RpcConnection, reason: Error | null) => void;
  /** A connection that failed before it was established (refused, bad hello, timeout). */
  handshakeError: (err: Error, peer: Credentials | null) => void;
  /** publish() could not send `event` to this subscriber (e.g. MESSAGE_TOO_LARGE); the others got it. */
  publishError: (err: Error, conn: RpcConnection, event: string) => void;
  error: (err: Error) => void;
  close: () => void;
};

/** Methods whose handlers are async generator functions are announced as streams. */
export function streamMethods(handlers: object): string[] {
  return Object.entries(handlers).filter(([, fn]) => isStreamHandler(fn)).map(([name]) => name);
}

export function handlerMap(handlers: object, extra?: Record<string, Handler>): Map<string, Handler> {
  refuseInherited(handlers, 'handlers');
  const map = new Map<string, Handler>();
  // Own properties only: a method name like "constructor" or "__proto__"
  // must never reach Object.prototype.
  for (const [name, fn] of Object.entries(handlers)) {
    if (name.startsWith('$')) throw invalidArgValue(`handlers.${name}`, "is a reserved name: names starting with '$' are the client's own");
    if (typeof fn === 'function') map.set(name, fn.bind(handlers) as Handler);
  }
  for (const [name, fn] of Object.entries(extra ?? {})) map.set(name, fn);
  return map;
}

// A class instance's methods live on its prototype, which is never served
// (it would expose every helper method, private ones included, and
// Object.prototype's names). One whose handlers are all there served none
// of them (every call: METHOD_NOT_FOUND): such an object is refused. One
// with handlers of its own (arrow fields) is served by those, its
// prototype's helpers left alone.
export function refuseInherited(handlers: object, name: string): void {
  if (Object.values(handlers).some((v) => typeof v === 'function')) return;
  for (let proto = Object.getPrototypeOf(handlers); proto !== null && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    const method = Object.getOwnPropertyNames(proto).find((key) => key !== 'constructor' && typeof Object.getOwnPropertyDescriptor(proto, key)?.value === 'function');
    if (method === undefined) continue;
    const kind = (proto as { constructor?: { name?: string } }).constructor?.name || 'its prototype';
    throw invalidArgValue(name, `has its methods on a prototype (${kind}.prototype.${method}), and only own properties are served: list the methods to serve, e.g. { ${method}: impl.${method}.bind(impl) }`);
  }
}

export class RpcServer<C extends Contract = Contract> extends (EventEmitter as new () => TypedEmitter<ServerEvents>) {
  readonly service: string;
  /** Client events, with the sending connection as the first argument. */
  readonly clientEvents = new EventEmitter() as TypedEmitter<ListenersWith<RpcConnection, ClientEventsOf<C>>>;
  #options: RpcServerOptions<C>;
  #handlers: Map<string, Handler>;
  #streams: string[];
  #validators: Map<string, Validator>;
  #listeners: UnixServer[] = [];
  #connections = new Set<RpcConnection>();
  #closing: Promise<void> | null = null;
  // Sockets accepted (or given to serve()) once close() began: refused with
  // SHUTTING_DOWN, and close() waits for them as for its connections. null
  // once close() has taken them: later ones go on their own.
  #refusedWhileClosing: FramedChannel[] | null = [];
  // Shared by every connection: one object per connection cost ~0.4 KB.
  #connectionOptions: ConnectionOptions;
  // Likewise for framing and the handshake: the limits, what the server
  // says, and where it ends.
  #framing: FrameLimits;
  #hello: ServerHello;
  #accepted: HelloAccepted;
  #failed: HandshakeFailed;

  constructor(options: RpcServerOptions<C>) {
    super();
    checkServerOptions(options);
    this.service = options.service;
    this.#options = options;
    this.#streams = streamMethods(options.handlers);
    this.#validators = new Map(Object.entries(options.schemas ?? {}).filter(([, v]) => v) as Array<[string, Validator]>);
    const methods = handlerMap(options.handlers);
    const description = describeService(options, [...methods.keys()], this.#streams, this.#validators);
    this.#handlers = handlerMap(options.handlers, { [DESCRIBE]: () => description });
    this.#connectionOptions = {
      handlers: this.#handlers,
      validators: this.#validators,
      exposeStack: options.exposeStack,
      maxInFlight: options.maxInFlight,
      maxOutboundBytes: options.maxOutboundBytes,
      intercept: options.intercept,
      filterEvents: true,
      onEvent: (name, args, conn) => emitFromPeer(this.clientEvents as EventEmitter, name, args, conn),
      onClose: (conn, reason) => {
        this.#connections.delete(conn);
        this.emit('disconnect', conn, reason);
      },
    };
    this.#framing = resolveLimits({ maxFrameSize: options.maxMessageSize });
    this.#hello = { service: this.service, version: options.version ?? undefined, streams: this.#streams, timeout: options.handshakeTimeout };
    this.#accepted = (hello, channel) => this.#adopt(channel, hello);
    this.#failed = (err, channel) => this.#reportHandshakeError(err, channel);
  }

  /** Open connections. */
  get connections(): ReadonlySet<RpcConnection> {
    return this.#connections;
  }

  /** Listens on a path or '@abstract' name; `mode` locks the file down before anyone can connect. */
  async listen(address?: string, options: ListenOptions = {}): Promise<UnixServer> {
    const listener = this.#listener(options);
    await listener.listen(address);
    // close() began while the socket was being bound: it closed the
    // listeners it knew of, not this one.
    if (this.#closing) {
      await listener.close();
      throw serverClosed();
    }
    this.#listeners.push(listener);
    return listener;
  }

  /** Serves on a listening fd handed over by systemd or a parent. */
  listenFd(fd: number, options: ListenOptions = {}): UnixServer {
    const listener = this.#listener(options);
    listener.listenFd(fd);
    this.#listeners.push(listener);
    return listener;
  }

  // transport's createServer (without the native addon, a server on Node's
  // net), with its connections and its errors ours. A closed server takes no
  // new listeners: nothing would ever close them.
  #listener(options: ListenOptions): UnixServer {
    if (this.#closing) throw serverClosed();
    this.#checkPolicyCanWork();
    const listener = createListener(options);
    listener.on('connection', (socket: UnixSocket) => this.#accept(socket));
    listener.on('error', (err: Error) => this.emit('error', err));
    return listener;
  }

  // Without the kernel's peer credentials (no native addon: the net
  // fallback) a policy would refuse every client; say so at listen(), not
  // with an ACCESS_DENIED on each connection. (serve() takes any Duplex, TCP
  // too, and refuses there as documented.)
  #checkPolicyCanWork(): void {
    const allow = this.#options.allow;
    if (allow === undefined || allow === 'any' || features.peerCredentials) return;
    throw afunixError('ERR_AFUNIX_UNSUPPORTED', `peerCredentials is not available here (${features.native ? 'this platform cannot tell' : 'the native addon is not loaded'}), so allow: ${typeof allow === 'string' ? `'${allow}'` : 'a policy'} would refuse every client; use allow: 'any' and the socket file's mode`, { feature: 'peerCredentials' });
  }

  /** Serves one already-connected transport: a UnixSocket, or any Duplex (TCP, stdio). */
  serve(transport: UnixSocket | Duplex): Promise<RpcConnection> {
    return new Promise((resolve, reject) => {
      this.#serve(
        transport,
        (hello, channel) => resolve(this.#adopt(channel, hello)),
        (err, channel) => {
          reject(err);
          this.#reportHandshakeError(err, channel);
        },
      );
    });
  }

  #reportHandshakeError(err: Error, channel: FramedChannel): void {
    debug('handshake failed: %s', err.message);
    try {
      this.emit('handshakeError', err, peerOf(channel.transport));
    } catch (listenerError) {
      this.#listenerFailed(listenerError);
    }
  }

  // A 'handshakeError' listener that throws runs inside a timer, a socket
  // event or the accept loop: thrown on, it would end the process. It goes
  // to the server's 'error' listeners, or becomes a process warning.
  #listenerFailed(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    debug('a handshakeError listener threw: %s', error.message);
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else process.emitWarning(error);
  }

  // The server's own connections, with the shared callbacks: no promise and
  // no closures per connection. What serve() would reject with (a failing
  // getsockopt) must not escape into the accept loop, which would end the
  // process with it.
  #accept(socket: UnixSocket): void {
    try {
      this.#serve(socket, this.#accepted, this.#failed);
    } catch (err) {
      debug('a connection could not be served: %s', err instanceof Error ? err.message : String(err));
    }
  }

  #serve(transport: UnixSocket | Duplex, ready: HelloAccepted, fail: HandshakeFailed): void {
    const channel = new FramedChannel(transport, this.#framing);
    const refusal = this.#closing ? shuttingDown() : checkPeer(this.#options.allow, peerOf(transport));
    if (this.#closing) this.#refusedWhileClosing?.push(channel);
    try {
      serverHandshake(channel, this.#hello, refusal, ready, fail);
    } catch (err) {
      // Thrown before the handshake began, nothing else would ever close the
      // connection (once it began, its timeout or grace period does).
      if (channel.onFrame === null) channel.destroy();
      throw err;
    }
  }

  /**
   * Broadcasts an event to every connection that subscribed to it; returns
   * how many it was sent to. A subscriber that cannot take it (its peer
   * accepts smaller messages, its connection fails under the send) is
   * skipped and reported with 'publishError' once the others have it: one
   * peer must not keep an event from the rest. Arguments that cannot
   * travel at all (ENCODE_ERROR) are the caller's mistake, and throw (once
   * a subscriber makes them be encoded).
   */
  publish<K extends keyof EventsOf<C> & string>(name: K, ...args: EventArgs<EventsOf<C>, K>): number {
    if (typeof name !== 'string') throw invalidArgValue('name', `must be an event name (a string); received ${shownValue(name)}`);
    let sent = 0;
    let failed: Array<{ err: Error; conn: RpcConnection }> | null = null;
    // Each subscriber's message carries the same descriptors: those we own
    // stay open until the last has left, and the ones given away with
    // Fd.transfer() are closed then (or at once, if none was sent).
    // (Arguments are not checked for nobody: a publisher in a loop with no
    // subscriber pays no encoding.)
    const held = holdForSends(args);
    try {
      for (const conn of this.#connections) {
        try {
          if (conn.emitEvent(name, args)) sent++;
        } catch (err) {
          if (isEncodeError(err)) throw err;
          (failed ??= []).push({ err: err as Error, conn });
        }
      }
    } finally {
      sendsDone(held);
    }
    if (failed) for (const { err, conn } of failed) this.emit('publishError', err, conn, name);
    return sent;
  }

  /**
   * Stops accepting, lets calls in flight finish for up to `timeout` ms
   * (new calls fail with SHUTTING_DOWN), then closes every connection.
   * Resolves once their sockets have closed, with every answer sent.
   */
  close(options: { timeout?: number } = {}): Promise<void> {
    if (this.#closing) return this.#closing;
    const badTime = badTimeout('options.timeout', options?.timeout);
    if (badTime) return Promise.reject(badTime);
    return (this.#closing = this.#shutdown(options?.timeout ?? 5_000));
  }

  async #shutdown(timeout: number): Promise<void> {
    // A client whose hello is still awaited gets the answer it would get had
    // it connected now, or it would be adopted after the shutdown.
    const refused = refusePending(this.#hello, shuttingDown());
    // Now, not after the listeners have closed: a call that arrives
    // meanwhile gets SHUTTING_DOWN, as the docs promise.
    for (const conn of this.#connections) conn.drain();
    await Promise.all(this.#listeners.map((l) => l.close()));
    let timer: NodeJS.Timeout | undefined;
    // (Infinity, or past setTimeout's range, which would fire at once: no deadline.)
    const deadline = new Promise<void>((resolve) => {
      if (timeout < MAX_DELAY) timer = setTimeout(resolve, timeout);
    });
    await Promise.race([Promise.all([...this.#connections].map((c) => c.idle())), deadline]);
    clearTimeout(timer);
    const closing = [...this.#connections];
    for (const conn of closing) conn.close();
    // The answers of the calls that just finished are still on their way
    // out: resolving before their sockets have closed let a process that
    // exits then drop them. So are the refusals of the clients whose hello
    // was awaited. (A peer that keeps its side open is cut off after a
    // grace period.)
    const channels = [...closing.map((conn) => conn.channel), ...refused, ...(this.#refusedWhileClosing ?? [])];
    this.#refusedWhileClosing = null;
    await Promise.all(channels.map((channel) => transportClosed(channel.transport)));
    this.emit('close');
  }

  #adopt(channel: FramedChannel, hello: Hello): RpcConnection {
    const conn = new RpcConnection(channel, this.#connectionOptions, {
      credentials: peerOf(channel.transport),
      streams: hello.streams ?? [],
      maxMessage: sendLimit(channel, hello.maxMessageSize),
    });
    this.#connections.add(conn);
    this.emit('connection', conn);
    return conn;
  }
}

// finished(), not 'close': a Duplex made with emitClose: false never says
// 'close' (finished() also hears it end both ways, or be destroyed).
function transportClosed(transport: Duplex): Promise<void> {
  if (transport.closed) return Promise.resolve();
  return new Promise((resolve) => finished(transport, () => resolve()));
}

function serverClosed(): RpcError {
  return rpcError(RpcCode.SHUTTING_DOWN, 'the server is closed: it takes no new listeners');
}

function shuttingDown(): RpcError {
  return rpcError(RpcCode.SHUTTING_DOWN, 'the server is shutting down');
}

function isEncodeError(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === RpcCode.ENCODE_ERROR;
}

function peerOf(transport: UnixSocket | Duplex): Credentials | null {
  if (!(transport instanceof UnixSocket)) return null;
  try {
    return transport.peerCredentials();
  } catch {
    return null;
  }
}

export function createServer<C extends Contract>(options: RpcServerOptions<C>): RpcServer<C> {
  return new RpcServer<C>(options);
}
