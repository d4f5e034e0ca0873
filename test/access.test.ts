// Who gets in. Clients run as another uid (nobody, 65534): spawning them
// needs root, which CI has; without it these tests fail rather than skip.
// - the socket's mode and its directory's mode keep another uid out, from
//   the first moment the socket exists (a prober hammering the path while
//   the server starts, under umask 000, never gets in);
// - peer-credential policies refuse before any call runs, even a call
//   pipelined right behind the hello;
// - the listener never follows a symlink planted at its path, and never
//   unlinks anything that is not a stale socket.
import { spawn } from 'node:child_process';
import {
  chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, unlinkSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeHeader } from '../packages/framing/dist/index.js';
import { decode, encodeToBuffer, prepareValue } from '../packages/rpc/src/codec.js';
import { createServer as createSocketServer } from '../packages/transport/dist/index.js';
import { type Target, fixtures, report, startTarget, tempDir } from './helpers.js';

const NOBODY = 65534;
const tmp = tempDir();
const targets: Target[] = [];

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error('these tests spawn clients as uid 65534 and need root (CI runs as root)');
  chmodSync(tmp.dir, 0o755); // nobody may traverse it unless a test says otherwise
});

afterAll(async () => {
  await Promise.allSettled(targets.map((t) => t.kill()));
  tmp.cleanup();
});

async function target(path: string, options: object = {}, wrap?: string[]): Promise<Target> {
  const t = await startTarget(path, options, wrap ? { wrap } : {});
  targets.push(t);
  return t;
}

/** Runs knock.mjs as nobody; resolves with its one line of JSON. */
function knock(address: string, mode: string, ...args: string[]): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [join(fixtures, 'knock.mjs'), address, mode, ...args], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) => resolve(JSON.parse(line) as Record<string, unknown>));
    child.once('exit', (code) => reject(new Error(`knock.mjs exited (${code}) without a report`)));
  });
}

// knock.mjs only pushes bytes: the frames are made here, and what came back
// is read here, with the codec's sources (the fixture runs built code,
// where the codec is inside the bundle).
const frame = (message: unknown[]): Buffer => {
  const payload = encodeToBuffer(message);
  return Buffer.concat([encodeHeader(payload.length), payload]);
};

let knockFiles = 0;
/** knock.mjs's send mode: `bytes` in one write; what came back, as messages. */
async function knockWith(address: string, bytes: Buffer, waitMs: number) {
  const file = join(tmp.dir, `knock-${knockFiles++}.bin`);
  writeFileSync(file, bytes, { mode: 0o644 });
  const r = await knock(address, 'send', file, String(waitMs));
  if (typeof r.reply !== 'string') throw new Error(`knock.mjs sent nothing: ${JSON.stringify(r)}`);
  const reply = Buffer.from(r.reply, 'base64');
  const messages: unknown[][] = [];
  for (let at = 0; at + 8 <= reply.length; ) {
    const len = reply.readUInt32LE(at + 4);
    messages.push(decode(reply.subarray(at + 8, at + 8 + len), null, () => {}).message as unknown[]);
    at += 8 + len;
  }
  return { sentBytes: r.sentBytes as number, answeredMs: r.answeredMs as number | null, messages };
}

const helloErrorOf = (messages: unknown[][]) =>
  (messages.find((m) => m[0] === 0)?.[1] as { error?: { code?: string } } | undefined)?.error?.code ?? null;

describe('file permissions keep another uid out', () => {
  it('socket mode 0600: EACCES for nobody; 0666: nobody gets in', async () => {
    const locked = await target(join(tmp.dir, 'locked.sock'), { mode: 0o600 });
    const open = await target(join(tmp.dir, 'open.sock'), { mode: 0o666 });
    expect(statSync(locked.address).mode & 0o777).toBe(0o600);
    expect(await knock(locked.address, 'connect')).toEqual({ ok: false, stage: 'connect', code: 'EACCES' });
    expect(await knock(open.address, 'connect')).toEqual({ ok: true, result: 3 });
  });

  it('a directory only its owner may enter: EACCES for nobody, whatever the socket mode', async () => {
    const dir = join(tmp.dir, 'private');
    mkdirSync(dir, { mode: 0o700 });
    const t = await target(join(dir, 'inside.sock'), { mode: 0o666 });
    expect(await knock(t.address, 'connect')).toEqual({ ok: false, stage: 'connect', code: 'EACCES' });
  });

  it('no moment with looser permissions: a prober as nobody never connects while the server starts under umask 000 (x5)', async () => {
    const path = join(tmp.dir, 'race.sock');
    const outcomes: Record<string, number> = {};
    for (let i = 0; i < 5; i++) {
      // The prober starts first and keeps knocking for 2.5 s; the server
      // binds, sets mode 0600 and listens meanwhile, with umask 000 (a
      // socket created as 0777).
      const probing = knock(path, 'probe', '2500');
      await new Promise((r) => setTimeout(r, 300));
      const t = await target(path, { mode: 0o600 }, ['bash', '-c', 'umask 000; exec "$@"', 'umask000']);
      const got = await probing;
      for (const [k, v] of Object.entries(got)) outcomes[k] = (outcomes[k] ?? 0) + (v as number);
      await t.kill();
      targets.splice(targets.indexOf(t), 1);
    }
    expect(outcomes.CONNECTED).toBeUndefined();
    expect(outcomes.EACCES).toBeGreaterThan(0); // the prober did reach the socket while it existed
    report('prober as nobody during 5 server starts (umask 000, mode 0600)', outcomes);
  }, 90_000);
});

describe('peer-credential policies refuse before any call runs', () => {
  // (uid 0 is on every list: the test's own monitor connection is root.)
  const cases: Array<[string, unknown, boolean]> = [
    ['same-user (the server runs as root)', 'same-user', false],
    ['root only', 'root', false],
    ['an allow-list without nobody', { uids: [0, 12345], gids: [12345] }, false],
    ['an allow-list with nobody', { uids: [0, NOBODY] }, true],
  ];
  let n = 0;
  it.each(cases)('%s: nobody admitted? %s', async (_what, allow, admitted) => {
    const t = await target(join(tmp.dir, `policy-${n++}.sock`), { allow, mode: 0o666 });
    const before = await t.stats();
    const connected = await knock(t.address, 'connect');
    // A hello and two calls in one write, without waiting for the server's answer.
    const hello = frame([0, { protocol: 1, streams: [] }]);
    const { messages } = await knockWith(t.address, Buffer.concat([hello, frame([1, 1, 'add', [1, 2]]), frame([2, 'add', [3, 4]])]), 3_000);
    const pipelined = { helloError: helloErrorOf(messages), kinds: messages.map((m) => m[0]) };
    const after = await t.stats();
    if (admitted) {
      expect(connected).toEqual({ ok: true, result: 3 });
      expect(pipelined.helloError).toBe(null);
      expect(pipelined.kinds).toContain(0); // the server's hello, and no error in it
      expect(after.counts.calls - before.counts.calls).toBe(3); // add over connect, then add and the notification
    } else {
      expect(connected).toEqual({ ok: false, stage: 'connect', code: 'ACCESS_DENIED' });
      expect(pipelined).toEqual({ helloError: 'ACCESS_DENIED', kinds: [0] });
      expect(after.counts.calls).toBe(before.counts.calls); // not one handler ran
      expect((after.counts.handshakeErrors.ACCESS_DENIED ?? 0) - (before.counts.handshakeErrors.ACCESS_DENIED ?? 0)).toBe(2);
    }
  });
});

describe("a refused peer's hello", () => {
  it('is never decoded: 8 MiB of the costliest shape cost the server no event-loop time', async () => {
    const t = await target(join(tmp.dir, 'refusing.sock'), { allow: 'root', mode: 0o666 });
    await t.monitor.resetDelay();
    // A hello padded with 8 MiB of Sets, the costliest shape to decode.
    const sets: Array<Set<number>> = [];
    for (let i = 0; sets.length * 4 < 8 * 1024 * 1024; i++) sets.push(new Set([i & 127]));
    const { sentBytes, answeredMs, messages } = await knockWith(t.address, frame([0, prepareValue({ protocol: 1, streams: [], padding: sets }, 'hello')]), 30_000);
    const refused = { helloBytes: sentBytes, answeredMs, helloError: helloErrorOf(messages) };
    const { eventLoopDelay, counts } = await t.stats();
    expect(refused).toMatchObject({ helloError: 'ACCESS_DENIED' });
    expect(counts.handshakeErrors).toEqual({ ACCESS_DENIED: 1 });
    // Decoding it would take seconds (Sets: ~0.4 s of CPU per MiB here).
    expect(eventLoopDelay.max).toBeLessThan(500);
    report("an 8 MiB hello from a refused peer", { ...refused, serverEventLoopDelayMaxMs: Math.round(eventLoopDelay.max) });
  }, 60_000);
});

describe('the listener and what lies at its path', () => {
  const listen = (path: string) => createSocketServer().listen(path);

  it('refuses a symlink planted at its path (to a file, to a live socket, dangling), and leaves it and its target alone', async () => {
    const victim = join(tmp.dir, 'victim.txt');
    writeFileSync(victim, 'precious');
    chmodSync(victim, 0o600);
    const live = await listen(join(tmp.dir, 'live.sock'));
    const links: Array<[string, string]> = [
      ['to a file', victim],
      ['to a live socket', join(tmp.dir, 'live.sock')],
      ['dangling', join(tmp.dir, 'nowhere')],
    ];
    for (const [what, to] of links) {
      const path = join(tmp.dir, `link-${what.replace(/ /g, '-')}.sock`);
      symlinkSync(to, path);
      await expect(listen(path), what).rejects.toMatchObject({ code: 'EADDRINUSE' });
      expect(lstatSync(path).isSymbolicLink()).toBe(true);
      expect(readlinkSync(path)).toBe(to);
    }
    expect(readFileSync(victim, 'utf8')).toBe('precious');
    expect(statSync(victim).mode & 0o777).toBe(0o600);
    expect(existsSync(join(tmp.dir, 'nowhere'))).toBe(false);
    await live.close();
  });

  it('never unlinks what is not a stale socket: a file, a directory, a FIFO, a live socket', async () => {
    const file = join(tmp.dir, 'file.sock');
    writeFileSync(file, 'data');
    const dir = join(tmp.dir, 'dir.sock');
    mkdirSync(dir);
    const fifo = join(tmp.dir, 'fifo.sock');
    await new Promise<void>((resolve, reject) => spawn('mkfifo', [fifo]).once('exit', (c) => (c === 0 ? resolve() : reject(new Error('mkfifo')))));
    const live = await listen(join(tmp.dir, 'taken.sock'));
    for (const path of [file, dir, fifo, join(tmp.dir, 'taken.sock')]) {
      await expect(listen(path), path).rejects.toMatchObject({ code: 'EADDRINUSE' });
      expect(existsSync(path)).toBe(true);
    }
    expect(readFileSync(file, 'utf8')).toBe('data');
    expect(lstatSync(fifo).isFIFO()).toBe(true);
    await live.close();
  });

  it('replaces a stale socket, and close() removes only the socket file it created', async () => {
    // A crashed server's file: a socket nobody listens on.
    const crashed = join(tmp.dir, 'crashed.sock');
    await new Promise((resolve) => {
      const code = `require('net').createServer().listen(${JSON.stringify(crashed)}, () => process.kill(process.pid, 'SIGKILL'))`;
      spawn(process.execPath, ['-e', code]).once('exit', resolve);
    });
    expect(lstatSync(crashed).isSocket()).toBe(true);
    const replacing = await listen(crashed);
    expect(lstatSync(crashed).isSocket()).toBe(true);
    // A server whose file was deleted and taken by someone else's socket:
    // its close() leaves that one alone.
    const path = join(tmp.dir, 'replaced.sock');
    const first = await listen(path);
    unlinkSync(path);
    const other = await listen(path);
    await first.close();
    expect(existsSync(path)).toBe(true);
    await other.close();
    expect(existsSync(path)).toBe(false);
    await replacing.close();
    expect(existsSync(crashed)).toBe(false);
  });
});
