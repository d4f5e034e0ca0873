// daemon-control as its users meet it: the guided run, the daemon and ctl.mjs
// as separate processes (socket placement, mode, same-user policy, reload,
// graceful stop), and socket activation the way systemd does it.
import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';

const here = (file: string) => fileURLToPath(new URL(`../${file}`, import.meta.url));
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;
const tmp = mkdtempSync(join(tmpdir(), 'daemon-control-test-'));
chmodSync(tmp, 0o755); // one test runs the daemon as another user
const started: ChildProcess[] = [];
let counter = 0;

afterEach(() => {
  for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A fresh directory to play $XDG_RUNTIME_DIR (or TMPDIR). */
function freshDir(): string {
  const dir = join(tmp, `run-${++counter}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** The environment of a user session: XDG_RUNTIME_DIR set, or removed (null). */
function sessionEnv(runtimeDir: string | null, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  if (runtimeDir === null) delete env.XDG_RUNTIME_DIR;
  else env.XDG_RUNTIME_DIR = runtimeDir;
  return env;
}

async function run(command: string, args: string[], options: SpawnOptions = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(killer);
  return { code, stdout, stderr };
}

const ctl = (args: string[], options: SpawnOptions = {}) => run(process.execPath, [here('ctl.mjs'), ...args], options);

async function statusOf(options: SpawnOptions, socketArgs: string[] = []): Promise<Record<string, unknown>> {
  const r = await ctl([...socketArgs, 'status', '--json'], options);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout);
}

/** Resolves with the exit code; set up at spawn time, so an early exit is not missed. */
function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** Starts daemon.mjs and waits for its "listening on" line. */
async function startDaemon(command: string, args: string[], options: SpawnOptions = {}): Promise<{ child: ChildProcess; exit: Promise<number | null> }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], ...options });
  started.push(child);
  const exit = exitOf(child);
  const lines = createInterface({ input: child.stdout! });
  await new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => line.includes('listening on') && resolve(line));
    void exit.then((code) => reject(new Error(`the daemon exited with ${code}`)));
  });
  return { child, exit };
}

const daemon = (args: string[], options: SpawnOptions = {}) => startDaemon(process.execPath, [here('daemon.mjs'), ...args], options);

it('the guided run (main.mjs) starts, drives and stops the daemon, exit 0', async () => {
  const r = await run(process.execPath, [here('main.mjs')]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^started: daemon-control \(pid \d+\) listening on \S+control\.sock \(socket from the daemon itself\)$/m);
  expect(r.stdout).toContain('socket mode: 600');
  expect(r.stdout).toMatch(/^ {2}daemon-control pid \d+, up [\d.]+ s, socket from itself$/m);
  expect(r.stdout).toMatch(/greeting "hello", heartbeat every 200 ms/);
  expect(r.stdout).toContain('$ node ctl.mjs reload\n  reloaded: greeting changed\n');
  expect(r.stdout).toMatch(/\$ node ctl\.mjs logs --count 2\n {2}[\d:.]+ debug heartbeat \d+: bonjour\n {2}[\d:.]+ debug heartbeat \d+: bonjour\n/);
  expect(r.stdout).toMatch(/\$ node ctl\.mjs stop\n {2}daemon-control: stopping\ndaemon exited with 0\n$/);
});

describe('daemon.mjs and ctl.mjs', () => {
  it('binds $XDG_RUNTIME_DIR/daemon-control.sock with mode 0600, reloads on SIGHUP, and stops on SIGTERM', async () => {
    const runtime = freshDir();
    const config = join(runtime, 'config.json');
    writeFileSync(config, JSON.stringify({ greeting: 'hello', heartbeatMs: 1000 }));
    const env = sessionEnv(runtime);
    const { child, exit } = await daemon(['--config', config], { env });
    const socket = join(runtime, 'daemon-control.sock');
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(await statusOf({ env })).toMatchObject({ pid: child.pid, startedBy: 'itself', socket, reloads: 0, config: { greeting: 'hello' }, clients: 1 });

    writeFileSync(config, JSON.stringify({ greeting: 'hi', heartbeatMs: 1000 }));
    child.kill('SIGHUP');
    await expect.poll(async () => (await statusOf({ env })).reloads, { timeout: 10_000 }).toBe(1);
    expect(await statusOf({ env })).toMatchObject({ config: { greeting: 'hi' } });

    writeFileSync(config, '{ not json');
    const bad = await ctl(['reload'], { env });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^ctl: cannot use .*config\.json: .* \[E_BAD_CONFIG\]\n$/);
    expect(await statusOf({ env })).toMatchObject({ reloads: 1, config: { greeting: 'hi' } }); // the old config stays

    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(existsSync(socket)).toBe(false); // it removes the socket it bound
    const after = await ctl(['status'], { env });
    expect(after.code).toBe(1);
    expect(after.stderr).toBe(`ctl: daemon-control is not running (nothing at ${socket})\n`);
  });

  it('without $XDG_RUNTIME_DIR it uses a 0700 directory of its own under the temp dir', async () => {
    const temp = freshDir();
    const env = sessionEnv(null, { TMPDIR: temp });
    const { child, exit } = await daemon([], { env });
    const dir = join(temp, `daemon-control-${process.getuid!()}`);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(await statusOf({ env })).toMatchObject({ pid: child.pid, socket: join(dir, 'daemon.sock') });
    const stop = await ctl(['stop'], { env });
    expect(stop.stdout).toBe('daemon-control: stopping\n');
    expect(await exit).toBe(0);
  });

  it('refuses a fallback directory that others could have prepared', async () => {
    const temp = freshDir();
    const planted = join(temp, `daemon-control-${process.getuid!()}`);
    mkdirSync(planted);
    chmodSync(planted, 0o777);
    const r = await run(process.execPath, [here('daemon.mjs')], { env: sessionEnv(null, { TMPDIR: temp }) });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`daemon-control: cannot listen: ${planted} is not a private directory of this user (mode 0700); refusing to put the control socket there\n`);
  });

  it('a broken config at startup ends it with one line and exit 1', async () => {
    const config = join(freshDir(), 'config.json');
    writeFileSync(config, JSON.stringify({ greeting: 7 }));
    const r = await run(process.execPath, [here('daemon.mjs'), '--config', config], { env: sessionEnv(freshDir()) });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`daemon-control: ${config} needs a string "greeting" and an integer "heartbeatMs" from 10 to 2147483647\n`);
  });

  it('a heartbeatMs past what setInterval can wait is a broken config, not a 1 ms heartbeat', async () => {
    const config = join(freshDir(), 'config.json');
    writeFileSync(config, JSON.stringify({ heartbeatMs: 3_000_000_000 }));
    const r = await run(process.execPath, [here('daemon.mjs'), '--config', config], { env: sessionEnv(freshDir()) });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`daemon-control: ${config} needs a string "greeting" and an integer "heartbeatMs" from 10 to 2147483647\n`);
  });

  it('an unknown option ends it with one line and exit 2, not a stack trace', async () => {
    const r = await run(process.execPath, [here('daemon.mjs'), '--bogus'], { env: sessionEnv(freshDir()) });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^daemon-control: Unknown option '--bogus'.*\(usage: daemon\.mjs \[--socket <path>\] \[--config <file\.json>\]\)\n$/);
  });

  // Root ignores file modes, so only the peer check stands between root and a
  // daemon of another user: it must refuse.
  it.runIf(isRoot)("admits only its own uid ('same-user'), even when the file mode would let root in", async () => {
    const runtime = freshDir();
    chownSync(runtime, NOBODY, NOBODY);
    const env = sessionEnv(runtime);
    await daemon([], { env, uid: NOBODY, gid: NOBODY });
    const asRoot = await ctl(['status'], { env });
    expect(asRoot.code).toBe(1);
    expect(asRoot.stderr).toBe('ctl: access denied for uid 0 [ACCESS_DENIED]\n');
    expect(await statusOf({ env, uid: NOBODY, gid: NOBODY })).toMatchObject({ startedBy: 'itself' });
  });
});

describe('systemd', () => {
  const unit = (name: string) => readFileSync(here(`systemd/${name}`), 'utf8');

  it('the .socket unit puts the socket where daemon and ctl look for it, mode 0600', () => {
    const socket = unit('daemon-control.socket');
    expect(socket).toMatch(/^ListenStream=%t\/daemon-control\.sock$/m); // %t: $XDG_RUNTIME_DIR
    expect(socket).toMatch(/^SocketMode=0600$/m);
    expect(socket).toMatch(/^Accept=no$/m);
    expect(unit('daemon-control.service')).toMatch(/^ExecStart=.*daemon-control\/daemon\.mjs$/m);
  });

  const analyze = spawnSync('systemd-analyze', ['--version']).status === 0;
  it.runIf(analyze)('systemd-analyze verify accepts the units', () => {
    const r = spawnSync('systemd-analyze', ['verify', here('systemd/daemon-control.socket'), here('systemd/daemon-control.service')], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  // systemd's own activator where installed; otherwise a stand-in doing the
  // same: bind, listen, put the socket on fd 3, set LISTEN_*, exec the daemon.
  const STAND_IN = `
import os, socket, sys
path, argv = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(16)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='control')
os.execv(argv[0], argv)
`;
  const hasActivator = spawnSync('systemd-socket-activate', ['--version']).status === 0;
  const hasPython = spawnSync('python3', ['--version']).status === 0;

  it.runIf(hasActivator || hasPython)('socket-activated, the daemon serves on the socket it was given and binds none', async () => {
    const runtime = freshDir();
    const socket = join(runtime, 'daemon-control.sock');
    const node = [process.execPath, here('daemon.mjs')];
    const [command, args] = hasActivator
      ? ['systemd-socket-activate', ['-l', socket, '--fdname=control', ...node]]
      : ['python3', ['-c', STAND_IN, socket, ...node]];
    const env = sessionEnv(runtime);
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'ignore'], env });
    started.push(child);
    const exit = exitOf(child);
    await expect.poll(() => existsSync(socket), { timeout: 10_000 }).toBe(true);
    // With systemd-socket-activate this first connection is what starts the daemon.
    const status = await statusOf({ env });
    expect(status).toMatchObject({ startedBy: 'systemd', socket, pid: child.pid }); // exec kept the pid
    expect((await ctl(['stop'], { env })).code).toBe(0);
    expect(await exit).toBe(0);
    expect(existsSync(socket)).toBe(true); // the socket is the service manager's, left in place
  });
});

describe('piped into head -1 (its reader goes away)', () => {
  /** `<node script args> | head -1` as a shell runs it: what reached head, and the script's status. */
  async function piped(script: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string; status: string }> {
    const quoted = [process.execPath, here(script), ...args].map((a) => `'${a}'`).join(' ');
    const r = await run('bash', ['-c', `${quoted} | head -1; echo "status \${PIPESTATUS[0]}"`], { env });
    const [, stdout = '', status = ''] = /^([\s\S]*)status (\d+)\n$/.exec(r.stdout) ?? [];
    return { stdout, stderr: r.stderr, status };
  }

  it('main.mjs: no stack trace, 141, and neither the daemon nor the temp dir is left behind', async () => {
    const tmpDir = freshDir();
    const r = await piped('main.mjs', [], sessionEnv(null, { TMPDIR: tmpDir }));
    expect(r.stderr).toBe('');
    const [, pid] = /^started: daemon-control \(pid (\d+)\)/.exec(r.stdout) ?? [];
    expect(pid).toBeDefined();
    expect(['141', '0']).toContain(r.status); // 0 only if all was written before head left
    expect(() => process.kill(Number(pid), 0)).toThrow(/ESRCH/); // the daemon is gone
    expect(readdirSync(tmpDir)).toEqual([]);
  });

  it('daemon.mjs: stops as on SIGTERM (exit 0, socket removed) instead of crashing', async () => {
    const runtime = freshDir();
    const config = join(runtime, 'config.json');
    writeFileSync(config, JSON.stringify({ greeting: 'hello', heartbeatMs: 100 })); // the heartbeat's log line finds the pipe closed
    const r = await piped('daemon.mjs', ['--config', config], sessionEnv(runtime));
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^info: daemon-control \(pid \d+\) listening on /);
    expect(r.status).toBe('0');
    expect(existsSync(join(runtime, 'daemon-control.sock'))).toBe(false);
  });

  it('ctl.mjs logs: ends at once with 141, quietly', async () => {
    const runtime = freshDir();
    const config = join(runtime, 'config.json');
    writeFileSync(config, JSON.stringify({ greeting: 'hello', heartbeatMs: 100 }));
    const env = sessionEnv(runtime);
    await daemon(['--config', config], { env });
    const r = await piped('ctl.mjs', ['logs'], env);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^[\d:.]+ debug heartbeat \d+: hello\n$/);
    expect(r.status).toBe('141');
  });
});
