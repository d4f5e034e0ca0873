// Shared by the transport tests: temp dirs, fd accounting through
// /proc/self/fd, event-driven waits, and child processes that report
// what they saw as JSON lines on stdout.
import { type ChildProcess, spawn, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, fstatSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { UnixSocket } from '../src/index.js';

export const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
/** The built package, which child processes and workers import. */
export const distIndex = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.js');

export function requireDist(): void {
  if (!existsSync(distIndex)) {
    throw new Error(`${distIndex} is missing: build it first (cd packages/transport && npx pnpm@10.34.9 run build)`);
  }
}

export function tempDir(): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), 'afunix-test-'));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Open descriptors of this process, by number, with what they point at. */
export function openFds(): Map<number, string> {
  const out = new Map<number, string>();
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      out.set(Number(name), readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // The directory handle readdirSync used, closed by now.
    }
  }
  return out;
}

export function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

export function fdTarget(fd: number): string {
  return readlinkSync(`/proc/self/fd/${fd}`);
}

/** Describes how the fd table differs from a snapshot (for failure messages). */
export function fdDiff(before: Map<number, string>): string {
  const now = openFds();
  const added = [...now].filter(([fd, t]) => before.get(fd) !== t).map(([fd, t]) => `+${fd} ${t}`);
  const gone = [...before].filter(([fd, t]) => now.get(fd) !== t).map(([fd, t]) => `-${fd} ${t}`);
  return [...added, ...gone].join(', ') || 'no difference';
}

/** Descriptors open now that were not in the snapshot (by number and target). */
export function addedSince(before: Map<number, string>): string[] {
  return [...openFds()].filter(([fd, t]) => before.get(fd) !== t).map(([fd, t]) => `${fd} ${t}`);
}

/** Destroys sockets and resolves once each has really closed (its fd is gone). */
export async function destroyAll(list: UnixSocket[]): Promise<void> {
  await Promise.all(
    list.splice(0).map((s) => {
      if (s.closed) return undefined;
      const closed = once(s, 'close');
      s.destroy();
      return closed;
    }),
  );
}

/**
 * Waits until `check` holds, re-checking as the event loop turns (closes
 * finish in libuv callbacks). Fails with `what` after a generous deadline.
 */
export async function waitFor(check: () => boolean, what: () => string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Resolves with everything the socket delivers until 'end'. */
export function collect(sock: UnixSocket): Promise<Buffer> {
  const parts: Buffer[] = [];
  sock.on('data', (d: Buffer) => parts.push(d));
  return once(sock, 'end').then(() => Buffer.concat(parts));
}

/** Deterministic bytes: the same (seed, length) always gives the same data. */
export function pattern(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** A child process whose stdout carries one JSON object per line. */
export class Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #queue: unknown[] = [];
  #waiters: Array<(v: unknown) => void> = [];
  #stderr = '';

  constructor(command: string, args: string[], options: SpawnOptions = {}) {
    this.proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    this.proc.stderr?.on('data', (d: Buffer) => (this.#stderr += d.toString()));
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve({ code, signal }));
    });
    if (this.proc.stdout) {
      createInterface({ input: this.proc.stdout }).on('line', (line) => {
        const msg: unknown = JSON.parse(line);
        const w = this.#waiters.shift();
        if (w) w(msg);
        else this.#queue.push(msg);
      });
    }
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** The next JSON line; rejects if the child exits first. */
  next<T = Record<string, unknown>>(): Promise<T> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift() as T);
    return new Promise<T>((resolve, reject) => {
      this.#waiters.push(resolve as (v: unknown) => void);
      this.exited.then(({ code, signal }) =>
        reject(new Error(`child exited (code ${code}, signal ${signal}) before reporting; stderr: ${this.#stderr}`)),
      );
    });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
  }
}

export function nodeChild(script: string, args: string[] = [], options: SpawnOptions = {}): Child {
  requireDist();
  return new Child(process.execPath, [join(fixtures, script), ...args], options);
}

export function pythonChild(script: string, args: string[] = [], options: SpawnOptions = {}): Child {
  return new Child('python3', [join(fixtures, script), ...args], options);
}

/**
 * Two processes listen on `path` at one agreed moment
 * (fixtures/listen_race.mjs): exactly one must get it and answer there,
 * the other EADDRINUSE.
 */
export async function expectOneListener(path: string): Promise<void> {
  const startAt = String(Date.now() + 250);
  const racers = [nodeChild('listen_race.mjs', [path, startAt]), nodeChild('listen_race.mjs', [path, startAt])];
  const said = (await Promise.all(racers.map((r) => r.next()))) as Array<{ pid: number; listen: string; answeredBy?: number }>;
  for (const r of racers) r.kill(); // (the winner stays up until both have spoken)
  await Promise.all(racers.map((r) => r.exited));
  const winners = said.filter((s) => s.listen === 'ok');
  expect(winners, JSON.stringify(said)).toHaveLength(1);
  expect(winners[0]!.answeredBy).toBe(winners[0]!.pid);
  expect(said.find((s) => s !== winners[0])!.listen).toBe('EADDRINUSE');
}
