// The processes of the RPC benchmark (suites/rpc.mjs): a Peer is one
// rpc-peer.mjs process (a server, or a client running a workload) that the
// suite drives over its IPC channel; withServer() runs a workload against a
// fresh server and stops every process it started, whatever happens.
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const peerFile = join(dirname(fileURLToPath(import.meta.url)), 'rpc-peer.mjs');
const TIMEOUT_MS = 180_000;
const NOFILE = 65_536;

export const works = (cmd, args) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
export const canPin = works('taskset', ['-c', '0', 'true']);
const canPrlimit = works('prlimit', [`--nofile=${NOFILE}:${NOFILE}`, 'true']);

// Extra node flags for every peer, for profiling a workload, e.g.
// AFUNIX_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'.
const nodeArgs = process.env.AFUNIX_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];

let seq = 0;
/** A fresh path in the temp directory, e.g. tempPath('sock'). */
export const tempPath = (ext) => join(tmpdir(), `afunix-rpcbench-${process.pid}-${seq++}.${ext}`);
export const now = () => process.hrtime.bigint();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Peer {
  #waiters = [];
  #inbox = [];
  #rid = 0;
  constructor(role, system, address, options, { pinned = false, nofile = false } = {}) {
    this.what = `${system.name} ${options.workload ?? ''} ${role}`;
    const cmd = [process.execPath, '--expose-gc', ...nodeArgs, peerFile, role, system.file, system.name, address, JSON.stringify(options)];
    if (pinned) cmd.unshift('taskset', '-c', '0');
    if (nofile && canPrlimit) cmd.unshift('prlimit', `--nofile=${NOFILE}:${NOFILE}`, '--');
    this.child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => {
        this.gone = signal ?? `code ${code}`;
        for (const w of this.#waiters.splice(0)) w.reject(new Error(`${this.what}: exited (${this.gone})`));
        resolve();
      }),
    );
    this.child.on('message', (m) => {
      const i = this.#waiters.findIndex((w) => w.match(m));
      if (i < 0) return this.#inbox.push(m);
      const [w] = this.#waiters.splice(i, 1);
      w.resolve(m);
    });
  }

  /** The next message that satisfies `match`. */
  next(match, what = 'a message') {
    const i = this.#inbox.findIndex(match);
    if (i >= 0) return Promise.resolve(this.#inbox.splice(i, 1)[0]);
    if (this.gone) return Promise.reject(new Error(`${this.what}: exited (${this.gone})`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.what}: no ${what} in ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS);
      const done = (f) => (v) => {
        clearTimeout(timer);
        f(v);
      };
      this.#waiters.push({ match, resolve: done(resolve), reject: done(reject) });
    });
  }

  ask(cmd, extra = {}) {
    const rid = ++this.#rid;
    this.child.send({ rid, cmd, ...extra });
    return this.next((m) => m.rid === rid, `answer to ${cmd}`);
  }

  async stop() {
    if (this.gone) return;
    if (this.child.connected) this.child.send('exit', () => {});
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(t);
  }
}

export async function withServer(system, opts, fn) {
  const path = system.transport === 'unix' ? tempPath('sock') : '';
  const server = new Peer('server', system, path, { workload: opts.workload }, opts);
  const clients = [];
  try {
    const { address } = await server.next((m) => m.ready, 'ready');
    const client = (options, popts = {}) => {
      const c = new Peer('client', system, address, { workload: opts.workload, ...options }, { ...opts, ...popts });
      clients.push(c);
      return c;
    };
    return await fn(server, client, address);
  } finally {
    await Promise.all([...clients, server].map((p) => p.stop()));
    if (path) rmSync(path, { force: true });
  }
}

export async function until(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const coldFile = join(dirname(peerFile), 'rpc-cold.mjs');
const COLD_TIMEOUT_MS = 30_000;

/**
 * One rpc-cold.mjs process, from spawn to exit: its wall time in ms and the
 * phases it printed. `args` empty: Node alone, loading nothing.
 */
export function coldProcess(args) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(process.execPath, [...nodeArgs, coldFile, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), COLD_TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const wall_ms = Number(now() - t0) / 1e6;
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`cold client ${args[1] ?? '(node alone)'}: ${signal ?? `exit code ${code}`}${signal === 'SIGKILL' ? ` (still running after ${COLD_TIMEOUT_MS / 1000} s)` : ''}`));
      try {
        resolve({ wall_ms, ...JSON.parse(out) });
      } catch {
        reject(new Error(`cold client ${args[1] ?? '(node alone)'}: printed ${JSON.stringify(out.slice(0, 200))}`));
      }
    });
  });
}
