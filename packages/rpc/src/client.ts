// connect(): a typed client. `client.add(1, 2)` calls the server; `$`-names
// are the client's own controls (birpc's convention), so they never collide
// with a contract's methods.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { debuglog } from 'node:util';
import { FramedChannel } from '@afunix/framing';
import { type ConnectionType, type Credentials, UnixSocket, connect as connectSocket } from '@afunix/transport';
import { type TypedEmitter, emitFromPeer } from './emitter.js';
import { type CallOptions, type Refable, RpcConnection } from './connection.js';
import type { ClientEventsOf, ClientHandlers, Contract, EventArgs, EventsOf, Listeners, MethodsOf, Notifier, Remote } from './contract.js';
import { RpcCode, invalidArgValue, rpcError, shownValue } from './errors.js';
import { MAX_DELAY, badTimeout } from './deadlines.js';
import { clientHandshake } from './handshake.js';
import { DESCRIBE, type ServiceDescription } from './describe.js';
import type { Interceptor } from './incoming.js';
import { checkMaxMessageSize, receiveLimit, sendLimit } from './limits.js';
import { type Hello, MAX_EVENT_NAME, MAX_SUBSCRIPTIONS } from './protocol.js';
import { type Callee, callRemote, notifyProxy, remoteProxy, sendingArgs } from './proxy.js';
import { handlerMap, refuseInherited, streamMethods } from './server.js';
import { checkConnectionOptions } from './server-options.js';

const debug = debuglog('afunix');

export interface ReconnectOptions {
  /** First delay in ms (default 100), doubled each attempt up to maxDelay (default 5000). */
  initialDelay?: number;
  maxDelay?: number;
  /**
   * Give up after this many attempts in a row (default: never). A connection
   * that drops within maxDelay of its handshake does not end the row.
   */
  maxAttempts?: number;
}

export interface ClientOptions<C extends Contract> {
  /** The service expected at the address; another one is SERVICE_MISMATCH. */
  service?: string;
  /** Methods the server may call on this client. */
  expose?: ClientHandlers<C>;
  /** Socket type when connecting by address (default 'stream'). */
  type?: ConnectionType;
  /** Milliseconds for connect + handshake (default 10 s). */
  timeout?: number;
  /** Reconnect after the connection drops (addresses only); subscriptions are restored. */
  reconnect?: boolean | ReconnectOptions;
  maxMessageSize?: number;
  maxInFlight?: number;
  /**
   * Bytes queued for the server, not yet taken by the socket, before the
   * connection is cut off with SLOW_CONSUMER (default 32 MiB). Calls are
   * queued without waiting, so a burst of large arguments counts in full:
   * raise this for a client that starts many large calls at once.
   */
  maxOutboundBytes?: number;
  exposeStack?: boolean;
  /** Wraps calls the server makes to this client's exposed methods. */
  intercept?: Interceptor;
}

type Lifecycle = {
  /** The connection dropped; pending calls failed with CONNECTION_CLOSED. */
  disconnect: (reason: Error | null) => void;
  /** A new connection is up (after reconnecting). */
  reconnect: () => void;
  /** The client is closed for good. */
  close: () => void;
};

export interface ClientControls<C extends Contract> {
  /**
   * Server events: adding a listener subscribes, removing the last one
   * unsubscribes. Once the client is closed, adding one throws
   * CONNECTION_CLOSED (while it reconnects it does not: it is subscribed
   * on the new connection).
   */
  readonly $events: TypedEmitter<Listeners<EventsOf<C>>>;
  /** Connection lifecycle: disconnect, reconnect, close. */
  readonly $lifecycle: TypedEmitter<Lifecycle>;
  /** The same methods with a signal and/or timeout: `client.$with({ timeout: 500 }).add(1, 2)`. */
  $with(options: CallOptions): Remote<MethodsOf<C>>;
  /** Fire-and-forget calls. */
  readonly $notify: Notifier<MethodsOf<C>>;
  /** Sends a client event to the server. */
  $emit<K extends keyof ClientEventsOf<C> & string>(name: K, ...args: EventArgs<ClientEventsOf<C>, K>): void;
  /** The current connection (stats, peer credentials), or null while reconnecting. */
  readonly $connection: RpcConnection | null;
  /** The server's hello: service, version. */
  readonly $server: Hello;
  readonly $peer: Credentials | null;
  /** What the server offers: methods (with JSON Schemas where known), events. */
  $describe(): Promise<ServiceDescription>;
  /**
   * Lets the process exit while the client is idle, as net.Socket#unref()
   * does: its connection, the connections it makes when it reconnects, and
   * its reconnect backoff stop holding the event loop. Calls awaiting
   * answers (and streams not yet ended) still hold it, and so does
   * $close() until it resolves. Returns the client.
   */
  $unref(): this;
  /** Undoes $unref(): the client holds its process again (the default). Returns the client. */
  $ref(): this;
  /**
   * Closes the client: no reconnect, calls still pending fail with
   * CONNECTION_CLOSED. What is queued is sent, our side ends, and it
   * resolves once the server has closed its side too, or `timeout` ms
   * later (default 2,000) with the connection cut off: 0 cuts it at once,
   * for a peer that may be the stuck part. Called again, it returns the
   * same promise, and a shorter `timeout` cuts the wait short.
   */
  $close(options?: { timeout?: number }): Promise<void>;
}

export type RpcClient<C extends Contract> = Remote<MethodsOf<C>> & ClientControls<C>;

type Target = string | UnixSocket | Duplex;

type Listener = (...args: any[]) => void;

/**
 * The client's $events: an emitter whose listeners decide what the client
 * is subscribed to. It checks after each change to its listeners, however
 * made (on, once, off, a once listener removing itself, removeAllListeners
 * with or without a name), whether an event gained its first listener or
 * lost its last. 'newListener'/'removeListener' hooks on the emitter itself
 * cannot do that: removeAllListeners() removes the hooks too, and the
 * subscriptions then stopped following the listeners.
 */
class SubscribingEmitter extends EventEmitter {
  readonly #subscribed = new Set<string>();
  readonly #changed: (name: string, subscribed: boolean) => void;
  readonly #closed: () => boolean;

  /**
   * `changed` runs when an event gains its first listener (true) or loses
   * its last (false); once `closed()` says so, adding a listener throws.
   */
  constructor(changed: (name: string, subscribed: boolean) => void, closed: () => boolean) {
    super();
    this.#changed = changed;
    this.#closed = closed;
  }

  /** The events that have listeners. */
  get subscribed(): ReadonlySet<string> {
    return this.#subscribed;
  }

  // EventEmitter's prototype has on === addListener and off ===
  // removeListener, each pair one function: both names are overridden.
  override addListener(name: string | symbol, listener: Listener): this {
    this.#refuseClosed(name);
    return this.#follow(name, super.addListener(name, listener));
  }

  override on(name: string | symbol, listener: Listener): this {
    this.#refuseClosed(name);
    return this.#follow(name, super.on(name, listener));
  }

  override prependListener(name: string | symbol, listener: Listener): this {
    this.#refuseClosed(name);
    return this.#follow(name, super.prependListener(name, listener));
  }

  // once() and prependOnceListener() add through on() and prependListener(),
  // and their wrapper removes itself through removeListener(): all followed.

  override removeListener(name: string | symbol, listener: Listener): this {
    return this.#follow(name, super.removeListener(name, listener));
  }

  override off(name: string | symbol, listener: Listener): this {
    return this.#follow(name, super.off(name, listener));
  }

  override removeAllListeners(name?: string | symbol): this {
    // EventEmitter counts its arguments: removeAllListeners(undefined) would
    // remove the listeners of an event named "undefined".
    if (name !== undefined) return this.#follow(name, super.removeAllListeners(name));
    super.removeAllListeners();
    for (const subscribed of [...this.#subscribed]) this.#follow(subscribed, this);
    return this;
  }

  // A closed client gets no more events: a listener added now would wait
  // for good, unnoticed, and stay referenced. It fails as $emit() and
  // $notify do then (a call rejects with the same code). A name a server
  // refuses to subscribe to would cost the connection (PROTOCOL_ERROR), and
  // every reconnection after it: refused here instead.
  #refuseClosed(name: string | symbol): void {
    if (!isServerEvent(name)) return;
    if (this.#closed()) throw rpcError(RpcCode.CONNECTION_CLOSED, `cannot listen to ${JSON.stringify(name)}: the client is closed`);
    if (name.length > MAX_EVENT_NAME) {
      throw invalidArgValue('name', `is an event name of ${name.length} characters, longer than a server accepts (at most ${MAX_EVENT_NAME})`);
    }
    if (!this.#subscribed.has(name) && this.#subscribed.size >= MAX_SUBSCRIPTIONS) {
      throw invalidArgValue('name', `would be event subscription ${MAX_SUBSCRIPTIONS + 1}; a server accepts at most ${MAX_SUBSCRIPTIONS} on one connection`);
    }
  }

  #follow(name: string | symbol, self: this): this {
    if (!isServerEvent(name)) return self;
    const wanted = this.listenerCount(name) > 0;
    if (wanted === this.#subscribed.has(name)) return self;
    if (wanted) this.#subscribed.add(name);
    else this.#subscribed.delete(name);
    this.#changed(name, wanted);
    return self;
  }
}

// EventEmitter's own bookkeeping events are not server events: a listener
// for 'newListener' must not subscribe to an event of that name.
function isServerEvent(name: string | symbol): name is string {
  return typeof name === 'string' && name !== 'newListener' && name !== 'removeListener';
}

class ClientCore<C extends Contract> implements Callee {
  readonly events = new SubscribingEmitter(
    (name, subscribed) => this.#subscriptionChanged(name, subscribed),
    () => this.#closed,
  );
  readonly lifecycle = new EventEmitter();
  conn: RpcConnection | null = null;
  server: Hello = { protocol: 0 };
  #target: Target;
  #options: ClientOptions<C>;
  #closed = false;
  #closing: Promise<void> | null = null;
  #hangingUp: RpcConnection | null = null;
  // Set by $unref(): every connection, handshake and backoff of this client
  // lets the process exit while nothing awaits an answer.
  #unrefd = false;
  #backoff: { timer: NodeJS.Timeout; stop(): void } | null = null;
  // The channel of a handshake under way: close() ends it, or a reconnect
  // that close() overtook would bring the connection back.
  #opening: FramedChannel | null = null;
  // Reconnecting: the attempts in a row and the next delay. A connection
  // that drops soon after each handshake continues the same count.
  #attempt = 0;
  #delay = 0;
  #upSince = 0;

  constructor(target: Target, given: ClientOptions<C> | null | undefined) {
    const options = checkClientOptions(given);
    this.#target = target;
    this.#options = options;
  }

  // Subscriptions follow listeners; a new connection gets them all (#adopt).
  #subscriptionChanged(name: string, subscribed: boolean): void {
    if (subscribed) this.conn?.subscribe([name]);
    else this.conn?.unsubscribe([name]);
  }

  /** Callee: whether `method` streams, as the server's last hello said (also while not connected). */
  streams(method: string): boolean {
    return this.server.streams?.includes(method) ?? false;
  }

  current(): RpcConnection {
    if (this.conn) return this.conn;
    throw rpcError(RpcCode.CONNECTION_CLOSED, this.#closed ? 'the client is closed' : 'not connected (reconnecting)');
  }

  async open(transport?: UnixSocket | Duplex): Promise<void> {
    const t = transport ?? (await this.#dial());
    if (this.#closed) {
      t.destroy();
      throw rpcError(RpcCode.CONNECTION_CLOSED, 'the client is closed');
    }
    // (A reconnect's handshake too: nothing awaits it.)
    if (this.#unrefd) (t as Partial<Refable>).unref?.();
    const channel = new FramedChannel(t, { maxFrameSize: this.#options.maxMessageSize });
    const peer = t instanceof UnixSocket ? safePeer(t) : null;
    const expose = this.#options.expose ?? {};
    this.#opening = channel;
    try {
      await new Promise<void>((resolve, reject) => {
        clientHandshake(
          channel,
          { service: this.#options.service, streams: streamMethods(expose), maxMessageSize: receiveLimit(channel), timeout: this.#options.timeout },
          (hello) => {
            // (A throw here would be lost inside the channel's frame
            // delivery, and the handshake, already over, would never settle.)
            try {
              this.conn = this.#adopt(channel, peer, hello);
            } catch (err) {
              channel.destroy();
              return reject(err);
            }
            this.server = hello;
            this.#upSince = Date.now();
            resolve();
          },
          reject,
        );
      });
    } finally {
      if (this.#opening === channel) this.#opening = null;
    }
  }

  #adopt(channel: FramedChannel, peer: Credentials | null, hello: Hello): RpcConnection {
    const options = {
      handlers: handlerMap(this.#options.expose ?? {}),
      exposeStack: this.#options.exposeStack,
      maxInFlight: this.#options.maxInFlight,
      maxOutboundBytes: this.#options.maxOutboundBytes,
      intercept: this.#options.intercept,
      onEvent: (name: string, args: unknown[]) => emitFromPeer(this.events, name, args),
    };
    const conn = new RpcConnection(channel, options, {
      credentials: peer,
      streams: hello.streams ?? [],
      maxMessage: sendLimit(channel, hello.maxMessageSize),
    });
    conn.subscribe([...this.events.subscribed]);
    conn.once('close', (reason) => this.#lost(conn, reason));
    if (this.#unrefd) conn.unref();
    return conn;
  }

  async #dial(): Promise<UnixSocket | Duplex> {
    if (typeof this.#target !== 'string') return this.#target;
    return connectSocket(this.#target, { type: this.#options.type, timeout: this.#options.timeout });
  }

  #lost(conn: RpcConnection, reason: Error | null): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.lifecycle.emit('disconnect', reason);
    if (this.#closed) return;
    if (this.#options.reconnect && typeof this.#target === 'string') void this.#reconnect();
    else this.#finish();
  }

  async #reconnect(): Promise<void> {
    const r = typeof this.#options.reconnect === 'object' ? this.#options.reconnect : {};
    const maxDelay = r.maxDelay ?? 5_000;
    // Only a connection that stayed up longer than the longest delay starts
    // the count again: one dropped at once after each handshake would
    // otherwise be retried every initialDelay, for ever.
    if (this.#attempt === 0 || Date.now() - this.#upSince > maxDelay) {
      this.#attempt = 0;
      this.#delay = r.initialDelay ?? 100;
    }
    while (!this.#closed) {
      if (r.maxAttempts !== undefined && this.#attempt >= r.maxAttempts) return this.#finish();
      const attempt = ++this.#attempt;
      // (Referenced, as the socket was, unless $unref()'d: a client that
      // only listens to events must not let its process end because the
      // server restarts. close() ends it.)
      if (!(await this.#backOff(this.#delay))) return;
      this.#delay = Math.min(this.#delay * 2, maxDelay);
      if (this.#closed) return;
      try {
        await this.open();
      } catch (err) {
        debug('reconnect attempt %d failed: %s', attempt, (err as Error).message);
        continue;
      }
      if (this.#closed) return; // close() got the connection first
      debug('reconnected to %s after %d attempt(s)', String(this.#target), attempt);
      this.lifecycle.emit('reconnect');
      return;
    }
  }

  // Resolves false if close() ended the wait. (A timer of our own, not
  // timers/promises: $ref() and $unref() change it while it runs.)
  #backOff(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (waited: boolean): void => {
        clearTimeout(timer);
        this.#backoff = null;
        resolve(waited);
      };
      const timer = setTimeout(done, ms, true);
      if (this.#unrefd) timer.unref();
      this.#backoff = { timer, stop: () => done(false) };
    });
  }

  /** $ref() (true) and $unref() (false): for now and for every connection to come. */
  setRef(ref: boolean): void {
    this.#unrefd = !ref;
    if (ref) {
      this.conn?.ref();
      (this.#opening?.transport as Partial<Refable> | undefined)?.ref?.();
      this.#backoff?.timer.ref();
    } else {
      this.conn?.unref();
      (this.#opening?.transport as Partial<Refable> | undefined)?.unref?.();
      this.#backoff?.timer.unref();
    }
  }

  #finish(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.lifecycle.emit('close');
  }

  close(timeout?: number): Promise<void> {
    if (!this.#closing) return (this.#closing = this.#close(timeout));
    if (timeout !== undefined) this.#hangingUp?.close(timeout);
    return this.#closing;
  }

  async #close(timeout: number | undefined): Promise<void> {
    const conn = this.conn;
    const wasClosed = this.#closed; // (given up reconnecting: 'close' was said)
    this.#closed = true;
    // A reconnect stops: in its backoff, or in a handshake under way, which
    // fails and brings nothing back.
    this.#backoff?.stop();
    this.#opening?.destroy();
    if (conn && !conn.channel.closed) {
      const closed = new Promise((resolve) => conn.channel.once('close', resolve));
      // Awaited: an unref'd client's process must live to see it resolve.
      conn.ref();
      // (Kept apart from this.conn, which the connection's teardown clears:
      // a second close() may still cut this one's wait short.)
      this.#hangingUp = conn;
      conn.close(timeout);
      await closed;
      this.#hangingUp = null;
    }
    this.conn = null;
    if (!wasClosed) this.lifecycle.emit('close');
  }
}

/**
 * The options, checked (ERR_INVALID_ARG_VALUE naming the first that cannot
 * work), with those given as null left out, as undefined ones are.
 */
function checkClientOptions<C extends Contract>(given: ClientOptions<C> | null | undefined): ClientOptions<C> {
  if (given === undefined || given === null) return {};
  if (typeof given !== 'object') throw invalidArgValue('options', `must be an object; received ${shownValue(given)}`);
  // (for-in, as reading the object itself would: inherited options count too.)
  const options: Record<string, unknown> = {};
  for (const key in given) {
    const value = (given as Record<string, unknown>)[key];
    if (value !== null) options[key] = value;
  }
  const { service, expose } = options;
  if (service !== undefined && (typeof service !== 'string' || service === '')) {
    throw invalidArgValue('service', `must be a non-empty string; received ${shownValue(service)}`);
  }
  if (expose !== undefined && (typeof expose !== 'object' || expose === null)) throw invalidArgValue('expose', `must be an object of functions; received ${shownValue(expose)}`);
  if (expose) refuseInherited(expose, 'expose');
  checkMaxMessageSize(options.maxMessageSize);
  const badTime = badTimeout('timeout', options.timeout);
  if (badTime) throw badTime;
  checkReconnect(options.reconnect as ClientOptions<C>['reconnect']);
  checkConnectionOptions(options as Parameters<typeof checkConnectionOptions>[0]);
  return options as ClientOptions<C>;
}

function checkReconnect(reconnect: ClientOptions<Contract>['reconnect'] | null): void {
  if (reconnect === undefined || reconnect === null || typeof reconnect === 'boolean') return;
  if (typeof reconnect !== 'object') {
    throw invalidArgValue('reconnect', 'must be true, false or { initialDelay, maxDelay, maxAttempts }');
  }
  const { initialDelay, maxDelay, maxAttempts } = reconnect;
  // A delay of 0 would stay 0 (redialling in a tight loop), and one past
  // MAX_DELAY would fire at once.
  for (const [name, ms] of [['initialDelay', initialDelay], ['maxDelay', maxDelay]] as const) {
    if (ms !== undefined && !(typeof ms === 'number' && ms >= 1 && ms <= MAX_DELAY)) {
      throw invalidArgValue(`reconnect.${name}`, `must be a number of milliseconds from 1 to ${MAX_DELAY}; received ${shownValue(ms)}`);
    }
  }
  if (maxAttempts !== undefined && !(Number.isInteger(maxAttempts) && maxAttempts >= 0)) {
    throw invalidArgValue('reconnect.maxAttempts', `must be a whole number of attempts; received ${shownValue(maxAttempts)}`);
  }
}

function safePeer(socket: UnixSocket): Credentials | null {
  try {
    return socket.peerCredentials();
  } catch {
    return null;
  }
}

function clientProxy<C extends Contract>(core: ClientCore<C>): RpcClient<C> {
  const current = () => core.current();
  const remote = remoteProxy(core) as Record<string, unknown>;
  const controls: Record<string, unknown> = {
    $events: core.events,
    $lifecycle: core.lifecycle,
    $with: (options: CallOptions) => remoteProxy(core, options),
    $notify: notifyProxy(current),
    $emit: (name: string, ...args: unknown[]) => sendingArgs(args, () => current().emitEvent(name, args)),
    $close: (options?: { timeout?: number } | null) => {
      const timeout = options?.timeout ?? undefined;
      const bad = badTimeout('options.timeout', timeout);
      return bad ? Promise.reject(bad) : core.close(timeout);
    },
    $describe: () => callRemote(core, DESCRIBE, []),
    $unref: () => {
      core.setRef(false);
      return client;
    },
    $ref: () => {
      core.setRef(true);
      return client;
    },
  };
  const client = new Proxy(Object.create(null), {
    get(_target, prop) {
      // (then, toJSON and the like: the remote proxy below answers them.)
      if (typeof prop !== 'string') return undefined;
      if (prop === '$connection') return core.conn;
      if (prop === '$server') return core.server;
      if (prop === '$peer') return core.conn?.peer ?? null;
      if (prop.startsWith('$')) return controls[prop];
      return remote[prop];
    },
  }) as RpcClient<C>;
  return client;
}

/**
 * Connects to an afunix server at an address (path or '@abstract'), or over
 * an already-connected UnixSocket or any Duplex, and returns a typed client.
 */
export async function connect<C extends Contract>(target: Target, options?: ClientOptions<C> | null): Promise<RpcClient<C>> {
  const core = new ClientCore<C>(target, options);
  await core.open();
  return clientProxy(core);
}
