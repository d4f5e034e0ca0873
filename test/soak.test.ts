// The soak, short (10 s), as CI runs it; `pnpm soak` is the long version
// (60 s by default, --seconds N). See scripts/soak.mjs for what it does and
// which invariants it checks.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { report } from './helpers.js';

const soak = fileURLToPath(new URL('../scripts/soak.mjs', import.meta.url));
const SECONDS = Number(process.env.SOAK_SECONDS ?? 10);

describe('soak', () => {
  it(`${SECONDS} s of random calls, streams, aborts, deadlines, fds, events, reconnects and killed clients: every invariant holds`, async () => {
    const child = spawn(process.execPath, [soak, '--seconds', String(SECONDS), '--json', '--seed', '20251125', '--kill-every', '2'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const result = JSON.parse(out.trim().split('\n').at(-1)!) as {
      failures: string[];
      callsCompleted: number;
      clientsKilled: number;
      server: { fds: { start: number; end: number } };
    };
    report(`soak ${SECONDS} s`, result as unknown as Record<string, unknown>);
    expect(result.failures).toEqual([]);
    expect(code).toBe(0);
    expect(result.callsCompleted).toBeGreaterThan(100);
    expect(result.clientsKilled).toBeGreaterThanOrEqual(2);
    expect(result.server.fds.end).toBe(result.server.fds.start);
  }, SECONDS * 1000 + 60_000);
});
