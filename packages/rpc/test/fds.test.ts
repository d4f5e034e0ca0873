// File descriptors as values: they travel inside the message, by SCM_RIGHTS.
import { closeSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Fd, RpcServer, connect } from '../src/index.js';
import { eventually } from './helpers.js';
import { useLab } from './lab.js';

const lab = useLab();
const fdCount = () => readdirSync('/proc/self/fd').length;

describe('fds as values', () => {
  it('passes an fd as an argument: the other process reads the file through it', async () => {
    const file = join(lab.dir, 'secret.txt');
    writeFileSync(file, 'only through the fd');
    const fd = openSync(file, 'r');
    try {
      expect(await lab.client.readFd(Fd.from(fd))).toBe('only through the fd');
    } finally {
      closeSync(fd);
    }
  });

  it('returns an fd: the caller reads a file the other process opened', async () => {
    const file = join(lab.dir, 'opened-by-server.txt');
    writeFileSync(file, 'opened over there');
    const fd = await lab.client.open(file);
    expect(fd).toBeInstanceOf(Fd);
    expect(fd.owned).toBe(true);
    expect(readFileSync(fd.fd, 'utf8')).toBe('opened over there');
    fd.close();
    expect(fd.owned).toBe(false);
  });

  it('closes fds that a handler does not take, once it settles', async () => {
    const server = new RpcServer<{ methods: { ignore(fd: Fd): number; keep(fd: Fd): number } }>({
      service: 'fds',
      handlers: {
        ignore: () => 1,
        keep: (fd) => fd.take(),
      },
    });
    const path = join(lab.dir, 'fds.sock');
    await server.listen(path);
    const c = await connect<{ methods: { ignore(fd: Fd): number; keep(fd: Fd): number } }>(path);
    const file = openSync(__filename, 'r');
    try {
      await c.ignore(Fd.from(file)); // warm up lazily created handles
      const baseline = fdCount();
      for (let i = 0; i < 200; i++) await c.ignore(Fd.from(file));
      await eventually(() => fdCount() === baseline);
      const kept = await c.keep(Fd.from(file));
      expect(fdCount()).toBe(baseline + 1); // taken: now ours to close
      closeSync(kept);
    } finally {
      closeSync(file);
      await c.$close();
      await server.close();
    }
  });
});
