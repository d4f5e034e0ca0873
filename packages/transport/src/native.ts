// Loads the addon. A missing or broken build is not fatal: `native` is null
// and the package runs plain stream sockets through Node's net instead.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type ReadCallback = (status: number, bytes: Buffer | undefined, chunks: unknown[] | null | undefined) => void;
// Stream and seqpacket: a batch under 4 KiB comes as (pool, offset, length),
// a slice of an ArrayBuffer shared with other reads (see socket.ts poolView);
// a read into a target (setReadTarget) as (target, offset, length).
export type StreamReadCallback = (
  status: number,
  bytes: Buffer | ArrayBuffer | Uint8Array | undefined,
  chunks: unknown[] | null | undefined,
  offset?: number,
  length?: number,
) => void;
export type AcceptCallback = (status: number, fds: number[]) => void;

export interface NativeHandle {
  readStart(): number;
  readStop(): number;
  watchWritable(on: boolean): number;
  /** What native.write() finds this handle by. */
  readonly id: number;
  close(onClosed?: () => void): void;
  ref(): void;
  unref(): void;
  setMaxMessage(bytes: number): void;
  /** Stream only: the next read goes to buffer[offset, offset + length) (null: anywhere). */
  setReadTarget(buffer: Uint8Array | null, offset?: number, length?: number): void;
  /** [data0, fds0, data1, fds1, ...] as whole messages: how many were sent, or a negative error. */
  writeMessages(list: Array<Uint8Array | Uint8Array[] | number[] | null>): number;
}

/**
 * A handle calls its read and writable callbacks with itself as `this`;
 * `owner` leads from it to the socket, server or datagram socket it serves,
 * so that one pair of functions serves every handle of a kind (closures of
 * their own, and their contexts, cost each idle connection ~190 bytes; the
 * addon also keeps one pair of references for them).
 */
export interface OwnedHandle<Owner> extends NativeHandle {
  owner: Owner;
}

export interface NativeBinding {
  SocketHandle: {
    new (fd: number, kind: number, listener: boolean, onRead: ReadCallback | StreamReadCallback | AcceptCallback, onWritable: () => void): NativeHandle;
    readonly ERR_CTRUNC: number;
  };
  /** sendmsg on a SocketHandle (by its id): the bytes the kernel took, or a negative error code. */
  write(id: number, data: Uint8Array | Uint8Array[], fds?: number[] | null, to?: Uint8Array | null): number;
  socket(kind: number): number;
  /** Non-blocking and close-on-exec; `blocking`: close-on-exec only. */
  socketPair(kind: number, blocking?: boolean): number | [number, number];
  bind(fd: number, address: Uint8Array | null): number;
  connect(fd: number, address: Uint8Array): number;
  listen(fd: number, backlog: number): number;
  shutdown(fd: number, how: 0 | 1 | 2): number;
  close(fd: number): number;
  /** flock(LOCK_EX | LOCK_NB) on a file opened by node:fs: 0, EAGAIN if held, or another error. */
  tryLock(fd: number): number;
  /** Received fds that JavaScript code took: never closed for it if a delivery is cut short. */
  claim(fds: number[]): void;
  /** Received fds a library keeps for its user: closed at the environment's teardown unless closed or claimed first. */
  keep(fds: number[]): void;
  sockName(fd: number, peer: boolean): number | Buffer;
  peerCredentials(fd: number): number | [number, number, number];
  peerPidfd(fd: number): number;
  setPassCred(fd: number, on: boolean): number;
  socketError(fd: number): number;
  socketKind(fd: number): number;
  /** EEXIST if a handle owns it; with `listener`, EINVAL if it does not listen. */
  adopt(fd: number, listener: boolean): number;
  setBufferSize(fd: number, send: boolean, bytes: number): number;
  getBufferSize(fd: number, send: boolean): number;
  platform: 'unix' | 'win32';
  /** A connect that completes later (macOS, Windows); libuv has no name for it. */
  EINPROGRESS: number;
}

function load(): { binding: NativeBinding | null; error: Error | null } {
  if (process.env.AFUNIX_FORCE_FALLBACK) {
    return { binding: null, error: new Error('AFUNIX_FORCE_FALLBACK is set') };
  }
  const require = createRequire(import.meta.url);
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  try {
    // AFUNIX_NATIVE_PATH names a .node file to load instead of the package's
    // own build: scripts/asan.sh points it at the sanitizer build in
    // build-asan/, so that the same tests run against that binary.
    const explicit = process.env.AFUNIX_NATIVE_PATH;
    if (explicit) return { binding: require(explicit) as NativeBinding, error: null };
    // A build from source is where node-gyp-build looks first; found
    // directly it costs a fresh process ~1 ms rather than ~4.5 (loading
    // node-gyp-build and its search). Prebuilds need its choice of file,
    // and so do its two overrides.
    const built = join(root, 'build', 'Release', 'afunix.node');
    const overridden = process.env.PREBUILDS_ONLY || process.env['@AFUNIX/TRANSPORT_PREBUILD'];
    if (!overridden && existsSync(built)) return { binding: require(built) as NativeBinding, error: null };
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => NativeBinding;
    return { binding: nodeGypBuild(root), error: null };
  } catch (err) {
    return { binding: null, error: err as Error };
  }
}

const loaded = load();

/** The addon, or null when it could not be loaded (see `loadError`). */
export const native: NativeBinding | null = loaded.binding;
/** Why the addon could not be loaded, if it could not. */
export const loadError: Error | null = loaded.error;

export const Kind = { stream: 0, seqpacket: 1, dgram: 2 } as const;
export type SocketType = keyof typeof Kind;
