// Without the native addon: a server in a child process with
// AFUNIX_FORCE_FALLBACK=1 (so transport runs on node:net) still listens on a
// unix socket path and answers typed calls, to a native client here and to a
// fallback client in the same child. The child imports the built package
// (dist/), rebuilt here when a source is newer.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { ensureBuilt } from '../../../test/ensure-built.js';
import { Fd, connect, createServer } from '../src/index.js';
import { tempDir } from './helpers.js';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const tmp = tempDir();
let child: ChildProcess | undefined;

afterAll(() => {
  child?.kill();
  tmp.cleanup();
});

interface Calc {
  methods: { add(a: number, b: number): number };
}

const CHILD = `
import { connect, createServer } from ${JSON.stringify(join(pkg, 'dist', 'index.js'))};
import { features } from '@afunix/transport';
const server = createServer({ service: 'calc', handlers: { add: (_ctx, a, b) => a + b } });
await server.listen(process.argv[1], { mode: 0o600 });
const self = await connect(process.argv[1], { service: 'calc' });
console.log(JSON.stringify({ native: features.native, selfCall: await self.add(40, 2) }));
await self.$close();
process.stdin.on('end', () => server.close().then(() => process.exit(0)));
process.stdin.resume();
`;

it('a server without the addon listens on a path and answers typed calls over net', async () => {
  ensureBuilt(pkg);
  const address = join(tmp.dir, 'calc.sock');
  child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, address], {
    cwd: pkg,
    env: { ...process.env, AFUNIX_FORCE_FALLBACK: '1' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  expect(JSON.parse(line)).toEqual({ native: false, selfCall: 42 });
  expect(statSync(address).mode & 0o777).toBe(0o600);

  const calc = await connect<Calc>(address, { service: 'calc' }); // this process: the addon
  expect(await calc.add(2, 3)).toBe(5);
  await calc.$close();
  child.stdin!.end();
  expect((await once(child, 'exit'))[0]).toBe(0);
});

// A policy needs the kernel's peer credentials, which net cannot give.
const POLICY_CHILD = `
import { createServer } from ${JSON.stringify(join(pkg, 'dist', 'index.js'))};
const out = {};
for (const allow of ['same-user', 'any']) {
  const server = createServer({ service: 'calc', allow, handlers: { add: (_ctx, a, b) => a + b } });
  try {
    await server.listen(process.argv[1] + '.' + allow);
    out[allow] = 'listening';
  } catch (err) {
    out[allow] = { code: err.code, feature: err.feature, message: err.message };
  }
  await server.close();
}
console.log(JSON.stringify(out));
`;

it("without the addon, listen() with a policy fails at once (ERR_AFUNIX_UNSUPPORTED), not with ACCESS_DENIED for every client", async () => {
  ensureBuilt(pkg);
  const r = spawn(process.execPath, ['--input-type=module', '-e', POLICY_CHILD, join(tmp.dir, 'policy.sock')], {
    cwd: pkg,
    env: { ...process.env, AFUNIX_FORCE_FALLBACK: '1' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: r.stdout! }), 'line')) as [string];
  expect(JSON.parse(line)).toEqual({
    'same-user': { code: 'ERR_AFUNIX_UNSUPPORTED', feature: 'peerCredentials', message: expect.stringContaining("allow: 'same-user' would refuse every client") },
    any: 'listening',
  });
  expect((await once(r, 'exit'))[0]).toBe(0);
});

// A side without the addon cannot receive fds, and says so in its hello
// (fds: false): the other side fails its sends of fds at home, and the
// connection lives on. (A frame with fds reached it as a broken one, and
// the connection was lost: PROTOCOL_ERROR, then CONNECTION_CLOSED.)
const FDS_CHILD = `
import { openSync } from 'node:fs';
import { Fd, connect, createServer } from ${JSON.stringify(join(pkg, 'dist', 'index.js'))};
const [ownAddress, nativeAddress] = process.argv.slice(1);
const outcome = (p) => p.then((v) => ({ value: v }), (e) => ({ code: e.code }));
const server = createServer({ service: 'files', handlers: {
  add: (_ctx, a, b) => a + b,
  open: () => Fd.transfer(openSync('/dev/null', 'r')),
  take: () => 'took',
} });
await server.listen(ownAddress);
// (Listened to first: the end may come while the calls below are made.)
process.stdin.on('end', () => server.close().then(() => process.exit(0)));
console.log(JSON.stringify({ listening: true }));
await new Promise((r) => process.stdin.once('data', r)); // the native server is up
const files = await connect(nativeAddress, { service: 'files' });
console.log(JSON.stringify({ open: await outcome(files.open()), add: await outcome(files.add(1, 2)) }));
await files.$close();
`;

interface Files {
  methods: { add(a: number, b: number): number; open(): Fd; take(fd: Fd): string };
}

it('fds between a native side and one without the addon fail the call with ERR_AFUNIX_UNSUPPORTED, not the connection', async () => {
  ensureBuilt(pkg);
  const own = join(tmp.dir, 'files-fallback.sock');
  const nativeAddress = join(tmp.dir, 'files-native.sock');
  const r = spawn(process.execPath, ['--input-type=module', '-e', FDS_CHILD, own, nativeAddress], {
    cwd: pkg,
    env: { ...process.env, AFUNIX_FORCE_FALLBACK: '1' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: r.stdout! })[Symbol.asyncIterator]();
  expect(JSON.parse((await lines.next()).value as string)).toEqual({ listening: true });

  // Native client, fallback server: ours refused at home, theirs refused there.
  const files = await connect<Files>(own, { service: 'files' });
  const fd = openSync('/dev/null', 'r');
  await expect(files.take(Fd.from(fd))).rejects.toMatchObject({ code: 'ERR_AFUNIX_UNSUPPORTED' });
  closeSync(fd);
  await expect(files.open()).rejects.toMatchObject({ code: 'ERR_AFUNIX_UNSUPPORTED' });
  expect(await files.add(2, 3)).toBe(5);
  await files.$close();

  // Native server, fallback client: the answer with an fd is refused here.
  const server = createServer<Files>({ service: 'files', handlers: { add: (_ctx, a, b) => a + b, open: () => Fd.transfer(openSync('/dev/null', 'r')), take: () => 'took' } });
  await server.listen(nativeAddress);
  try {
    r.stdin!.write('go\n');
    expect(JSON.parse((await lines.next()).value as string)).toEqual({ open: { code: 'ERR_AFUNIX_UNSUPPORTED' }, add: { value: 3 } });
  } finally {
    r.stdin!.end();
    await server.close();
  }
  expect((await once(r, 'exit'))[0]).toBe(0);
});
