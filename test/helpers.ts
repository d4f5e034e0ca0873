// Shared by the cross-package reliability tests: the target service in its
// own process, a raw peer that sends whatever it is told, and small waits.
// framing and transport are imported from their built dist/, the same module
// instances @afunix/rpc uses, so that instanceof checks agree.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { encodeHeader } from '../packages/framing/dist/index.js';
import { type ConnectionType, type UnixSocket, connect as connectSocket } from '../packages/transport/dist/index.js';
import { encode, encodeToBuffer } from '../packages/rpc/src/codec.js';
import { Msg, PROTOCOL_VERSION, type RpcClient, connect } from '../packages/rpc/src/index.js';

export const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

export interface TargetStats {
  pid: number;
  fds: number;
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  cpuMicros: number;
  eventLoopDelay: { p50: number; p99: number; max: number };
  connections: number;
  polluted: boolean;
  counts: {
    handshakeErrors: Record<string, number>;
    disconnects: Record<string, number>;
    acceptErrors: Record<string, number>;
    connections: number;
    calls: number;
    streamed: number;
    cancelled: number;
  };
}

export interface TargetContract {
  methods: {
    add(a: number, b: number): number;
    echo(v: unknown): unknown;
    sink(...args: unknown[]): number;
    delay(ms: number, value: number): number;
    count(n: number, ms: number): AsyncIterable<number>;
    feed(n: number, size: number): AsyncIterable<Buffer>;
    publish(n: number, size: number): number;
    stats(): TargetStats;
    resetDelay(): boolean;
    gc(): boolean;
  };
  events: { tick(data: Buffer): void };
}

export interface TargetOptions {
  allow?: unknown;
  maxInFlight?: number;
  maxMessageSize?: number;
  maxOutboundBytes?: number;
  handshakeTimeout?: number;
  mode?: number;
  type?: ConnectionType;
}

export interface Target {
  child: ChildProcess;
  pid: number;
  address: string;
  /** A client of its own, opened at start, for stats() and the like. */
  monitor: RpcClient<TargetContract>;
  stats(): Promise<TargetStats>;
  /** SIGKILL, and wait for the exit. */
  kill(): Promise<void>;
}

/**
 * Starts test/fixtures/target.mjs and waits until it listens. `wrap` runs it
 * under a command (e.g. ['prlimit', '--nofile=64']).
 */
export async function startTarget(
  address: string,
  options: TargetOptions = {},
  spawnOptions: { wrap?: string[]; uid?: number; gid?: number; nodeArgs?: string[] } = {},
): Promise<Target> {
  const argv = [...(spawnOptions.nodeArgs ?? []), join(fixtures, 'target.mjs'), address, JSON.stringify(options)];
  const [cmd, ...args] = spawnOptions.wrap ? [...spawnOptions.wrap, process.execPath, ...argv] : [process.execPath, ...argv];
  const child = spawn(cmd!, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
    ...(spawnOptions.uid !== undefined ? { uid: spawnOptions.uid, gid: spawnOptions.gid } : {}),
  });
  const lines = createInterface({ input: child.stdout! });
  const { pid } = await new Promise<{ pid: number }>((resolve, reject) => {
    lines.once('line', (line) => resolve(JSON.parse(line) as { pid: number }));
    child.once('exit', (code, signal) => reject(new Error(`target exited early (code ${code}, signal ${signal})`)));
  });
  let monitor: RpcClient<TargetContract>;
  try {
    monitor = await connect<TargetContract>(address, { type: options.type });
  } catch (err) {
    child.kill('SIGKILL'); // no one else holds it: it would outlive the run
    throw err;
  }
  return {
    child,
    pid,
    address,
    monitor,
    stats: () => monitor.stats(),
    async kill() {
      await monitor.$close().catch(() => {});
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export function tempDir(prefix = 'afunix-rel-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Open fds of a process (ours by default), from /proc. */
export function openFds(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Resolves once cond() holds; fails after `ms` (a liveness bound, not a speed check). */
export async function eventually(cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`${what} not reached within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Rejects with a clear message if `p` does not settle within `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
    }),
  ]);
}

// ---------------------------------------------------------------- the wire

/** One frame around an arbitrary payload (fdCount: what the header declares). */
export function frame(payload: Uint8Array, fdCount = 0): Buffer {
  return Buffer.concat([encodeHeader(payload.length, fdCount), payload]);
}

/** One frame holding an encoded message, e.g. [Msg.REQUEST, 1, 'add', [1, 2]]. */
export function messageFrame(message: unknown[], fdCount = 0): Buffer {
  return frame(encodeToBuffer(message), fdCount);
}

export const helloFrame = (hello: object = { protocol: PROTOCOL_VERSION, streams: [] }): Buffer => messageFrame([Msg.HELLO, hello]);

export interface RawPeer {
  socket: UnixSocket;
  /** Bytes received so far. */
  received(): Buffer;
  /** Resolves once the connection is over: how ('end', 'close', 'error CODE'). */
  closed: Promise<string>;
  send(bytes: Uint8Array, fds?: number[]): void;
  destroy(): void;
}

/** A peer on the byte level, for breaking the protocol on purpose. */
export async function rawPeer(address: string, type: ConnectionType = 'stream'): Promise<RawPeer> {
  const socket = await connectSocket(address, { type });
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {}); // seen through `closed`
  const closed = new Promise<string>((resolve) => {
    socket.once('end', () => resolve('end'));
    socket.once('error', (err: Error & { code?: string }) => resolve(`error ${err.code}`));
    socket.once('close', () => resolve('close'));
  });
  return {
    socket,
    received: () => Buffer.concat(chunks),
    closed,
    send(bytes, fds) {
      if (socket.destroyed) return;
      if (fds && fds.length > 0) socket.send(bytes, fds);
      else socket.write(bytes);
    },
    destroy: () => socket.destroy(),
  };
}

/** Sums the counts of a { code: n } table. */
export function total(table: Record<string, number>): number {
  return Object.values(table).reduce((a, b) => a + b, 0);
}

/** What changed in a { code: n } table between two snapshots. */
export function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [code, n] of Object.entries(after)) if (n - (before[code] ?? 0) > 0) out[code] = n - (before[code] ?? 0);
  return out;
}

/** One line of figures, picked up by docs/reliability.md's tables. */
export function report(what: string, figures: Record<string, unknown>): void {
  process.stdout.write(`[reliability] ${what}: ${JSON.stringify(figures)}\n`);
}
