// Runs the demo as a user would, and checks what it says it did.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { pipedIntoHead } from '../../test-support/piped.js';

const main = fileURLToPath(new URL('../main.mjs', import.meta.url));

it('runs a call, a stream and an fd pass across two processes, then exits 0 by itself', async () => {
  const child = spawn(process.execPath, [main], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code] = await once(child, 'exit');
  clearTimeout(killer);
  expect(stderr).toBe('');
  expect(code).toBe(0);
  const lines = stdout.trimEnd().split('\n');
  expect(lines).toHaveLength(5);
  const [, serverPid, socket] = /^server \(pid (\d+)\): listening on (\S+)$/.exec(lines[0]!)!;
  const [, clientPid] = /^client \(pid (\d+)\): hello world, from pid (\d+)/.exec(lines[1]!)!;
  expect(lines[1]).toBe(`client (pid ${clientPid}): hello world, from pid ${serverPid} (you are pid ${clientPid}, uid ${process.getuid!()})`);
  expect(lines[2]).toBe('client: streamed 3, 2, 1, liftoff');
  expect(lines[3]).toMatch(/^client: passed fd \d+; the server saw fd \d+ → .*\/examples\/hello-fds\/main\.mjs, starting "\/\/ afunix in one file/);
  expect(lines[4]).toBe('server: client exited with 0; done');
  expect(existsSync(socket!)).toBe(false); // cleaned up after itself
});

it('piped into head -1: no stack trace, exit 141 (as SIGPIPE would), nothing left behind', async () => {
  const r = await pipedIntoHead(main);
  expect(r.stderr).toBe('');
  expect(r.stdout).toMatch(/^server \(pid \d+\): listening on \S+hello\.sock\n$/);
  // 141 once a write finds the reader gone; 0 if everything was written before head left.
  expect(['141', '0']).toContain(r.status);
  expect(r.left).toEqual([]);
});
