// Creating connected sockets: connect(), socketPair(), fromFd().
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeAddress } from './address.js';
import { abortError, afunixError, check, invalidArg, systemError, unsupported, uv } from './errors.js';
import { fallbackConnect } from './fallback.js';
import { checkFdArg } from './fds.js';
import { Kind, type NativeBinding, type SocketType, native } from './native.js';
import { checkConnectOptions, checkSocketOptions, optionsObject } from './options.js';
import { UnixSocket, type UnixSocketOptions } from './socket.js';

export type ConnectionType = Exclude<SocketType, 'dgram'>;

export interface ConnectOptions extends UnixSocketOptions {
  /** 'stream' (default) or 'seqpacket'. */
  type?: ConnectionType;
  /** Give up after this many milliseconds (a full listen backlog is retried until then; default 10 s). */
  timeout?: number;
  signal?: AbortSignal;
}

function requireNative(feature: string) {
  if (!native) throw unsupported(feature, 'the native addon is not loaded');
  return native;
}

export function connectionType(type: string | undefined): ConnectionType {
  const t = type ?? 'stream';
  if (t !== 'stream' && t !== 'seqpacket') throw invalidArg('type', `must be 'stream' or 'seqpacket', got ${String(type)}`);
  return t;
}

/**
 * Connects to a listening socket. A full listen backlog (EAGAIN on Linux)
 * is retried with backoff until `timeout`, as a blocking connect would wait.
 */
export async function connect(address: string, given?: ConnectOptions | null): Promise<UnixSocket> {
  const options = optionsObject(given);
  checkConnectOptions(options);
  if (!native) return fallbackConnect(address, options); // plain streams through node:net
  const n = requireNative('connect');
  const type = connectionType(options.type);
  const bytes = encodeAddress(address, 'connect');
  const deadline = Date.now() + (options.timeout ?? 10_000);
  let delay = 1;
  for (;;) {
    if (options.signal?.aborted) throw abortError(options.signal.reason);
    const fd = check(n.socket(Kind[type]), 'socket');
    const r = n.connect(fd, bytes);
    if (r === 0) return socketOwning(fd, type, options);
    if (r === n.EINPROGRESS) return waitConnected(fd, type, address, options, deadline);
    n.close(fd);
    if (r !== uv.EAGAIN) throw systemError(r, 'connect', address);
    if (Date.now() >= deadline) {
      throw afunixError('ETIMEDOUT', `connect ETIMEDOUT ${address} (the listen backlog stayed full)`, {
        syscall: 'connect',
        address,
      });
    }
    await backoff(delay, options.signal);
    delay = Math.min(delay * 2, 50);
  }
}

/** setTimeout's longest delay; a longer one fires at once. */
const MAX_TIMER = 2 ** 31 - 1;

/** The pause before another try at a full backlog; an abort meanwhile rejects with ABORT_ERR. */
export async function backoff(ms: number, signal: AbortSignal | undefined): Promise<void> {
  await sleep(ms, undefined, { signal }).catch((err: unknown) => {
    throw signal?.aborted ? abortError(signal.reason) : err;
  });
}

/**
 * Calls `expired` at `deadline` (a Date.now() time; Infinity: never), in
 * steps past setTimeout's range, which would fire at once. Returns what
 * calls it off.
 */
export function atDeadline(deadline: number, expired: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const arm = (left: number): void => {
    timer = setTimeout(() => (left > MAX_TIMER ? arm(left - MAX_TIMER) : expired()), Math.min(left, MAX_TIMER));
  };
  if (deadline !== Infinity) arm(Math.max(0, deadline - Date.now()));
  return () => clearTimeout(timer);
}

// Where connect() completes asynchronously (macOS, Windows): wait until the
// socket is writable, then read the outcome from SO_ERROR.
async function waitConnected(
  fd: number,
  type: ConnectionType,
  address: string,
  options: ConnectOptions,
  deadline: number,
): Promise<UnixSocket> {
  const socket = socketOwning(fd, type, options);
  let cancel = (): void => {};
  const timeout = new Promise<never>((_, reject) => {
    cancel = atDeadline(deadline, () => reject(afunixError('ETIMEDOUT', `connect ETIMEDOUT ${address}`)));
  });
  try {
    await Promise.race([socket.whenWritable(), timeout]);
    check(native!.socketError(fd), 'connect', address);
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    cancel();
  }
}

// A socket takes its fd only once constructed: a constructor that throws
// (a bad option, a failing setsockopt) leaves the fd to us to close.
function socketOwning(fd: number, type: ConnectionType, options: UnixSocketOptions): UnixSocket {
  try {
    return new UnixSocket(fd, type, options);
  } catch (err) {
    native!.close(fd);
    throw err;
  }
}

/** Two connected sockets, e.g. for a parent and the child it spawns. */
export function socketPair(type: ConnectionType = 'stream', given?: UnixSocketOptions | null): [UnixSocket, UnixSocket] {
  const n = requireNative('socketPair');
  const t = connectionType(type);
  const options = optionsObject(given);
  checkSocketOptions(options);
  const r = n.socketPair(Kind[t]);
  if (typeof r === 'number') throw systemError(r, 'socketpair');
  let first: UnixSocket;
  try {
    first = socketOwning(r[0], t, options);
  } catch (err) {
    n.close(r[1]);
    throw err;
  }
  try {
    return [first, socketOwning(r[1], t, options)];
  } catch (err) {
    first.destroy();
    throw err;
  }
}

/** The raw fd pair, for handing one end to a child process's stdio. */
export function socketPairFds(type: ConnectionType = 'stream'): [number, number] {
  const n = requireNative('socketPair');
  // Blocking, as a program that is not Node expects its stdio to be: one
  // that read a non-blocking fd 3 failed with EAGAIN at once. (fromFd()
  // makes the end it adopts non-blocking.)
  const r = n.socketPair(Kind[connectionType(type)], true);
  if (typeof r === 'number') throw systemError(r, 'socketpair');
  return r;
}

/**
 * Takes a socket handed in by its number (fromFd, listenFd): non-blocking
 * and close-on-exec from now. One that a socket of this thread already owns
 * is refused: both would close it, and one would close the other's reuse.
 */
export function adoptFd(n: NativeBinding, fd: number, listener = false): void {
  const r = n.adopt(fd, listener);
  if (r === uv.EEXIST) throw afunixError('EEXIST', `fd ${fd} already belongs to a socket of this process`, { fd });
  // (A connected or unbound socket would only fail later, at accept; a
  // listening one taken for a connection, at its first write.)
  if (r === uv.EINVAL && listener) throw afunixError('EINVAL', `fd ${fd} is not a listening socket (listen() was not called on it)`, { fd });
  if (r === uv.EINVAL) throw afunixError('EINVAL', `fd ${fd} is a listening socket: adopt it with listenFd()`, { fd });
  check(r, 'fcntl');
}

/**
 * Adopts an inherited connected socket (e.g. fd 3 set up by a parent). The
 * socket takes ownership of the fd: it is non-blocking and CLOEXEC from now.
 */
export function fromFd(fd: number, given?: UnixSocketOptions | null): UnixSocket {
  const n = requireNative('fromFd');
  checkFdArg(fd);
  const options = optionsObject(given);
  checkSocketOptions(options);
  const kind = check(n.socketKind(fd), 'getsockopt');
  if (kind === Kind.dgram) throw afunixError('EPROTOTYPE', `fd ${fd} is a datagram socket: use the datagram API`);
  adoptFd(n, fd);
  try {
    return new UnixSocket(fd, kind === Kind.seqpacket ? 'seqpacket' : 'stream', options);
  } catch (err) {
    // The event loop already watches it: Node's own handle of it (the IPC
    // channel of child_process.fork() is fd 3), not one of ours.
    if ((err as { code?: string }).code !== 'EEXIST') throw err;
    throw afunixError('EEXIST', `fd ${fd} is already watched by this process's event loop (a Node handle of its own, such as the IPC channel of child_process.fork()); it stays the caller's`, { fd, syscall: 'uv_poll_init' });
  }
}
