// Runs the example as a user would. As root (CI), the worker runs as 65534:
// it must fail to open the file itself (EACCES) and still read it through
// the descriptor the broker passed, while the broker keeps no copy.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { pipedIntoHead } from '../../test-support/piped.js';

const main = fileURLToPath(new URL('../main.mjs', import.meta.url));
const isRoot = process.getuid?.() === 0;

async function runMain(as: { uid?: number; gid?: number } = {}): Promise<string[]> {
  const broker = spawn(process.execPath, [main], { stdio: ['ignore', 'pipe', 'pipe'], ...as });
  let stdout = '';
  let stderr = '';
  broker.stdout.on('data', (d: Buffer) => (stdout += d));
  broker.stderr.on('data', (d: Buffer) => (stderr += d));
  const killer = setTimeout(() => broker.kill('SIGKILL'), 20_000);
  const [code] = await once(broker, 'exit');
  clearTimeout(killer);
  expect(stderr).toBe('');
  expect(code).toBe(0);
  return stdout.trimEnd().split('\n');
}

it('the worker reads, through a passed fd, a file it cannot open; the broker keeps nothing open', async () => {
  const lines = await runMain();
  expect(lines).toHaveLength(5);
  const [, token] = /^broker \(pid \d+, uid \d+\): wrote secret\.txt \(mode 0600, token ([0-9a-f]{8})\); starting the worker as uid /.exec(lines[0]!)!;
  const [, workerUid, ownOpen] = /^worker \(pid \d+, uid (\d+)\): open\(secret\.txt\) myself → (.+)$/.exec(lines[1]!)!;
  if (isRoot) {
    expect(workerUid).toBe('65534');
    expect(ownOpen).toBe('EACCES'); // it could not open the file itself...
  } else {
    expect(ownOpen).toMatch(/^it worked: not separated/);
  }
  // ...but read it through the descriptor the broker sent.
  expect(lines[2]).toMatch(new RegExp(`^worker: asked the broker instead; got fd \\d+, read "launch code ${token}"$`));
  expect(lines[3]).toBe('worker: asked for /etc/shadow → refused: E_NOT_ALLOWED');
  expect(lines[4]).toBe('broker: worker exited with 0; the broker holds no descriptor for secret.txt');
});

// What the README promises for a user who is not root.
it.runIf(isRoot)('started without root, the worker runs as the same uid and says it is not separated', async () => {
  const lines = await runMain({ uid: 65534, gid: 65534 });
  expect(lines[0]).toMatch(/starting the worker as uid 65534 \(not root: cannot drop privileges\)$/);
  expect(lines[1]).toMatch(/^worker \(pid \d+, uid 65534\): open\(secret\.txt\) myself → it worked: not separated/);
  expect(lines[4]).toBe('broker: worker exited with 0; the broker holds no descriptor for secret.txt');
});

it('piped into head -1: no stack trace, exit 141 (as SIGPIPE would), nothing left behind', async () => {
  const r = await pipedIntoHead(main);
  expect(r.stderr).toBe('');
  expect(r.stdout).toMatch(/^broker \(pid \d+, uid \d+\): wrote secret\.txt/);
  // 141 once a write finds the reader gone; 0 if everything was written before head left.
  expect(['141', '0']).toContain(r.status);
  expect(r.left).toEqual([]);
});
