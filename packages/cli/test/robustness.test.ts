// Defects a review found: output that cannot be written, long timeouts,
// arguments that cannot travel, keys and numbers that changed on the way,
// and error lines that were not one line. Real CLI processes, real sockets.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { NOBODY, afunix, cliMain, isRoot, oneLineError, outcomeOf, spawnCli, stderrMatching, tempDir, testFileScope } from './helpers.js';

const { tmp, fixture } = testFileScope();
const sock = join(tmp.dir, 'fixture.sock');

beforeAll(async () => {
  await fixture('service.mjs', sock);
});

/** `afunix <args>` with stdout on a file opened for writing (e.g. /dev/full). */
async function afunixTo(path: string, args: string[]) {
  const fd = openSync(path, 'w');
  try {
    return await outcomeOf(spawnCli(args, { stdio: ['ignore', fd, 'pipe'] }));
  } finally {
    closeSync(fd);
  }
}

describe('output that cannot be written', () => {
  // As a shell runs it: `afunix ... | head -1`, and the status the CLI ended with.
  const piped = (command: string) =>
    outcomeOf(spawn('bash', ['-c', `${command} | head -1; echo "status \${PIPESTATUS[0]}"`], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const cli = `'${process.execPath}' '${cliMain}'`;

  it('a reader that goes away (| head) ends the CLI quietly with 141', async () => {
    const call = await piped(`${cli} call '${sock}' count 1000000`);
    expect(call.stdout).toBe('{"i":0,"square":0}\nstatus 141\n');
    expect(call.stderr).toBe('');
    // watch: the first event fills head, the second finds the pipe closed.
    const publish = `${cli} call '${sock}' publish '"tick"'`;
    const watch = await piped(`(sleep 1; ${publish} 1; sleep 0.5; ${publish} 2) >/dev/null & ${cli} watch '${sock}' tick`);
    expect(watch.stdout).toBe('{"event":"tick","args":[1]}\nstatus 141\n');
    expect(watch.stderr).toMatch(/^afunix: watching tick on .*\n$/);
  });

  it('a full disk is one line and exit 2, for results, tables and help alike', async () => {
    for (const args of [['info', sock], ['call', sock, 'add', '1', '2'], ['--help'], ['methods', sock]]) {
      const r = await afunixTo('/dev/full', args);
      expect(r.code).toBe(2);
      expect(oneLineError(r.stderr)).toMatch(/^afunix: cannot write the output: .* \[ENOSPC\]$/);
    }
  });
});

describe('call --timeout', () => {
  it('longer than setTimeout can wait (2^31 - 1 ms) still waits for the call', async () => {
    const r = await afunix(['call', sock, 'slow', '300', '--timeout', '3000000000']);
    expect(r.stderr).toBe(''); // no TimeoutOverflowWarning either
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toBe('done');
  });
});

describe('arguments that cannot be sent are a usage error (exit 2)', () => {
  const nested = (levels: number) => '['.repeat(levels) + ']'.repeat(levels);

  it('too deeply nested: refused before sending, not a stack overflow nor a remote failure', async () => {
    for (const levels of [129, 2000, 50_000]) {
      const r = await afunix(['call', sock, 'echo', '1', nested(levels)]);
      expect(r.code).toBe(2);
      expect(oneLineError(r.stderr)).toBe('afunix: the arguments nest deeper than 127 levels, more than can be sent [USAGE]');
    }
    const deepest = await afunix(['call', sock, 'echo', '1', nested(127)]);
    expect(deepest.code).toBe(0);
  });

  it('too large for the server: said locally, not "<method> threw"', async () => {
    const small = join(tmp.dir, 'small.sock');
    await fixture('service.mjs', small, JSON.stringify({ maxMessageSize: 4096 }));
    const r = await afunix(['call', small, 'echo', JSON.stringify('x'.repeat(10_000))]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toMatch(/^afunix: arguments cannot be sent: .*more than the peer accepts \(4096\) \[MESSAGE_TOO_LARGE\]$/);
  });
});

describe('keys and numbers arrive as written, or not at all', () => {
  it('a "__proto__" key is kept: in arguments and in printed results', async () => {
    const sent = await afunix(['call', sock, 'keys', '{"__proto__": {"x": 1}, "a": 2}']);
    expect(sent.code).toBe(0);
    // Both keys reach the server (whose msgpack decoder spells the first "__proto_").
    expect(JSON.parse(sent.stdout)).toHaveLength(2);
    const printed = await afunix(['call', sock, 'protoMap']);
    expect(printed.code).toBe(0);
    expect(printed.stdout).toBe('{\n  "__proto__": 1,\n  "a": 2\n}\n');
  });

  it.each([
    ['12345678901234567890', /12345678901234567890 is beyond Number\.MAX_SAFE_INTEGER.*BigInt/],
    ['[1, -9007199254740993]', /-9007199254740993 is beyond Number\.MAX_SAFE_INTEGER/],
    ['9007199254740993.0', /9007199254740993\.0 is beyond Number\.MAX_SAFE_INTEGER/],
    ['1e400', /1e400 is beyond what a number can hold/],
    ['{"n": -1e999}', /-1e999 is beyond what a number can hold/],
    ['{"$base64": "!!!"}', /\{"\$base64": "!!!"\} is not valid base64/],
    ['{"$base64": "AAECA"}', /is not valid base64/],
  ])('%s is refused (exit 2) rather than changed', async (token, message) => {
    const r = await afunix(['call', sock, 'echo', token]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it('what a number holds exactly, numbers inside strings, and valid base64 still pass', async () => {
    const r = await afunix(['call', sock, 'echo', '[9007199254740991, 1.5e300, "1e400", {"$base64": "aGk"}, {"$base64": "aGk="}]']);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual([9007199254740991, 1.5e300, '1e400', { $base64: 'aGk=' }, { $base64: 'aGk=' }]);
  });
});

describe('one line per error', () => {
  it('a remote message with line breaks is printed on one line', async () => {
    const r = await afunix(['call', sock, 'failLines']);
    expect(r.code).toBe(1);
    expect(oneLineError(r.stderr)).toBe('afunix: failLines threw RpcError: first line\\nsecond line\\r\\nthird [E_LINES]');
  });
});

describe('watch', () => {
  it.each(['newListener', 'removeListener'])('refuses %s, an EventEmitter name, with a usage error', async (name) => {
    const r = await afunix(['watch', sock, 'tick', name]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toMatch(new RegExp(`cannot watch an event named "${name}": the name is reserved by Node's EventEmitter.*\\[USAGE\\]$`));
    expect(r.stdout).toBe('');
  });
});

describe('ls @', () => {
  it('lists an abstract name with spaces in full', async () => {
    const name = `@afunix cli test ${process.pid} with spaces`;
    await fixture('service.mjs', name);
    const r = await afunix(['ls', '@', '--json']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(JSON.stringify(name));
  });
});

describe("a peer's text cannot drive the terminal", () => {
  const raw = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

  it('control characters in its service name, version, errors and results are shown escaped', async () => {
    const dir = tempDir();
    try {
      const evil = join(dir.dir, 'evil.sock');
      await fixture(
        'service.mjs',
        evil,
        JSON.stringify({ service: 'evil\u001b[2J\u001b[31m', version: '1\nalive  /tmp/forged.sock  bank  9.9', events: ['tick\u001b[2J', 'x\nafunix: all good'] }),
      );
      const info = await afunix(['info', evil]);
      expect(info.code).toBe(0);
      expect(info.stdout).not.toMatch(raw);
      expect(info.stdout).toContain('evil\\u001b[2J\\u001b[31m');
      expect(info.stdout).toContain('1\\nalive  /tmp/forged.sock  bank  9.9');
      // One row for the one socket: the version cannot forge a second.
      const ls = await afunix(['ls', dir.dir]);
      expect(ls.code).toBe(0);
      expect(ls.stdout).not.toMatch(raw);
      expect(ls.stdout.trimEnd().split('\n')).toHaveLength(2);
      const methods = await afunix(['methods', evil]);
      expect(methods.code).toBe(0);
      expect(methods.stdout).not.toMatch(raw);
      const failed = await afunix(['call', evil, 'failEscapes']);
      expect(failed.code).toBe(1);
      expect(failed.stderr).not.toMatch(raw);
      expect(failed.stderr).toContain('bad\\u001b[31mred\\u009b2J [E\\u001b[0m]');
      // watch warns of an event the server does not name, listing those it does.
      const watcher = spawnCli(['watch', evil, 'other']);
      const watching = outcomeOf(watcher, 15_000);
      await stderrMatching(watcher, /watching other/);
      watcher.kill('SIGINT');
      const watched = await watching;
      expect(watched.code).toBe(0);
      expect(watched.stderr).not.toMatch(raw);
      expect(watched.stderr).toContain('(it names: tick\\u001b[2J, x\\nafunix: all good)');
      const printed = await afunix(['call', evil, 'controls']);
      expect(printed.code).toBe(0);
      expect(printed.stdout).not.toMatch(raw);
      expect(JSON.parse(printed.stdout)).toBe('csi\u009b31m ls\u2028x \u202eevil');
    } finally {
      dir.cleanup();
    }
  });
});

describe('interrupted before the call is made', () => {
  // Whether a thread of `pid` sleeps in the kernel function `where`.
  function sleepsIn(pid: number, where: string): boolean {
    try {
      return readdirSync(`/proc/${pid}/task`).some((tid) => readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8') === where);
    } catch {
      return false;
    }
  }

  // Until a thread of `pid` waits in open(2) for a writer of a FIFO.
  async function waitsForWriter(pid: number): Promise<void> {
    for (let waited = 0; !sleepsIn(pid, 'wait_for_partner'); waited += 20) {
      if (waited > 10_000) throw new Error('the CLI never waited in open(2) for a writer of the FIFO');
      await delay(20);
    }
  }

  it('a signal while connecting: call says it was interrupted (130), watch ends as on any signal (0)', async () => {
    const silent = join(tmp.dir, 'silent.sock');
    const server = await fixture('not-afunix.mjs', silent, 'silent');
    const lines = createInterface({ input: server.child.stdout! });
    const cases = [
      { args: ['call', silent, 'add', '1', '2'], signal: 'SIGTERM', code: 130, stderr: 'afunix: add was interrupted [INTERRUPTED]' },
      { args: ['watch', silent, 'tick'], signal: 'SIGINT', code: 0, stderr: '' },
    ] as const;
    for (const c of cases) {
      const connected = once(lines, 'line'); // the server has the connection; no hello will come
      const child = spawnCli([...c.args]);
      const outcome = outcomeOf(child, 15_000);
      await connected;
      child.kill(c.signal);
      const r = await outcome;
      expect({ code: r.code, signal: r.signal }, c.args[0]).toEqual({ code: c.code, signal: null });
      expect(r.stderr.trim(), c.args[0]).toBe(c.stderr);
    }
  });

  it('watch: a signal while the server leaves $describe unanswered ends it at once (0), with no "watching" line', async () => {
    const silent = join(tmp.dir, 'silent-describe.sock');
    await fixture('odd-describe.mjs', silent, 'silent');
    // (A long --timeout: before, the watch waited it out, signal or not.)
    const child = spawnCli(['watch', silent, 'tick', '--timeout', '60000']);
    const outcome = outcomeOf(child, 15_000);
    await delay(1000); // connected and subscribed by then; $describe unanswered
    child.kill('SIGINT');
    const r = await outcome;
    expect({ code: r.code, signal: r.signal }).toEqual({ code: 0, signal: null });
    expect(r.stderr).not.toContain('watching');
  });

  it('an --fd FIFO nobody writes to: --timeout bounds the wait (2), SIGINT ends it (130), and the CLI exits', async () => {
    const fifo = join(tmp.dir, 'fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const timedOut = await afunix(['call', sock, 'add', '--fd', fifo, '--timeout', '300'], {});
    expect({ code: timedOut.code, signal: timedOut.signal }).toEqual({ code: 2, signal: null });
    expect(oneLineError(timedOut.stderr)).toBe(`afunix: cannot open the --fd files within 300 ms (a FIFO waits for a writer): ${fifo} [USAGE]`);
    const child = spawnCli(['call', sock, 'add', '--fd', fifo]);
    const outcome = outcomeOf(child, 15_000);
    await waitsForWriter(child.pid!);
    child.kill('SIGINT');
    const r = await outcome;
    expect({ code: r.code, signal: r.signal }).toEqual({ code: 130, signal: null });
    expect(oneLineError(r.stderr)).toBe('afunix: add was interrupted [INTERRUPTED]');
  });

  it('an --args-file FIFO nobody writes to: bounded as an --fd one, --timeout (2) and SIGTERM (130)', async () => {
    const fifo = join(tmp.dir, 'args-fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const timedOut = await afunix(['call', sock, 'add', '--args-file', fifo, '--timeout', '300'], {});
    expect({ code: timedOut.code, signal: timedOut.signal }).toEqual({ code: 2, signal: null });
    expect(oneLineError(timedOut.stderr)).toBe('afunix: cannot read --args-file within 300 ms (a FIFO or standard input waits for its writer to finish) [USAGE]');
    const child = spawnCli(['call', sock, 'add', '--args-file', fifo]);
    const outcome = outcomeOf(child, 15_000);
    await waitsForWriter(child.pid!);
    child.kill('SIGTERM');
    const r = await outcome;
    expect({ code: r.code, signal: r.signal }).toEqual({ code: 130, signal: null });
    expect(oneLineError(r.stderr)).toBe('afunix: add was interrupted [INTERRUPTED]');
  });

  // (Needs root: the CLI runs as another user, who may read the FIFO but not write it.)
  it.runIf(isRoot)('a FIFO it may read but not write: its open cannot be called off, so the CLI ends by its own signal, at once', async () => {
    const dir = tempDir();
    try {
      chmodSync(dir.dir, 0o755);
      const fifo = join(dir.dir, 'read-only.fifo');
      expect(spawnSync('mkfifo', ['-m', '0644', fifo]).status).toBe(0);
      const asNobody = { uid: NOBODY, gid: NOBODY };
      const timedOut = await outcomeOf(spawnCli(['call', sock, 'add', '--fd', fifo, '--timeout', '300'], asNobody), 15_000);
      expect({ code: timedOut.code, signal: timedOut.signal }).toEqual({ code: null, signal: 'SIGTERM' });
      expect(oneLineError(timedOut.stderr)).toBe(`afunix: cannot open the --fd files within 300 ms (a FIFO waits for a writer): ${fifo} [USAGE]`);
      const child = spawnCli(['call', sock, 'add', '--fd', fifo], asNobody);
      const outcome = outcomeOf(child, 15_000);
      await waitsForWriter(child.pid!);
      child.kill('SIGINT');
      const r = await outcome;
      expect({ code: r.code, signal: r.signal }).toEqual({ code: null, signal: 'SIGINT' }); // 130 to a shell
      expect(oneLineError(r.stderr)).toBe('afunix: add was interrupted [INTERRUPTED]');
    } finally {
      dir.cleanup();
    }
  });
});
