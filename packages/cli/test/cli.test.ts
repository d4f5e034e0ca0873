// The afunix CLI as a user meets it: the built binary, run as a child
// process, against real servers running in other processes.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  type Fixture, NOBODY, afunix, isRoot, oneLineError, outcomeOf, spawnCli, stderrMatching, testFileScope,
} from './helpers.js';

const { tmp, fixture } = testFileScope();
const sock = join(tmp.dir, 'fixture.sock');
const abstract = `@afunix-cli-test-${process.pid}`;
let service: Fixture;

beforeAll(async () => {
  chmodSync(tmp.dir, 0o755); // the EACCES test runs the CLI as another user
  service = await fixture('service.mjs', sock, JSON.stringify({ mode: 0o600 }));
});

describe('help and usage', () => {
  it('prints an overview and per-command help, exit 0', async () => {
    const overview = await afunix(['--help']);
    expect(overview.code).toBe(0);
    for (const name of ['info', 'methods', 'call', 'watch', 'ls']) expect(overview.stdout).toContain(`  ${name} `);
    for (const name of ['info', 'methods', 'call', 'watch', 'ls']) {
      for (const args of [[name, '--help'], ['help', name], ['--help', name]]) {
        const r = await afunix(args);
        expect(r.code, args.join(' ')).toBe(0);
        expect(r.stdout, args.join(' ')).toMatch(new RegExp(`^Usage: afunix ${name} `));
      }
    }
  });

  it('is linked into the workspace as the afunix bin (pnpm exec afunix)', async () => {
    const bin = fileURLToPath(new URL('../../../node_modules/.bin/afunix', import.meta.url));
    const r = await outcomeOf(spawn(bin, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('afunix 0.1.0\n');
  });

  it('runs as the docs say: pnpm exec afunix, from the root and from an example', async () => {
    // The workspace's own pnpm (what `npx pnpm@<version>` runs), not a download.
    const pnpm = fileURLToPath(new URL('../../../node_modules/.bin/pnpm', import.meta.url));
    for (const dir of ['../../../', '../../../examples/daemon-control/']) {
      const cwd = fileURLToPath(new URL(dir, import.meta.url));
      const r = await outcomeOf(spawn(pnpm, ['exec', 'afunix', '--version'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] }));
      expect(r.stdout, cwd).toBe('afunix 0.1.0\n');
    }
  });

  it('no doc tells users to run bare `npx afunix` (the public npm name is not ours)', () => {
    const docs = ['../README.md', ...readdirSync(fileURLToPath(new URL('../../../examples/', import.meta.url))).map((e) => `../../../examples/${e}/README.md`)];
    for (const doc of docs) {
      const path = fileURLToPath(new URL(doc, import.meta.url));
      if (!existsSync(path)) continue;
      for (const line of readFileSync(path, 'utf8').split('\n')) {
        // Allowed only where it explains itself: --no-install, or in prose saying why not.
        if (/^\s*npx afunix\b/.test(line) || /\(or: npx afunix\)/.test(line)) throw new Error(`${doc}: ${line}`);
      }
    }
  });

  it.each([
    [['frobnicate'], /unknown command "frobnicate"/],
    [['info'], /afunix info needs <socket>/],
    [['call', sock], /afunix call needs <method>/],
    [['watch', sock], /afunix watch needs <event>/],
    [['info', sock, '--bogus'], /^afunix: unknown option --bogus \(an argument that starts with '-' goes after --, as in -- --bogus\) \(see afunix info --help\)/],
    [['call', sock, 'neg', '--timeout', '-5'], /argument is ambiguous\. .*use '--timeout=-XYZ'\. \(see afunix call --help\)/],
    [['info', sock, '--timeout', 'soon'], /--timeout needs a whole number of milliseconds from 1 to 9007199254740991, got "soon"/],
    [['call', sock, 'greet', 'world'], /argument 1 is not JSON: world \(a string needs JSON quotes: '"world"'\)/],
    [['call', sock, 'readFd', '"$fd1"', '--fd', '/dev/null'], /\$fd1 names --fd number 1, but 1 --fd option\(s\) were given/],
    [['call', sock, 'readFd', '--fd', '/no/such/file'], /cannot open \/no\/such\/file for --fd: ENOENT/],
  ])('afunix %j is a usage error (exit 2)', async (args, message) => {
    const r = await afunix(args);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toMatch(message);
    expect(r.stderr).toContain('[USAGE]');
    expect(r.stdout).toBe('');
  });
});

describe('info', () => {
  it('names the service and the server process from its peer credentials', async () => {
    const r = await afunix(['info', sock]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^service\s+fixture$/m);
    expect(r.stdout).toMatch(/^version\s+2\.3\.4$/m);
    expect(r.stdout).toMatch(/^protocol\s+1$/m);
    expect(r.stdout).toMatch(new RegExp(`^pid\\s+${service.pid}$`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^uid\\s+${process.getuid!()}\\b`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^exe\\s+${realpathSync(process.execPath)}$`, 'm'));
  });

  it('--json gives the same facts to scripts', async () => {
    const r = await afunix(['info', sock, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      address: sock, type: 'stream', service: 'fixture', version: '2.3.4', protocol: 1,
      peer: { pid: service.pid, uid: process.getuid!(), gid: process.getgid!(), exe: realpathSync(process.execPath) },
    });
  });

  it('reaches @abstract names and seqpacket listeners without being told the type', async () => {
    const f = await fixture('service.mjs', abstract, JSON.stringify({ type: 'seqpacket' }));
    const r = await afunix(['info', abstract, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ address: abstract, type: 'seqpacket', service: 'fixture', peer: { pid: f.pid } });
  });
});

describe('methods', () => {
  it('tables methods, stream flags, argument schemas and events', async () => {
    const r = await afunix(['methods', sock]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^fixture 2\.3\.4 \(protocol 1\)$/m);
    expect(r.stdout).toMatch(/^METHOD\s+RESULT\s+ARGS$/m);
    expect(r.stdout).toMatch(/^add\s+\(number, number\)$/m);
    expect(r.stdout).toMatch(/^greet\s+\(\{name: string, loud\?: boolean\}\)$/m);
    expect(r.stdout).toMatch(/^count\s+stream\s+-$/m);
    expect(r.stdout).toMatch(/^events: tick, log$/m);
  });

  it('--json is the service description', async () => {
    const r = await afunix(['methods', sock, '--json']);
    const d = JSON.parse(r.stdout);
    expect(d).toMatchObject({ service: 'fixture', version: '2.3.4', protocol: 1, events: ['tick', 'log'] });
    expect(d.methods).toContainEqual({ name: 'count', stream: true });
    expect(d.methods.find((m: { name: string }) => m.name === 'add').args.prefixItems).toEqual([{ type: 'number' }, { type: 'number' }]);
  });
});

describe('call', () => {
  const call = (...args: string[]) => afunix(['call', sock, ...args]);
  const json = async (...args: string[]) => {
    const r = await call(...args);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    return JSON.parse(r.stdout);
  };

  it('takes a JSON argument list or one JSON value per token', async () => {
    expect(await json('add', '[1, 2]')).toBe(3);
    expect(await json('add', '40', '2')).toBe(42);
    expect(await json('greet', '{"name": "ada", "loud": true}')).toBe('HELLO ADA!');
    expect(await json('echo', '[[1, 2]]')).toEqual([[1, 2]]);
    expect(await json('echo', '[1, 2]', '"x"')).toEqual([[1, 2], 'x']);
    expect(await json('echo', '--', '-5')).toEqual([-5]);
    expect(await json('echo', '{"$base64": "AAEC"}')).toEqual([{ $base64: 'AAEC' }]);
    expect(await json('nothing')).toBeNull();
  });

  it('prints what JSON cannot hold by the documented rule', async () => {
    expect(await json('values')).toEqual({
      buffer: { $base64: Buffer.from('hi there').toString('base64') },
      big: '12345678901234567890',
      date: '2024-01-02T03:04:05.000Z',
      named: { a: 1, b: 2 },
      numbered: { $map: [[1, 'one'], [2, 'two']] },
      set: [1, 2],
      nan: 'NaN',
      missing: null,
    });
  });

  it('prints a stream as one JSON line per item', async () => {
    const r = await call('count', '4');
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l))).toEqual([0, 1, 2, 3].map((i) => ({ i, square: i * i })));
  });

  it('passes --fd files: in place of "$fdN", or appended', async () => {
    const a = join(tmp.dir, 'a.txt');
    const b = join(tmp.dir, 'b.txt');
    writeFileSync(a, 'alpha');
    writeFileSync(b, 'beta');
    expect(await json('readFd', '--fd', a)).toBe('alpha');
    expect(await json('readLabelled', '["first", "$fd1"]', '--fd', a, '--fd', b)).toBe('first: beta');
    expect(await json('readLabelled', '"label"', '--fd', b)).toBe('label: beta');
  });

  it('a remote error prints name, code and message on stderr and exits 1', async () => {
    const r = await call('fail', '"sprocket"');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('afunix: fail threw RpcError: no such widget [E_NO_WIDGET]\n  data: {"widget":"sprocket"}\n');
    const t = await call('fail', '"type"');
    expect(t.code).toBe(1);
    expect(oneLineError(t.stderr)).toBe('afunix: fail threw TypeError: wrong type [INTERNAL]');
  });

  it('--timeout ends a call that takes too long (exit 3)', async () => {
    const r = await call('slow', '10000', '--timeout', '300');
    expect(r.code).toBe(3);
    expect(oneLineError(r.stderr)).toBe('afunix: slow did not finish within 300 ms [ETIMEDOUT]');
    // The server's handler heard why: the caller's deadline.
    await expect.poll(async () => (await call('lastAbort')).stdout, { timeout: 10_000 }).toBe('"ETIMEDOUT"\n');
  });

  it('SIGINT during a call cancels it on the server and exits 130', async () => {
    const busy = async () => Number((await call('busy')).stdout);
    const caller = spawnCli(['call', sock, 'slow', '60000']);
    const done = outcomeOf(caller);
    await expect.poll(busy, { timeout: 10_000 }).toBe(1);
    caller.kill('SIGINT');
    const r = await done;
    expect(r.code).toBe(130);
    expect(oneLineError(r.stderr)).toBe('afunix: slow was interrupted [INTERRUPTED]');
    await expect.poll(busy, { timeout: 10_000 }).toBe(0); // the server stopped waiting too
    expect((await call('lastAbort')).stdout).toBe('"ABORT_ERR"\n');
  });
});

describe('connection errors: one line, exit 3', () => {
  it('no socket there (ENOENT)', async () => {
    const r = await afunix(['info', join(tmp.dir, 'missing.sock')]);
    expect(r.code).toBe(3);
    expect(oneLineError(r.stderr)).toBe(`afunix: no socket at ${join(tmp.dir, 'missing.sock')} [ENOENT]`);
  });

  it('a stale socket file, an unused abstract name, a file that is no socket', async () => {
    const stale = join(tmp.dir, 'stale.sock');
    const f = await fixture('not-afunix.mjs', stale, 'silent');
    await f.stop(); // SIGKILL: the file stays behind
    const r = await afunix(['call', stale, 'add']);
    expect(r.code).toBe(3);
    expect(oneLineError(r.stderr)).toBe(`afunix: nothing is listening at ${stale} (a stale socket file) [ECONNREFUSED]`);
    const unused = await afunix(['info', '@afunix-cli-nobody-here']);
    expect(oneLineError(unused.stderr)).toBe('afunix: nothing is listening on @afunix-cli-nobody-here [ECONNREFUSED]');
    const file = join(tmp.dir, 'plain.txt');
    writeFileSync(file, 'x');
    const notSocket = await afunix(['info', file]);
    expect(oneLineError(notSocket.stderr)).toBe(`afunix: ${file} is not a socket [ENOTSOCK]`);
  });

  it('permission denied (EACCES)', async () => {
    // As root the socket's 0600 mode stops only other users, so the CLI runs as nobody.
    const denied = isRoot ? sock : join(tmp.dir, 'locked.sock');
    if (!isRoot) await fixture('service.mjs', denied, JSON.stringify({ mode: 0o000 }));
    const r = await afunix(['info', denied], isRoot ? { uid: NOBODY, gid: NOBODY } : {});
    expect(r.code).toBe(3);
    expect(oneLineError(r.stderr)).toMatch(/^afunix: permission denied connecting to .* \[EACCES\]$/);
  });

  it('a peer that is not afunix', async () => {
    const chatty = join(tmp.dir, 'chatty.sock');
    await fixture('not-afunix.mjs', chatty, 'chatty');
    const r = await afunix(['info', chatty]);
    expect(r.code).toBe(3);
    expect(oneLineError(r.stderr)).toMatch(new RegExp(`^afunix: ${chatty} is not an afunix server \\(.+\\) \\[NOT_AFUNIX\\]$`));
  });

  it('a peer that never answers the hello, within --timeout', async () => {
    const silent = join(tmp.dir, 'silent.sock');
    await fixture('not-afunix.mjs', silent, 'silent');
    const r = await afunix(['methods', silent, '--timeout', '300']);
    expect(r.code).toBe(3);
    expect(oneLineError(r.stderr)).toBe(`afunix: ${silent} did not answer an afunix hello within 300 ms (a stopped or overloaded server, or not afunix) [HANDSHAKE_TIMEOUT]`);
  });

  it('a server whose policy refuses us (ACCESS_DENIED)', async () => {
    const strict = join(tmp.dir, 'strict.sock');
    await fixture('service.mjs', strict, JSON.stringify({ allow: { uids: [4242] } }));
    const r = await afunix(['call', strict, 'add', '1', '2']);
    expect(r.code).toBe(3);
    expect(oneLineError(r.stderr)).toBe(`afunix: the server at ${strict} refused this client: access denied for uid ${process.getuid!()} [ACCESS_DENIED]`);
  });
});

describe('watch', () => {
  it('prints events as JSON lines as they arrive, and exits 0 on SIGINT', async () => {
    const watcher = spawnCli(['watch', sock, 'tick', 'log']);
    const done = outcomeOf(watcher);
    await stderrMatching(watcher, /watching tick, log on/);
    expect((await afunix(['call', sock, 'publish', '"tick"', '1'])).stdout.trim()).toBe('1'); // one subscriber
    await afunix(['call', sock, 'publish', '"log"', '"info"', '"reloaded"']);
    await afunix(['call', sock, 'publish', '"other"', '0']); // not subscribed: not printed
    await afunix(['call', sock, 'publish', '"tick"', '2']);
    watcher.kill('SIGINT');
    const r = await done;
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l))).toEqual([
      { event: 'tick', args: [1] },
      { event: 'log', args: ['info', 'reloaded'] },
      { event: 'tick', args: [2] },
    ]);
  });

  it('exits 0 on SIGTERM too, and warns about events the service does not name', async () => {
    const watcher = spawnCli(['watch', sock, 'tock']);
    const done = outcomeOf(watcher);
    const stderr = await stderrMatching(watcher, /watching tock/);
    expect(stderr).toContain('afunix: warning: ');
    expect(stderr).toContain('does not name an event "tock" (it names: tick, log)');
    watcher.kill('SIGTERM');
    expect((await done).code).toBe(0);
  });

  it('exits 3 when the server goes away', async () => {
    const path = join(tmp.dir, 'short-lived.sock');
    const f = await fixture('service.mjs', path);
    const watcher = spawnCli(['watch', path, 'tick']);
    const done = outcomeOf(watcher);
    await stderrMatching(watcher, /watching tick/);
    await f.stop();
    const r = await done;
    expect(r.code).toBe(3);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toMatch(/^afunix: the connection to .* was lost.* \[CONNECTION_CLOSED\]$/);
  });
});

describe('ls', () => {
  it('lists the sockets in a directory: alive, stale, not afunix, denied', async () => {
    const dir = join(tmp.dir, 'run');
    mkdirSync(dir);
    const alive = await fixture('service.mjs', join(dir, 'alive.sock'));
    await (await fixture('not-afunix.mjs', join(dir, 'stale.sock'), 'silent')).stop();
    await fixture('not-afunix.mjs', join(dir, 'chatty.sock'), 'chatty');
    await fixture('service.mjs', join(dir, 'strict.sock'), JSON.stringify({ allow: { uids: [4242] } }));
    writeFileSync(join(dir, 'notes.txt'), 'not a socket: not listed');
    const r = await afunix(['ls', dir, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { socket: join(dir, 'alive.sock'), state: 'alive', service: 'fixture', version: '2.3.4', pid: alive.pid },
      { socket: join(dir, 'chatty.sock'), state: 'not-afunix', detail: expect.stringContaining('[NOT_AFUNIX]') },
      { socket: join(dir, 'stale.sock'), state: 'stale', detail: expect.stringContaining('[ECONNREFUSED]') },
      { socket: join(dir, 'strict.sock'), state: 'denied', detail: expect.stringContaining('[ACCESS_DENIED]') },
    ]);
    // The table, from $XDG_RUNTIME_DIR when no directory is given.
    const table = await afunix(['ls'], { env: { ...process.env, XDG_RUNTIME_DIR: dir } });
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^STATE\s+SOCKET\s+SERVICE\s+VERSION\s+PID$/m);
    expect(table.stdout).toMatch(new RegExp(`^alive\\s+${join(dir, 'alive.sock')}\\s+fixture\\s+2\\.3\\.4\\s+${alive.pid}$`, 'm'));
    expect(table.stdout).toMatch(new RegExp(`^stale\\s+${join(dir, 'stale.sock')}$`, 'm'));
    expect(table.stdout).not.toContain('notes.txt');
  });

  it('ls @ lists listening abstract sockets', async () => {
    const name = `@afunix-cli-ls-${process.pid}`;
    const f = await fixture('service.mjs', name);
    const r = await afunix(['ls', '@', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toContainEqual({ socket: name, state: 'alive', service: 'fixture', version: '2.3.4', pid: f.pid });
  });

  it('a directory that cannot be listed (here: missing) is a usage error', async () => {
    const r = await afunix(['ls', join(tmp.dir, 'no-such-dir')]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe(`afunix: cannot list ${join(tmp.dir, 'no-such-dir')}: ENOENT [USAGE]`);
  });
});
