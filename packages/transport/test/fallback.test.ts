// The node:net fallback, run for real: a child process with
// AFUNIX_FORCE_FALLBACK=1 imports the built package (dist/), so the addon is
// never loaded there, while this process uses the native addon. Both speak
// the same wire (a unix stream socket), so each side serves the other.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../../../test/ensure-built.js';
import { connect, createServer, type UnixServer, type UnixSocket } from '../src/index.js';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const fixture = join(pkg, 'test', 'fixtures', 'fallback-child.mjs');

function collect(sock: UnixSocket): Promise<string> {
  const parts: Buffer[] = [];
  sock.on('data', (d: Buffer) => parts.push(d));
  return once(sock, 'end').then(() => Buffer.concat(parts).toString());
}

interface Thrown {
  code: string;
  feature?: string;
  message: string;
}

let dir: string;
let nativeServer: UnixServer;
let child: ChildProcess;
let childPid: number;
let nativeSawPid: number | undefined;
let fromFallbackClient: Promise<string>;
let lines: AsyncIterator<string>;
let stderr = '';
// What the child reports; filled in by the first and last tests in order.
let result: Record<string, any>;
let nativeToFallback: { reply: string; peerPid: number };

async function nextMessage(): Promise<Record<string, any>> {
  const next = await lines.next();
  if (next.done) throw new Error(`the child exited without reporting; stderr:\n${stderr}`);
  const msg = JSON.parse(next.value) as Record<string, any>;
  if (msg.fatal) throw new Error(`the child failed: ${msg.fatal}\nso far: ${JSON.stringify(msg.result)}`);
  return msg;
}

beforeAll(async () => {
  ensureBuilt(pkg);
  dir = mkdtempSync(join(tmpdir(), 'afunix-fb-'));
  // A native server for the fallback client: answers once the client half-closes.
  let gotClient: (v: string) => void;
  fromFallbackClient = new Promise((r) => (gotClient = r));
  nativeServer = createServer((s) => {
    nativeSawPid = s.peerCredentials().pid;
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => {
      const text = Buffer.concat(parts).toString();
      gotClient(text);
      s.end(`native heard: ${text}`);
    });
  });
  await nativeServer.listen(join(dir, 'native.sock'));

  child = spawn(process.execPath, [fixture, dir, join(dir, 'native.sock')], {
    env: { ...process.env, AFUNIX_FORCE_FALLBACK: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  childPid = child.pid!;
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();

  // The child runs its own checks, talks to our native server, then serves us.
  const ready = await nextMessage();
  const c = await connect(ready.ready as string);
  const reply = collect(c);
  const peerPid = c.peerCredentials().pid;
  c.end('from native');
  nativeToFallback = { reply: await reply, peerPid };
  child.stdin!.end();
  result = (await nextMessage()).result as Record<string, any>;
});

afterAll(async () => {
  if (child && child.exitCode === null) child.kill();
  await nativeServer?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('without the native addon (AFUNIX_FORCE_FALLBACK=1, built package)', () => {
  it('features says the addon is missing, and everything that needs it', () => {
    expect(result.loadError).toMatch(/AFUNIX_FORCE_FALLBACK/);
    expect(result.features.native).toBe(false);
    // Everything needs the addon, except abstract names, which net reaches on Linux.
    for (const [name, value] of Object.entries(result.features)) {
      expect([name, value]).toEqual([name, name === 'abstract' && process.platform === 'linux']);
    }
  });

  it('serves and connects stream sockets through net, with half-close', () => {
    // The server replied only after the client's end(): half-open works.
    expect(result.echo).toBe('echo:hello world');
    expect(result.client).toEqual({ type: 'stream', address: '', remoteAddress: join(dir, 'self.sock') });
    expect(result.server).toEqual({
      type: 'stream',
      address: join(dir, 'self.sock'),
      remoteAddress: '',
      listening: true,
    });
    expect(result.selfFileRemoved).toBe(true);
  });

  it('setReceiver gets plain chunks; pauseReading holds them until resumeReading', () => {
    expect(result.server.unexpectedExtras).toBeUndefined();
    expect(result.pause).toEqual({ whilePaused: '', after: 'abcdef' });
  });

  it('setReceiver after a read: what the Readable held comes first, on the next tick', () => {
    expect(result.lateReceiver).toEqual({ greeting: 'HELLO', atOnce: 0, after: 'rest|second' });
  });

  it('connect takes timeout: Infinity, and an aborted signal fails it with ABORT_ERR', () => {
    expect(result.connectOptions).toEqual({ untimed: 'no error', aborted: 'ABORT_ERR' });
  });

  it.each([
    ['fdPassing', 'fdPassing'],
    ['peerCredentials', 'peerCredentials'],
    ['peerPidfd', 'peerPidfd'],
    ['socketPair', 'socketPair'],
    ['fromFd', 'fromFd'],
    ['seqpacket', 'seqpacket'],
    ['seqpacketServer', 'seqpacket'],
    ['dgram', 'dgram'],
    ['autobind', 'autobind'],
    ['passCredentials', 'passCredentials'],
  ])('%s fails with ERR_AFUNIX_UNSUPPORTED naming %s', (call, feature) => {
    const err = result.unsupported[call] as Thrown;
    expect(err).toMatchObject({ code: 'ERR_AFUNIX_UNSUPPORTED', feature });
    expect(err.message).toContain(feature);
  });

  it('keeps the bind safety rules: non-sockets and live servers left alone, stale files replaced', () => {
    const s = result.safety;
    expect(s.overFile).toMatchObject({ code: 'EADDRINUSE' });
    expect(s.fileIntact).toBe(true);
    expect(s.staleReplaced).toBe('fresh');
    expect(s.overLive).toMatchObject({ code: 'EADDRINUSE', message: expect.stringContaining('(a server is listening there)') });
    expect(s.liveStillThere).toBe(true);
    expect(s.overOtherType).toMatchObject({ code: 'EADDRINUSE', message: expect.stringContaining('(a server of another socket type is listening there)') });
    expect(s.otherStillThere).toBe(true);
  });

  it('applies mode, and close() does not remove a file that is no longer ours', () => {
    expect(result.safety.mode).toBe('600');
    expect(result.safety.foreignKept).toBe(true);
  });

  it.runIf(process.platform === 'linux')('maps @name to an abstract address and refuses mode for it', () => {
    const name = result.safety.abstract.server as string;
    expect(name).toMatch(/^@afunix-fallback-/);
    expect(result.safety.abstract).toEqual({ server: name, remote: name, echoed: name });
    expect(result.safety.abstractMode).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  });

  it('a fallback client talks to a native server', async () => {
    expect(await fromFallbackClient).toBe('from fallback');
    expect(result.toNative).toBe('native heard: from fallback');
    expect(nativeSawPid).toBe(childPid);
  });

  it('a native client talks to a fallback server', () => {
    expect(nativeToFallback.reply).toBe('fallback heard: from native');
    expect(nativeToFallback.peerPid).toBe(childPid);
    expect(result.fromNative).toEqual(['from native']);
  });
});
