// UnixDatagram: SOCK_DGRAM, the socket type of syslog, journald and statsd,
// which Node core no longer offers. Each send is one datagram, to a bound
// address or the connected peer, optionally with fds.
import { EventEmitter } from 'node:events';
import { decodeAddress, encodeAddress } from './address.js';
import { type BoundName, bindSafely, unlinkBound } from './bind.js';
import { afunixError, check, invalidArg, systemError, unsupported, uv } from './errors.js';
import { checkBindOptions, checkDatagramOptions, optionsObject } from './options.js';
import { type FdLike, ReceivedFds, toFds } from './fds.js';
import { Kind, type NativeHandle, type OwnedHandle, native } from './native.js';
import type { Credentials } from './socket.js';

export interface DatagramOptions {
  /** The largest datagram accepted; a larger one is dropped with an 'error' (default 256 KiB). */
  maxMessageSize?: number;
  /** Ask the kernel for each sender's credentials (Linux SO_PASSCRED). */
  passCredentials?: boolean;
}

export interface DatagramInfo {
  /** The sender's address ('' if it is unnamed). */
  address: string;
  /** Descriptors that came with the datagram: take them during the event or they are closed. */
  fds: ReceivedFds | null;
  credentials: Credentials | null;
}

export interface SendOptions {
  /** Destination; omit it on a connected socket. */
  address?: string;
  fds?: readonly FdLike[] | null;
}

interface QueuedSend {
  data: Uint8Array[];
  fds: number[] | null;
  to: Buffer | null;
  address: string | undefined;
  resolve: () => void;
  reject: (err: Error) => void;
}

// A full receiver does not make an unconnected socket unwritable, so
// EAGAIN is retried on a timer; only a send to the connected peer can also
// wait for writability.
const RETRY_MS = 5;

export class UnixDatagram extends EventEmitter {
  #fd: number;
  #handle: NativeHandle | null;
  #bound: BoundName | null = null;
  #queue: QueuedSend[] = [];
  #retry: NodeJS.Timeout | null = null;
  #closed: Promise<void> | null = null;

  constructor(given?: DatagramOptions | null) {
    super();
    const n = native;
    if (!n) throw unsupported('dgram', 'the native addon is not loaded');
    // Before the socket exists: a bad option leaves nothing open.
    const options = optionsObject(given);
    checkDatagramOptions(options);
    this.#fd = check(n.socket(Kind.dgram), 'socket');
    if (options.passCredentials) {
      const r = n.setPassCred(this.#fd, true);
      if (r < 0) {
        n.close(this.#fd);
        throw systemError(r, 'setsockopt');
      }
    }
    const handle = new n.SocketHandle(this.#fd, Kind.dgram, false, UnixDatagram.#handleRead, UnixDatagram.#handleWritable) as OwnedHandle<UnixDatagram>;
    handle.owner = this;
    this.#handle = handle;
    this.#handle.setMaxMessage(options.maxMessageSize ?? 256 * 1024);
    this.#handle.readStart();
  }

  #queued(data: Uint8Array | readonly Uint8Array[], given: SendOptions | null | undefined): QueuedSend {
    if (!this.#handle) throw afunixError('ERR_SOCKET_CLOSED', 'the datagram socket is closed');
    const options = optionsObject(given);
    const pieces = Array.isArray(data) ? [...(data as readonly Uint8Array[])] : [data as Uint8Array];
    if (!pieces.every((p) => p instanceof Uint8Array)) throw invalidArg('data', 'must be a Uint8Array or an array of them');
    return {
      data: pieces,
      fds: toFds(options.fds),
      to: options.address == null ? null : encodeAddress(options.address, 'sendmsg'),
      address: options.address ?? undefined,
      resolve: () => {},
      reject: () => {},
    };
  }

  /** Binds a name (a path, '@name', or none for an autobound abstract name). */
  bind(address?: string, options?: { mode?: number | null } | null): this {
    const given = optionsObject(options);
    checkBindOptions(given); // (chmod would take 0o10000 for 0, and other modes out of range with codes of its own)
    this.#bound = bindSafely(this.#openFd(), Kind.dgram, address, given.mode ?? undefined);
    return this;
  }

  /** Sets the default destination, and accepts datagrams from it only. */
  connect(address: string): this {
    check(native!.connect(this.#openFd(), encodeAddress(address, 'connect')), 'connect', address);
    return this;
  }

  address(): string {
    const r = native!.sockName(this.#openFd(), false);
    if (typeof r === 'number') throw systemError(r, 'getsockname');
    return decodeAddress(r);
  }

  /** Sends one datagram. Resolves once the kernel took it. */
  send(data: Uint8Array | readonly Uint8Array[], options?: SendOptions | null): Promise<void> {
    let item: QueuedSend;
    try {
      item = this.#queued(data, options);
    } catch (err) {
      // (A promise-returning call fails through its promise, never by throwing.)
      return Promise.reject(err);
    }
    const done = new Promise<void>((resolve, reject) => {
      item.resolve = resolve;
      item.reject = reject;
    });
    this.#queue.push(item);
    if (this.#queue.length === 1) this.#flush();
    return done;
  }

  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    const handle = this.#handle;
    this.#handle = null;
    if (this.#retry) clearTimeout(this.#retry);
    const closed = afunixError('ERR_SOCKET_CLOSED', 'the datagram socket was closed before this datagram was sent');
    for (const item of this.#queue.splice(0)) item.reject(closed);
    if (this.#bound) unlinkBound(this.#bound);
    this.#closed = new Promise((resolve) => {
      handle!.close(() => {
        this.emit('close');
        resolve();
      });
    });
    return this.#closed;
  }

  ref(): this {
    this.#handle?.ref();
    return this;
  }

  unref(): this {
    this.#handle?.unref();
    return this;
  }

  // Once close() has begun the fd number is the kernel's to hand out again:
  // a call with it could act on some unrelated socket.
  #openFd(): number {
    if (!this.#handle) throw afunixError('ERR_SOCKET_CLOSED', 'the datagram socket is closed');
    return this.#fd;
  }

  #flush(): void {
    const handle = this.#handle;
    while (handle && this.#queue.length > 0) {
      const item = this.#queue[0]!;
      const r = native!.write(handle.id, item.data.length === 1 ? item.data[0]! : item.data, item.fds, item.to);
      if (r === uv.EAGAIN) {
        // Polled for writability, a socket that always has it would wake
        // the loop at once, every turn, until the receiver reads.
        handle.watchWritable(item.to === null);
        this.#retry ??= setTimeout(() => {
          this.#retry = null;
          this.#flush();
        }, RETRY_MS);
        return;
      }
      this.#queue.shift();
      if (r < 0) item.reject(systemError(r, 'sendmsg', item.address));
      else item.resolve();
    }
    handle?.watchWritable(false);
  }

  // Shared by every datagram socket (see OwnedHandle in native.ts).
  static #handleWritable(this: OwnedHandle<UnixDatagram>): void {
    this.owner.#flush();
  }

  static #handleRead(this: OwnedHandle<UnixDatagram>, status: number, bytes: Buffer | undefined, chunks: unknown[] | null | undefined): void {
    this.owner.#onRead(status, bytes, chunks);
  }

  #onRead(status: number, bytes: Buffer | undefined, chunks: unknown[] | null | undefined): void {
    // As node:dgram, whose datagrams each come in a callback of their own:
    // a listener's exception is uncaught, and the datagrams after it, and
    // the batch's status, are delivered all the same.
    const failure = bytes !== undefined && chunks ? this.#emitAll(bytes, chunks) : null;
    if (!failure) return this.#onStatus(status);
    try {
      this.#onStatus(status);
    } catch (error) {
      rethrowLater(error);
    }
    throw failure.error;
  }

  // Emits every datagram of a batch, each one's fds closed after its event,
  // whatever its listener does. The first exception a listener threw is
  // returned for the caller to rethrow; any later one is thrown on its own.
  #emitAll(bytes: Buffer, chunks: unknown[]): { error: unknown } | null {
    let failure: { error: unknown } | null = null;
    let offset = 0;
    for (let i = 0; i < chunks.length; i += 4) {
      const len = chunks[i] as number;
      const rawFds = chunks[i + 1] as number[] | null;
      const fds = rawFds ? new ReceivedFds(rawFds) : null;
      const addr = chunks[i + 2] as Buffer | null;
      const cred = chunks[i + 3] as number[] | null;
      try {
        this.emit('message', bytes.subarray(offset, offset + len), {
          address: addr ? decodeAddress(addr) : '',
          fds,
          credentials: cred ? { pid: cred[0]!, uid: cred[1]!, gid: cred[2]! } : null,
        } satisfies DatagramInfo);
      } catch (error) {
        if (failure) rethrowLater(error);
        else failure = { error };
      } finally {
        fds?.close();
      }
      offset += len;
    }
    return failure;
  }

  #onStatus(status: number): void {
    if (status === 0 || !this.#handle) return;
    this.emit('error', systemError(status, 'recvmsg'));
    // A datagram socket outlives a bad datagram, or a socket error that the
    // read took (and so cleared): it reads on. After any other failure
    // reading again would fail again at once, every loop turn.
    if (this.#handle && readsOnAfter(status)) this.#handle.readStart();
  }
}

// An exception that cannot be the one this call throws: uncaught all the same.
function rethrowLater(error: unknown): void {
  process.nextTick(() => {
    throw error;
  });
}

// Errors that a read consumed: one datagram's (too large, its fds lost), or
// the socket error that the addon took from SO_ERROR.
function readsOnAfter(status: number): boolean {
  return (
    status === uv.EMSGSIZE || status === native?.SocketHandle.ERR_CTRUNC || status === uv.ECONNRESET || status === uv.ECONNREFUSED
  );
}

export function createDatagram(options?: DatagramOptions | null): UnixDatagram {
  return new UnixDatagram(options);
}
