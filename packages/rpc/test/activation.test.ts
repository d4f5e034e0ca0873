// systemd socket activation, played by a python3 stand-in for the service
// manager: it binds and listens, puts the socket on fd 3, sets LISTEN_PID to
// the pid it then execs node under, and LISTEN_FDS=1.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { connect } from '../src/index.js';
import { fixtures, tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

const manager = `
import os, socket, sys
path, node, script = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(16)
if s.fileno() == 3:
    os.set_inheritable(3, True)  # dup2(3, 3) would not clear close-on-exec
else:
    os.dup2(s.fileno(), 3)
os.environ['LISTEN_PID'] = str(os.getpid())
os.environ['LISTEN_FDS'] = '1'
os.environ['LISTEN_FDNAMES'] = 'control'
os.execv(node, [node, script])
`;

describe('socket activation', () => {
  it('serves on the socket the service manager passed, and hides the variables from children', async () => {
    const path = join(tmp.dir, 'activated.sock');
    const child = spawn('python3', ['-c', manager, path, process.execPath, join(fixtures, 'activated-service.mjs')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`service exited with ${code}`)));
      });
      expect(JSON.parse(line)).toEqual({ ready: true, name: 'control' });
      const client = await connect<{ methods: { hello(n: string): string; environment(): Record<string, string | null> } }>(path);
      expect(await client.hello('systemd')).toBe('hello systemd');
      expect(await client.environment()).toEqual({ LISTEN_PID: null, LISTEN_FDS: null });
      expect(client.$peer?.pid).toBe(child.pid); // exec kept the pid
      await client.$close();
    } finally {
      child.kill('SIGKILL');
    }
  });
});
