// The Electron main/helper pattern without Electron: one call spawns a child
// with a socketpair channel on fd 3 and returns a typed client for it.
import type { ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { setTimeout as delay } from 'node:timers/promises';
import { closeFd, fromFd, socketPairFds } from '@afunix/transport';
import { type ClientOptions, type RpcClient, connect } from './client.js';
import type { RpcConnection } from './connection.js';
import type { Contract } from './contract.js';
import { RpcCode, rpcError } from './errors.js';
import { type RpcServerOptions, RpcServer } from './server.js';

// node:child_process is loaded by the first spawnHelper(): a process that
// never spawns one (a client, a helper itself) need not load it at start.
let childProcess: typeof import('node:child_process') | null = null;
const loadChildProcess = () => (childProcess ??= createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process'));

/** The fd a helper finds its channel on (named in its environment too). */
export const CHANNEL_FD = 3;

// How long a helper that failed its handshake has to exit after SIGTERM
// before it is SIGKILLed: one that ignores SIGTERM would otherwise keep
// the parent's event loop alive, and nobody else has its pid.
const KILL_GRACE_MS = 1000;
// A helper that hung up is usually exiting: how long to wait for its exit
// status, which says more than the hang-up (a crash, an exit code).
const EXIT_STATUS_WAIT_MS = 250;

export interface SpawnHelperOptions<C extends Contract> extends ClientOptions<C> {
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Arguments for node itself, e.g. ['--import', 'tsx']. */
  execArgv?: string[];
  cwd?: string;
  /** Run the helper as another user (needs the privilege to switch): privilege separation. */
  uid?: number;
  gid?: number;
}

export interface Helper<C extends Contract> {
  client: RpcClient<C>;
  /**
   * The helper process. Use `child.pid` to know who is on the other end:
   * the kernel credits both ends of a socketpair to the process that
   * created it, so `client.$peer` names the parent itself here.
   */
  child: ChildProcess;
}

/** Spawns `node modulePath` with a typed RPC channel to it. */
export async function spawnHelper<C extends Contract>(modulePath: string, options: SpawnHelperOptions<C> = {}): Promise<Helper<C>> {
  const [ours, theirs] = socketPairFds('stream');
  let child: ChildProcess;
  try {
    child = loadChildProcess().spawn(process.execPath, [...(options.execArgv ?? []), modulePath, ...(options.args ?? [])], {
      stdio: ['inherit', 'inherit', 'inherit', theirs],
      env: { ...(options.env ?? process.env), AFUNIX_CHANNEL_FD: String(CHANNEL_FD) },
      cwd: options.cwd,
      ...(options.uid !== undefined ? { uid: options.uid } : {}),
      ...(options.gid !== undefined ? { gid: options.gid } : {}),
    });
  } catch (err) {
    closeFd(ours);
    throw err;
  } finally {
    closeFd(theirs); // the child has its copy on fd 3
  }
  const socket = fromFd(ours);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const died = new Promise<never>((_, reject) => {
    void exited.then(() => reject(rpcError(RpcCode.CONNECTION_CLOSED, 'the helper exited before the handshake')));
    child.once('error', reject);
  });
  try {
    const client = await Promise.race([connect<C>(socket, options), died]);
    return { client, child };
  } catch (err) {
    socket.destroy();
    // (Its hang-up usually comes first: wait a moment for how it ended.)
    if ((err as { code?: string }).code === RpcCode.CONNECTION_CLOSED) await Promise.race([exited, delay(EXIT_STATUS_WAIT_MS)]);
    stop(child);
    throw withExitStatus(err, child);
  } finally {
    died.catch(() => {});
  }
}

// The helper's exit code and signal on the error, once it has exited.
function withExitStatus(err: unknown, child: ChildProcess): unknown {
  if (child.exitCode === null && child.signalCode === null) return err;
  if (err instanceof Error) {
    err.message += ` (helper exit code ${child.exitCode}, signal ${child.signalCode})`;
    Object.assign(err, { exitCode: child.exitCode, signal: child.signalCode });
  }
  return err;
}

// SIGTERM, then SIGKILL if it is still there after KILL_GRACE_MS.
function stop(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill();
  const insist = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
  child.once('exit', () => clearTimeout(insist));
}

/** In the helper: serve the parent over the inherited channel. */
export async function serveParent<C extends Contract>(options: RpcServerOptions<C>): Promise<RpcConnection> {
  const named = process.env.AFUNIX_CHANNEL_FD;
  const fd = named ? Number(named) : CHANNEL_FD; // ('' is not fd 0)
  const server = new RpcServer<C>(options);
  return server.serve(channelOn(fd));
}

// The inherited socket, or an error that says where it was looked for.
function channelOn(fd: number) {
  try {
    return fromFd(fd);
  } catch (err) {
    const { code, errno, syscall, message } = err as NodeJS.ErrnoException;
    throw Object.assign(new Error(`serveParent: fd ${fd} (AFUNIX_CHANNEL_FD) is not a spawnHelper() channel to serve: ${message}`), { code, errno, syscall, fd, cause: err });
  }
}
