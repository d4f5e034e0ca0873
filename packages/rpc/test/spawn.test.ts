// spawnHelper() and serveParent() when things go wrong: a helper that dies
// or will not speak, and a helper process without a channel. Each failure
// is an error with a code, and leaves no process behind.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { RpcCode, spawnHelper } from '../src/index.js';
import { fixtures, tempDir } from './helpers.js';
import { runFixture } from './procs.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('spawnHelper', () => {
  it('a helper that exits before the handshake: CONNECTION_CLOSED, with its exit code', async () => {
    const failed = await spawnHelper(join(fixtures, 'exits-at-once.mjs'), { service: 'helper' }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(failed).toMatchObject({ code: RpcCode.CONNECTION_CLOSED, exitCode: 3, signal: null });
    expect((failed as Error).message).toContain('helper exit code 3');
  });

  it('a helper that ignores SIGTERM and never answers: HANDSHAKE_TIMEOUT, and it is SIGKILLed', async () => {
    const pidFile = join(tmp.dir, 'stubborn.pid');
    const failed = await spawnHelper(join(fixtures, 'stubborn-helper.mjs'), { service: 'helper', args: [pidFile], timeout: 300 }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(failed).toMatchObject({ code: RpcCode.HANDSHAKE_TIMEOUT });
    const pid = Number(readFileSync(pidFile, 'utf8'));
    // (It kept this process alive for good, out of reach of the caller.)
    for (let waited = 0; alive(pid) && waited < 10_000; waited += 50) await sleep(50);
    expect(alive(pid)).toBe(false);
  });
});

describe('serveParent', () => {
  it('with no channel on fd 3: a rejected promise with a code that names the fd, not a throw', async () => {
    const child = runFixture('serve-parent.mjs', []);
    expect(await child.next()).toEqual({ returned: 'promise' });
    const said = await child.next<{ code: string; message: string }>();
    expect(said.code).toMatch(/^E[A-Z]+$/);
    expect(said.message).toContain('fd 3');
    expect(await child.exited()).toEqual({ code: 0, signal: null }); // (a throw used to end it with code 1)
  });

  it("in a fork()ed child, whose fd 3 is Node's IPC channel: EEXIST, and the IPC channel still works", async () => {
    const child = fork(join(fixtures, 'serve-parent.mjs'), ['fork'], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    const messages: unknown[] = [];
    child.on('message', (m) => messages.push(m));
    await once(child, 'exit');
    expect(messages).toEqual(['ipc still works']);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toEqual({ returned: 'promise' });
    expect(lines[1]).toMatchObject({ code: 'EEXIST' });
    expect(String(lines[1]!.message)).toContain('fd 3');
  });
});
