// Child processes for tests that need a peer in another process: each
// fixture reports progress as JSON lines on stdout, read here one by one.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fixtures } from './helpers.js';

export interface Proc {
  child: ChildProcess;
  /** The next JSON line the fixture prints; rejects if it exits first. */
  next<T = Record<string, unknown>>(): Promise<T>;
  /** Resolves with the exit code and signal (at once if it already exited). */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL (or the given signal), then wait for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Runs `node fixtures/<name> ...args`; stderr goes to the test's stderr. */
export function runFixture(name: string, args: string[], options: SpawnOptions = {}): Proc {
  const child = spawn(process.execPath, [join(fixtures, name), ...args], { stdio: ['ignore', 'pipe', 'inherit'], ...options });
  const lines: string[] = [];
  const waiters: Array<{ resolve: (line: string) => void; reject: (err: Error) => void }> = [];
  let ended: Error | null = null;
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  createInterface({ input: child.stdout! })
    .on('line', (line) => {
      const waiter = waiters.shift();
      if (waiter) waiter.resolve(line);
      else lines.push(line);
    })
    .on('close', () => {
      // stdout closes when the process exits (or closes it): no more lines.
      void exit.then(({ code, signal }) => {
        ended = new Error(`fixture ${name} exited (code ${code}, signal ${signal}) before printing the expected line`);
        for (const w of waiters.splice(0)) w.reject(ended);
      });
    });
  child.once('error', (err) => {
    ended = err;
    for (const w of waiters.splice(0)) w.reject(err);
  });
  return {
    child,
    next<T>() {
      return new Promise<string>((resolve, reject) => {
        const line = lines.shift();
        if (line !== undefined) resolve(line);
        else if (ended) reject(ended);
        else waiters.push({ resolve, reject });
      }).then((line) => JSON.parse(line) as T);
    },
    exited: () => exit,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = once(child, 'exit');
      child.kill(signal);
      await gone;
    },
  };
}

/**
 * Runs every cleanup at once, so that one that fails (or hangs) cannot keep
 * the others from killing their processes: a leaked service outlives the run.
 */
export async function cleanUp(cleanups: Array<() => unknown>): Promise<void> {
  await Promise.allSettled(cleanups.splice(0).map((cleanup) => Promise.resolve().then(cleanup)));
}
