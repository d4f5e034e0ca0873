import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

export interface Service {
  child: ChildProcess;
  pid: number;
  address: string;
  stop(): Promise<void>;
}

/** Starts lab-service.mjs in its own process and waits until it listens. */
export async function startService(address: string, options: object = {}, spawnOptions: { uid?: number; gid?: number } = {}): Promise<Service> {
  const child = spawn(process.execPath, [join(fixtures, 'lab-service.mjs'), address, JSON.stringify(options)], {
    stdio: ['pipe', 'pipe', 'inherit'], // the service exits when our end of its stdin closes
    ...spawnOptions,
  });
  const lines = createInterface({ input: child.stdout! });
  const ready = new Promise<{ pid: number }>((resolve, reject) => {
    lines.once('line', (line) => resolve(JSON.parse(line)));
    child.once('exit', (code) => reject(new Error(`service exited early with code ${code}`)));
  });
  const { pid } = await ready;
  return {
    child,
    pid,
    address,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export function tempDir(): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'afunix-rpc-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

// Which fds were added since a snapshot: unlike a count, not thrown off by
// an fd of an earlier test that closes meanwhile.
export { addedSince, openFds } from '../../transport/test/helpers.js';

/** Resolves once cond() holds; fails after `ms` (a liveness bound, not a speed check). */
export async function eventually(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
