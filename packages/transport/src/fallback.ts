// Without the native addon (no toolchain, unsupported platform, or
// AFUNIX_FORCE_FALLBACK=1), plain stream sockets still work through Node's
// net: on the wire they are the same AF_UNIX stream sockets (named pipes on
// Windows), so a fallback peer talks to a native one. Everything net cannot
// do (fds, credentials, seqpacket, dgram, socketpair, autobind) fails with
// ERR_AFUNIX_UNSUPPORTED naming the feature, as `features` says.
import { EventEmitter } from 'node:events';
import { chmodSync, lstatSync, renameSync, type Stats, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { debuglog } from 'node:util';
import { encodeAddress, isAbstract } from './address.js';
import { addressInUse, whyNotStale } from './bind.js';
import { type ConnectOptions, atDeadline, backoff, connectionType } from './connect.js';
import { abortError, afunixError, type AfunixError, invalidArg, unsupported } from './errors.js';
import type { FdLike } from './fds.js';
import type { ServerOptions, UnixServer } from './server.js';
import type { Credentials, Receiver, UnixSocket } from './socket.js';
import { sendPieces } from './send-data.js';

const debug = debuglog('afunix');
const WINDOWS = process.platform === 'win32';
const TRANSIENT = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);

// node:crypto is loaded only when closeNet() names a file to set aside:
// most processes never do, and loading it costs a few ms of start-up.
const randomHex = (bytes: number): string =>
  (createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto')).randomBytes(bytes).toString('hex');

/** The error for a feature that needs the addon. */
export function missing(feature: string): AfunixError {
  return unsupported(feature, 'the native addon is not loaded (only plain stream sockets work, through node:net)');
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

// The name as net wants it. Linux abstract '@name' is net's '\0name'. On
// Windows net speaks named pipes only: '\\.\pipe\name' or '\\?\pipe\name'
// pass through as given (and any other string goes to net unchanged, which
// then fails as net does).
function netAddress(address: string, syscall: string): string {
  if (typeof address === 'string' && isAbstract(address) && process.platform !== 'linux') throw missing('abstract');
  if (WINDOWS && typeof address === 'string' && address.length > 0) return address;
  encodeAddress(address, syscall); // the same checks (and ENAMETOOLONG) as the native path
  return isAbstract(address) ? `\0${address.slice(1)}` : address;
}

/** How addresses are shown: '@name' for abstract, as the native side does. */
function shown(address: string): string {
  return address.startsWith('\0') ? `@${address.slice(1)}` : address;
}

function withAddress(err: AfunixError, target: string, address: string): AfunixError {
  if (target !== address && typeof err.message === 'string') {
    err.message = err.message.split(target).join(address);
    if (err.address === target) err.address = address;
  }
  return err;
}

// ---------------------------------------------------------------------------
// Sockets: a real net.Socket with UnixSocket's stream-only extras attached.
// Sockets a net.Server accepts are made by net, so the extras go on the
// instance rather than through a subclass.

interface Extras {
  readonly type: 'stream';
  readonly fd: number;
  readonly remoteAddress: string;
  address(): string;
  send(data: Uint8Array | readonly Uint8Array[], fds?: readonly FdLike[] | null): boolean;
  setReceiver(receiver: Receiver): void;
  pauseReading(): void;
  resumeReading(): void;
  peerCredentials(): Credentials;
  peerPidfd(): number;
}

function adapt(sock: net.Socket, local: string, remote: string): UnixSocket {
  let receiver: Receiver | null = null;
  let paused = false;
  let held: Buffer[] = [];
  let heldEnd = false;
  const internals = sock as unknown as { _handle?: { fd?: number } | null; _read(size: number): void };

  const deliver = (chunk: Buffer): void => {
    if (receiver) receiver.call(sock as unknown as UnixSocket, chunk, null, null);
    else Readable.prototype.push.call(sock, chunk);
  };
  const extras: Extras = {
    type: 'stream',
    get fd() {
      return internals._handle?.fd ?? -1;
    },
    // net cannot read the names of a pipe; we know them from how the socket was made.
    get remoteAddress() {
      return remote;
    },
    address: () => local,
    send(data, fds) {
      if (fds && fds.length > 0) throw missing('fdPassing');
      const { pieces } = sendPieces('stream', data, null);
      if (pieces.length === 1) return sock.write(pieces[0]!);
      sock.cork();
      let ok = true;
      for (const p of pieces) ok = sock.write(p);
      sock.uncork(); // one writev
      return ok;
    },
    setReceiver(fn) {
      receiver = fn;
      // Whatever net read before the receiver was set goes to it first, on
      // the next tick (before any read of net's, and before the 'end' that
      // reading the last of it may queue): the caller may be a constructor
      // whose own listeners are not on yet.
      if (sock.readableLength > 0) {
        const buffered: Buffer[] = [];
        process.nextTick(() => {
          for (const b of buffered) {
            if (sock.destroyed) return;
            if (paused) held.push(b);
            else deliver(b);
          }
        });
        for (let b = sock.read() as Buffer | null; b !== null; b = sock.read() as Buffer | null) buffered.push(b);
      }
      sock.resume();
    },
    pauseReading() {
      paused = true;
    },
    resumeReading() {
      if (!paused) return;
      paused = false;
      const pending = held;
      held = [];
      while (pending.length > 0) {
        deliver(pending.shift()!);
        if (paused) {
          held = pending.concat(held);
          return;
        }
      }
      if (heldEnd) {
        heldEnd = false;
        Readable.prototype.push.call(sock, null);
      } else if (!sock.destroyed) {
        internals._read(0); // restarts net's reading if it stopped
      }
    },
    peerCredentials() {
      throw missing('peerCredentials');
    },
    peerPidfd() {
      throw missing('peerPidfd');
    },
  };
  Object.defineProperties(sock, Object.getOwnPropertyDescriptors(extras));
  // net hands every chunk it reads to push(). With a receiver, chunks go to
  // it instead of the Readable side; after pauseReading() they are held (at
  // most one read's worth), and returning false makes net stop reading.
  Object.defineProperty(sock, 'push', {
    configurable: true,
    writable: true,
    value(chunk: Buffer | null, encoding?: BufferEncoding): boolean {
      if (receiver === null && !paused) return Readable.prototype.push.call(sock, chunk, encoding);
      if (paused) {
        if (chunk === null) heldEnd = true;
        else held.push(chunk);
        return false;
      }
      if (chunk === null) return Readable.prototype.push.call(sock, null);
      deliver(chunk);
      return !paused;
    },
  });
  return sock as unknown as UnixSocket;
}

function connectOnce(target: string, address: string, options: ConnectOptions, deadline: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    // net passes writableHighWaterMark on to Duplex; @types/node does not list it.
    const sock = new net.Socket({
      allowHalfOpen: options.allowHalfOpen ?? true,
      writableHighWaterMark: options.highWaterMark ?? 64 * 1024,
    } as net.SocketConstructorOpts);
    const signal = options.signal;
    const done = (err: Error | null) => {
      cancelTimeout();
      signal?.removeEventListener('abort', onAbort);
      sock.off('error', done);
      sock.off('connect', onConnect);
      if (!err) return resolve(sock);
      sock.destroy();
      reject(withAddress(err as AfunixError, target, address));
    };
    const onConnect = () => done(null);
    const onAbort = () => done(abortError(signal!.reason));
    const cancelTimeout = atDeadline(deadline, () => done(afunixError('ETIMEDOUT', `connect ETIMEDOUT ${address}`, { syscall: 'connect', address })));
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.once('error', done);
    sock.once('connect', onConnect);
    sock.connect({ path: target });
  });
}

/** connect() through net: stream only, with the native path's retry on a full backlog. */
export async function fallbackConnect(address: string, options: ConnectOptions = {}): Promise<UnixSocket> {
  const type = connectionType(options.type);
  if (type !== 'stream') throw missing(type);
  if (options.passCredentials) throw missing('passCredentials');
  const target = netAddress(address, 'connect');
  const name = shown(target);
  const deadline = Date.now() + (options.timeout ?? 10_000);
  let delay = 1;
  for (;;) {
    if (options.signal?.aborted) throw abortError(options.signal.reason);
    try {
      const sock = await connectOnce(target, name, options, deadline);
      debug('fallback socket connected to %s', name);
      return adapt(sock, '', name);
    } catch (err) {
      if ((err as AfunixError).code !== 'EAGAIN') throw err;
    }
    if (Date.now() >= deadline) {
      throw afunixError('ETIMEDOUT', `connect ETIMEDOUT ${name} (the listen backlog stayed full)`, {
        syscall: 'connect',
        address: name,
      });
    }
    await backoff(delay, options.signal);
    delay = Math.min(delay * 2, 50);
  }
}

// ---------------------------------------------------------------------------
// Servers: net.Server with src/bind.ts's rules applied where net lets us.

// Resolves null for a stale socket file, else why it is not taken for
// stale (bind.ts's whyNotStale(), on what net's connect() answered).
function notStale(path: string): Promise<string | null> {
  return new Promise((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(whyNotStale(null));
    });
    probe.once('error', (err: AfunixError) => resolve(whyNotStale(err.code ?? err.message)));
  });
}

type Identity = { dev: number; ino: number };

/**
 * Closes a net server listening on `path` without losing someone else's
 * file: libuv unlinks the path it bound, by name and unconditionally, when
 * the server closes. If what is there now is not our socket, it is moved
 * aside while net closes and put back right after.
 */
function closeNet(srv: net.Server, path: string | null, identity: Identity | null): void {
  const st = path ? lstatOrNull(path) : null;
  const ours = st !== null && identity !== null && st.isSocket() && st.dev === identity.dev && st.ino === identity.ino;
  if (!path || !st || ours || st.isDirectory()) {
    srv.close();
    return;
  }
  const aside = join(dirname(path), `.afunix-keep-${randomHex(6)}`);
  try {
    renameSync(path, aside);
  } catch {
    // Not ours to move, so not libuv's to unlink either (e.g. a sticky /tmp).
    srv.close();
    return;
  }
  try {
    srv.close();
  } finally {
    renameSync(aside, path);
  }
}

export class FallbackServer extends EventEmitter {
  readonly type = 'stream' as const;
  #options: ServerOptions;
  #server: net.Server | null = null;
  #started = false;
  #address = '';
  #path: string | null = null;
  #identity: Identity | null = null;
  #closed: Promise<void> | null = null;
  #connections = new Set<net.Socket>();

  constructor(options: ServerOptions = {}) {
    super();
    const type = connectionType(options.type);
    if (type !== 'stream') throw missing(type);
    if (options.passCredentials) throw missing('passCredentials');
    this.#options = options;
  }

  get connections(): number {
    return this.#connections.size;
  }

  get listening(): boolean {
    return this.#server !== null;
  }

  /**
   * Listens on a path, an '@name' (Linux) or a Windows pipe name. Unlike the
   * native path, `mode` is applied with chmod right after listen(): for that
   * moment the file has the umask's permissions (see the README).
   */
  async listen(address?: string): Promise<this> {
    if (this.#started || this.#closed) throw afunixError('ERR_SERVER_ALREADY_LISTEN', 'listen() was already called on this server');
    if (address === undefined) throw missing('autobind');
    const target = netAddress(address, 'bind');
    const mode = this.#options.mode;
    const hasFile = !WINDOWS && !target.startsWith('\0');
    if (mode !== undefined && !hasFile) {
      throw invalidArg('mode', WINDOWS ? 'has no meaning for a Windows named pipe' : 'has no meaning for an abstract address (use a peer-credentials check)');
    }
    this.#started = true;
    let srv: net.Server;
    try {
      try {
        srv = await this.#listenNet(target, hasFile, mode);
      } catch (err) {
        if ((err as AfunixError).code !== 'EADDRINUSE' || !hasFile) throw withAddress(err as AfunixError, target, shown(target));
        const st = lstatOrNull(target);
        if (st && !st.isSocket()) throw addressInUse(address, 'the path exists and is not a socket; it was left alone');
        const why = st ? await notStale(target) : null;
        if (why) throw addressInUse(address, why);
        if (st) unlinkSync(target);
        srv = await this.#listenNet(target, hasFile, mode);
      }
    } catch (err) {
      this.#started = false;
      throw err;
    }
    this.#path = hasFile ? target : null;
    if (this.#closed) {
      closeNet(srv, this.#path, this.#identity);
      throw afunixError('ERR_SERVER_NOT_RUNNING', 'the server was closed while listen() was in progress');
    }
    this.#server = srv;
    this.#address = shown(target);
    srv.on('error', (err: AfunixError) => this.emit(TRANSIENT.has(err.code) ? 'acceptError' : 'error', err));
    debug('fallback server listening on %s', this.#address);
    this.emit('listening');
    return this;
  }

  #listenNet(target: string, hasFile: boolean, mode: number | undefined): Promise<net.Server> {
    const o = this.#options;
    // net's highWaterMark sets the readable side too; native sets only the writable one.
    const srv = net.createServer({
      allowHalfOpen: o.allowHalfOpen ?? true,
      ...(o.highWaterMark !== undefined ? { highWaterMark: o.highWaterMark } : {}),
    });
    srv.on('connection', (sock: net.Socket) => this.#accept(sock));
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        srv.off('listening', onListening);
        reject(err);
      };
      const onListening = () => {
        srv.off('error', onError);
        resolve(srv);
      };
      srv.once('error', onError);
      srv.once('listening', onListening);
      srv.listen({ path: target, backlog: o.backlog ?? 511, exclusive: true });
      // net binds and listens synchronously (errors come a tick later), so
      // the file exists now: record it and apply the mode before anything
      // else runs. A peer in another process can still connect between
      // listen() and chmod(); net offers no way to bind without listening.
      if (!srv.listening || !hasFile) return;
      try {
        const st = lstatSync(target);
        this.#identity = { dev: st.dev, ino: st.ino };
        if (mode !== undefined) chmodSync(target, mode);
      } catch (err) {
        srv.off('error', onError);
        srv.off('listening', onListening);
        srv.close(); // libuv removes the file it just created
        this.#identity = null;
        reject(err);
      }
    });
  }

  #accept(sock: net.Socket): void {
    const socket = adapt(sock, this.#address, '');
    this.#connections.add(sock);
    sock.once('close', () => this.#connections.delete(sock));
    this.emit('connection', socket);
  }

  listenFd(_fd: number): this {
    throw missing('listenFd');
  }

  address(): string {
    return this.#address;
  }

  /** Stops accepting and removes the socket file if it is still ours. Open connections stay open. */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    const srv = this.#server;
    this.#server = null;
    if (srv) closeNet(srv, this.#path, this.#identity);
    this.#closed = new Promise((resolve) => {
      // The listening fd is closed already; net's own 'close' waits for every connection.
      process.nextTick(() => {
        this.emit('close');
        resolve();
      });
    });
    return this.#closed;
  }

  ref(): this {
    this.#server?.ref();
    return this;
  }

  unref(): this {
    this.#server?.unref();
    return this;
  }
}

/** The server createServer() returns when the addon is not loaded. */
export function createFallbackServer(options: ServerOptions = {}): UnixServer {
  return new FallbackServer(options) as unknown as UnixServer;
}
