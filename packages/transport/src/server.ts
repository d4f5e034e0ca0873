// UnixServer: listens on a path, an @abstract name or an autobound name, or
// adopts a listening fd (socket activation), and accepts in batches.
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { decodeAddress } from './address.js';
import { type BoundName, SETUP_GRACE_MS, bindSafely, isStartingThere, stillBound, unlinkBound } from './bind.js';
import { adoptFd, connectionType, type ConnectionType } from './connect.js';
import { afunixError, check, invalidArg, systemError, unsupported, uv } from './errors.js';
import { checkServerOptions, optionsObject } from './options.js';
import { checkFdArg } from './fds.js';
import { createFallbackServer } from './fallback.js';
import { Kind, type NativeHandle, type OwnedHandle, native } from './native.js';
import { UnixSocket, type UnixSocketOptions } from './socket.js';

const debug = debuglog('afunix');

export interface ServerOptions extends UnixSocketOptions {
  /** 'stream' (default) or 'seqpacket'. */
  type?: ConnectionType;
  /** File mode for the socket (e.g. 0o600), in force before anyone can connect. */
  mode?: number;
  /** listen() backlog (default 511; the kernel caps it at somaxconn). */
  backlog?: number;
}

// Out of fds or memory: accepting again at once would spin, so wait.
const TRANSIENT = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);

export class UnixServer extends EventEmitter {
  readonly type: ConnectionType;
  #options: ServerOptions;
  #fd = -1;
  #handle: NativeHandle | null = null;
  #bound: BoundName | null = null;
  #listening = false;
  #backoff = 0;
  #retry: NodeJS.Timeout | null = null;
  #closed: Promise<void> | null = null;
  // Accepted sockets still open: a count, as nothing else is asked of them
  // (a Set of them cost each idle connection ~40 bytes).
  #open = 0;
  // Given to every socket it accepts, which calls it once closed: one
  // function for all of them.
  readonly #forget: () => void;

  constructor(options: ServerOptions = {}) {
    super();
    this.type = connectionType(options.type);
    this.#options = options;
    this.#forget = () => {
      this.#open--;
    };
  }

  /** Number of accepted sockets still open. */
  get connections(): number {
    return this.#open;
  }

  get listening(): boolean {
    return this.#handle !== null;
  }

  /**
   * Binds and listens. Without an address the kernel picks an abstract one
   * (Linux autobind); address() tells which.
   */
  async listen(address?: string): Promise<this> {
    const n = native;
    if (!n) throw unsupported('UnixServer', 'the native addon is not loaded');
    if (this.#handle || this.#listening || this.#closed) throw afunixError('ERR_SERVER_ALREADY_LISTEN', 'listen() was already called on this server');
    this.#listening = true;
    const fd = check(n.socket(Kind[this.type]), 'socket');
    try {
      this.#inheritPassCred(fd);
      this.#bound = await this.#bindAndListen(fd, address);
      // Another server that took our file for stale, between our bind() and
      // listen(), has the path now: ours would listen where nobody can reach.
      if (!stillBound(this.#bound)) {
        this.#bound = null;
        throw afunixError('EADDRINUSE', `bind EADDRINUSE ${address} (another server took the path while this one started)`, { syscall: 'bind', address });
      }
      if (this.#closed) throw closedWhileListening();
    } catch (err) {
      n.close(fd);
      if (this.#bound) unlinkBound(this.#bound);
      this.#bound = null;
      this.#listening = false;
      throw err;
    }
    this.#start(fd);
    return this;
  }

  /** Serves on a socket that is already listening (e.g. from systemd). The server owns it now. */
  listenFd(fd: number): this {
    const n = native;
    if (!n) throw unsupported('listenFd', 'the native addon is not loaded');
    checkFdArg(fd);
    // (A second listener would be orphaned: still accepting, never closed.)
    if (this.#handle || this.#listening || this.#closed) throw afunixError('ERR_SERVER_ALREADY_LISTEN', 'listenFd(): this server already listens, or was closed');
    const kind = check(n.socketKind(fd), 'getsockopt');
    if (kind !== Kind[this.type]) throw afunixError('EPROTOTYPE', `fd ${fd} is not a ${this.type} socket`);
    adoptFd(n, fd, true);
    this.#inheritPassCred(fd);
    this.#start(fd);
    return this;
  }

  // SO_PASSCRED on the listener, so that accept() hands it to each new
  // socket at once. Set only afterwards on the accepted socket, a peer that
  // writes straight after connecting could land a chunk in between, and that
  // chunk came with the kernel's "no credentials" (pid 0, uid and gid 65534:
  // nobody) instead of the sender's.
  #inheritPassCred(fd: number): void {
    if (this.#options.passCredentials) check(native!.setPassCred(fd, true), 'setsockopt');
  }

  #start(fd: number): void {
    this.#fd = fd;
    const handle = new native!.SocketHandle(fd, Kind[this.type], true, UnixServer.#handleAccept, noop) as OwnedHandle<UnixServer>;
    handle.owner = this;
    this.#handle = handle;
    check(this.#handle.readStart(), 'poll');
    debug('server fd=%d listening on %s', fd, this.address());
    this.emit('listening');
  }

  /** The bound address: a path, '@name' for abstract (autobound too). */
  address(): string {
    if (this.#fd < 0) return '';
    const r = native!.sockName(this.#fd, false);
    if (typeof r === 'number') throw systemError(r, 'getsockname');
    return decodeAddress(r);
  }

  // bindSafely() and listen(), waiting out a socket file that another
  // server may be starting on (SETUP_GRACE_MS, or its lock held): it soon
  // either listens, and this one gets EADDRINUSE, or, still silent, is old
  // enough to be replaced as stale.
  async #bindAndListen(fd: number, address: string | undefined): Promise<BoundName> {
    const giveUp = Date.now() + 4 * SETUP_GRACE_MS; // (a file made anew each time)
    // Under the path's lock (see bind-lock.ts): once it listens, our file answers for us.
    const listen = () => check(native!.listen(fd, this.#options.backlog ?? 511), 'listen', address);
    for (;;) {
      try {
        return bindSafely(fd, Kind[this.type], address, this.#options.mode ?? undefined, listen);
      } catch (err) {
        if (!isStartingThere(err) || Date.now() > giveUp) throw err;
      }
      await sleep(SETUP_GRACE_MS / 10);
      if (this.#closed) throw closedWhileListening();
    }
  }

  /**
   * Stops accepting and removes the socket file (if it is still ours).
   * Connections already accepted stay open; end them as you see fit.
   */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    if (this.#retry) clearTimeout(this.#retry);
    const handle = this.#handle;
    this.#handle = null;
    // Its number may soon belong to another socket (address() is '' now).
    this.#fd = -1;
    if (this.#bound) unlinkBound(this.#bound);
    this.#closed = new Promise((resolve) => {
      const done = () => {
        this.emit('close');
        resolve();
      };
      if (handle) handle.close(done);
      else process.nextTick(done);
    });
    return this.#closed;
  }

  ref(): this {
    this.#handle?.ref();
    this.#retry?.ref();
    return this;
  }

  unref(): this {
    this.#handle?.unref();
    this.#retry?.unref();
    return this;
  }

  // Shared by every server (see OwnedHandle in native.ts).
  static #handleAccept(this: OwnedHandle<UnixServer>, status: number, fds: number[] | undefined): void {
    // (A poll error comes without a list.)
    this.owner.#onAccept(status, fds ?? []);
  }

  #onAccept(status: number, fds: number[]): void {
    let taken = 0;
    try {
      while (taken < fds.length && this.#handle) this.#adopt(fds[taken++]!);
    } finally {
      // Closed meanwhile, or a 'connection' listener threw: the connections
      // not yet adopted have no other owner (the native side forgets them
      // once this call returns, by a throw too).
      for (let k = taken; k < fds.length; k++) native!.close(fds[k]!);
    }
    if (status < 0) this.#acceptFailed(status);
    else this.#backoff = 0;
  }

  #adopt(fd: number): void {
    let socket: UnixSocket;
    try {
      socket = new UnixSocket(fd, this.type, this.#options, this.#forget);
    } catch (err) {
      native!.close(fd);
      this.emit('error', err);
      return;
    }
    this.#open++;
    // A greeting written by the listeners leaves when they return, not on a
    // tick of its own (see UnixSocket.beginBatch()).
    socket.beginBatch();
    try {
      this.emit('connection', socket);
    } finally {
      socket.endBatch();
    }
  }

  // The native side stopped watching; accepting goes on after a growing
  // pause, also after an error that is not a shortage (as net's server goes
  // on listening after its 'error'), unless a listener closed the server.
  #acceptFailed(status: number): void {
    const err = systemError(status, 'accept');
    this.#backoff = Math.min(this.#backoff ? this.#backoff * 2 : 10, 1000);
    debug('server fd=%d %s, retrying accept in %d ms', this.#fd, err.code, this.#backoff);
    this.emit(TRANSIENT.has(err.code) ? 'acceptError' : 'error', err);
    if (!this.#handle) return;
    this.#retry = setTimeout(() => {
      this.#retry = null;
      this.#handle?.readStart();
    }, this.#backoff);
  }
}

export function createServer(options?: ServerOptions, onConnection?: (socket: UnixSocket) => void): UnixServer;
export function createServer(onConnection?: (socket: UnixSocket) => void): UnixServer;
export function createServer(
  a?: ServerOptions | ((socket: UnixSocket) => void),
  b?: (socket: UnixSocket) => void,
): UnixServer {
  const options = typeof a === 'function' ? {} : optionsObject(a);
  checkServerOptions(options);
  const listener = typeof a === 'function' ? a : b;
  if (listener !== undefined && typeof listener !== 'function') throw invalidArg('onConnection', `must be a function; received ${typeof listener}`);
  // Without the addon, a net-backed server with the same stream surface.
  const server = native ? new UnixServer(options) : createFallbackServer(options);
  if (listener) server.on('connection', listener);
  return server;
}

function noop(): void {
  // A listening socket is never watched for writability.
}

function closedWhileListening() {
  return afunixError('ERR_SERVER_NOT_RUNNING', 'close() was called while listen() was binding');
}
