// What the examples' tests share: running a demo as `node demo | head -1`.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * `node <script> | head -1` as a shell runs it, with TMPDIR a fresh
 * directory: what reached head, how the script ended, and what it left in
 * TMPDIR.
 */
export async function pipedIntoHead(script: string): Promise<{ stdout: string; stderr: string; status: string; left: string[] }> {
  const tmp = mkdtempSync(join(tmpdir(), 'piped-'));
  try {
    const child = spawn('bash', ['-c', `'${process.execPath}' '${script}' | head -1; echo "status \${PIPESTATUS[0]}"`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TMPDIR: tmp },
    });
    let out = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await once(child, 'close');
    clearTimeout(killer);
    const [, stdout = '', status = ''] = /^([\s\S]*)status (\d+)\n$/.exec(out) ?? [];
    return { stdout, stderr, status, left: readdirSync(tmp) };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
