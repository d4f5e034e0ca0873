// Runs the example as a user would and checks what it reports.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { pipedIntoHead } from '../../test-support/piped.js';

const main = fileURLToPath(new URL('../main.mjs', import.meta.url));

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

it('calls the helper with types, is called back, gets events and a stream, and both exit 0', async () => {
  const parent = spawn(process.execPath, [main], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  parent.stdout.on('data', (d: Buffer) => (stdout += d));
  parent.stderr.on('data', (d: Buffer) => (stderr += d));
  const killer = setTimeout(() => parent.kill('SIGKILL'), 20_000);
  const [code] = await once(parent, 'exit');
  clearTimeout(killer);
  expect(stderr).toBe('');
  expect(code).toBe(0);
  const lines = stdout.trimEnd().split('\n');
  const [, parentPid, helperPid] = /^parent \(pid (\d+)\): spawned helper pid (\d+), connected over a socketpair$/.exec(lines[0]!)!;
  expect(helperPid).not.toBe(parentPid);
  expect(lines.slice(1)).toEqual([
    'parent: the helper asked for settings; sending 3 stop words',
    'parent: progress events 33% 67% 100%',
    `parent: analyze → 18 words in 3 lines, longest "process" (worked out by pid ${helperPid})`,
    'parent: words streamed → the quick brown fox jumps over the lazy dog',
    'parent: helper exited with 0',
  ]);
  expect(isRunning(Number(helperPid))).toBe(false);
});

it('piped into head -1: no stack trace, exit 141 (as SIGPIPE would), nothing left behind', async () => {
  const r = await pipedIntoHead(main);
  expect(r.stderr).toBe('');
  expect(r.stdout).toMatch(/^parent \(pid \d+\): spawned helper pid \d+, connected over a socketpair\n$/);
  // 141 once a write finds the reader gone; 0 if everything was written before head left.
  expect(['141', '0']).toContain(r.status);
  expect(r.left).toEqual([]);
});
