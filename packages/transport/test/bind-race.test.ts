// A symlink swapped in at the socket's path between bind() and the mode
// change: listen() must not follow it. Whoever can write the directory
// could otherwise have this process (often root) chmod any file it likes.
// The swap is made deterministic by wrapping the addon's bind().
import { chmodSync, lstatSync, mkdtempSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { createServer } from '../src/server.js';

const dir = mkdtempSync(join(tmpdir(), 'afunix-bind-race-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('listen({ mode }) and a symlink swapped in after bind()', () => {
  it('neither follows it nor changes the mode of its target, and fails', async () => {
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'secret');
    chmodSync(victim, 0o600);
    const path = join(dir, 'app.sock');
    const n = native as unknown as { bind: (fd: number, address: Uint8Array | null) => number };
    const realBind = n.bind;
    n.bind = (fd, address) => {
      const r = realBind(fd, address);
      // The attacker's move, right after the socket file appears.
      renameSync(path, join(dir, 'moved.sock'));
      symlinkSync(victim, path);
      return r;
    };
    try {
      await expect(createServer({ mode: 0o666 }).listen(path)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    } finally {
      n.bind = realBind;
    }
    expect(statSync(victim).mode & 0o777).toBe(0o600);
    expect(lstatSync(path).isSymbolicLink()).toBe(true);
    expect(readlinkSync(path)).toBe(victim);
  });

  it('without a swap, the mode is set on the socket itself', async () => {
    const path = join(dir, 'plain.sock');
    const server = await createServer({ mode: 0o640 }).listen(path);
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(lstatSync(path).mode & 0o777).toBe(0o640);
    await server.close();
  });
});
