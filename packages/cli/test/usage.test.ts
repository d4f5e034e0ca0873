// What the CLI says about its own command line: limits it checks before
// connecting, hints, help texts and their exit statuses. Real CLI
// processes, and a real server where one is needed.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { afunix, cliMain, fixtures, oneLineError, outcomeOf, spawnCli, stderrMatching, testFileScope } from './helpers.js';

const { tmp, running, fixture } = testFileScope();
const sock = join(tmp.dir, 'fixture.sock');

beforeAll(async () => {
  // events: [] — the service names none, so watch warns about none.
  await fixture('service.mjs', sock, JSON.stringify({ events: [] }));
});

/** `afunix watch` until it says it is watching, then SIGINT: its outcome. */
async function watchBriefly(args: string[]) {
  const watcher = spawnCli(['watch', ...args]);
  const done = outcomeOf(watcher);
  await stderrMatching(watcher, /watching /);
  watcher.kill('SIGINT');
  return done;
}

describe('watch: event names a server would not take are refused before connecting (exit 2)', () => {
  it('a name longer than 256 characters', async () => {
    const r = await afunix(['watch', sock, 'tick', 'e'.repeat(257)]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toMatch(/^afunix: an event name of 257 characters is longer than a server accepts \(at most 256\): "e{32}"… \[USAGE\]$/);
    expect((await watchBriefly([sock, 'e'.repeat(256)])).code).toBe(0);
  });

  it('more than 4096 names (repeats count once)', async () => {
    const names = (n: number) => Array.from({ length: n }, (_, i) => `e${i}`);
    const r = await afunix(['watch', sock, ...names(4097)]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe('afunix: 4097 event names are more than one connection may watch (at most 4096) [USAGE]');
    expect((await watchBriefly([sock, ...names(4096), 'e0'])).code).toBe(0);
  });
});

describe('call: arguments that cannot be sent are a usage error, not the method throwing', () => {
  it('more --fd files than one message carries (253)', async () => {
    const fds = (n: number) => Array.from({ length: n }, () => ['--fd', '/dev/null']).flat();
    const r = await afunix(['call', sock, 'countFds', ...fds(254)]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe('afunix: --fd was given 254 times: at most 253 fds travel in one message [USAGE]');
    const most = await afunix(['call', sock, 'countFds', ...fds(253)]);
    expect(most.stderr).toBe('');
    expect(most.stdout).toBe('253\n');
  });
});

describe('an unknown option', () => {
  it.each([
    [['info', sock, '--jsn'], '--jsn (did you mean --json?) (see afunix info --help)'],
    [['info', sock, '--JSON'], '--JSON (did you mean --json?) (see afunix info --help)'],
    [['methods', sock, '--josn'], '--josn (did you mean --json?) (see afunix methods --help)'],
    [['call', sock, 'add', '--timout', '5'], '--timout (did you mean --timeout?) (see afunix call --help)'],
    [['call', sock, 'add', '--max-message', '5'], '--max-message (did you mean --max-message-size?) (see afunix call --help)'],
    [['ls', '--hlep'], '--hlep (did you mean --help?) (see afunix ls --help)'],
  ])('%j: suggests the nearest known option', async (args, message) => {
    const r = await afunix(args);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe(`afunix: unknown option ${message} [USAGE]`);
  });

  it('with no option near it, says where a value that starts with - goes', async () => {
    const r = await afunix(['call', sock, 'echo', '-x']);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe("afunix: unknown option -x (an argument that starts with '-' goes after --, as in -- -x) (see afunix call --help) [USAGE]");
  });
});

describe('call --args-file: arguments from a file or standard input', () => {
  it('reads one JSON array from a file: past what a command line holds', async () => {
    const file = join(tmp.dir, 'big-args.json');
    // One argv string may hold 128 KiB (MAX_ARG_STRLEN). (A regular
    // expression once checked the numbers here, and ran out of stack on a
    // string of 10 million characters: exit 70.)
    const text = 'x'.repeat(12_000_000);
    writeFileSync(file, JSON.stringify([text, { $base64: 'aGk=' }]));
    const r = await afunix(['call', sock, 'echo', '--args-file', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([text, { $base64: 'aGk=' }]);
  });

  it('- reads standard input; $fdN placeholders work as on the command line', async () => {
    const r = await afunixWithInput(['call', sock, 'add', '--args-file', '-'], '[40, 2]');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('42\n');
    // (A byte-order mark before the JSON, as some editors write one, is not an error.)
    const marked = await afunixWithInput(['call', sock, 'add', '--args-file', '-'], '\uFEFF[1, 2]');
    expect(marked.stderr).toBe('');
    expect(marked.stdout).toBe('3\n');
    const file = join(tmp.dir, 'label.txt');
    writeFileSync(file, 'content');
    const fd = await afunixWithInput(['call', sock, 'readLabelled', '--args-file', '-', '--fd', file], '["label", "$fd0"]');
    expect(fd.stdout).toBe('"label: content"\n');
  });

  it.each([
    ['{"a": 1}', 'afunix: --args-file - (standard input) must hold a JSON array, the argument list (as in [1, "two"]), not an object [USAGE]'],
    ['', 'afunix: --args-file - (standard input) is not JSON: it is empty [USAGE]'],
    ['[1,', /^afunix: --args-file - \(standard input\) is not JSON: .+ \[USAGE\]$/],
    ['[12345678901234567890]', /^afunix: --args-file - \(standard input\): 12345678901234567890 is beyond Number\.MAX_SAFE_INTEGER/],
    ['["12345678901234567890 \\" 1e400", 1e400]', /^afunix: --args-file - \(standard input\): 1e400 is beyond what a number can hold \[USAGE\]$/],
    ['[{"$base64": "!!!"}]', /is not valid base64/],
    ['["$fd3"]', /\$fd3 names --fd number 3, but 0 --fd option\(s\) were given/],
  ])('%j is checked as command-line arguments are (exit 2)', async (input, message) => {
    const r = await afunixWithInput(['call', sock, 'echo', '--args-file', '-'], input);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toMatch(message);
  });

  it('- from a terminal says how to end the input, then reads what is typed up to Ctrl-D', async () => {
    // (A pseudo-terminal as standard input, typed into by on-a-terminal.py.)
    // Two lines: what is read is everything up to Ctrl-D, not a line.
    const typer = spawn('python3', [join(fixtures, 'on-a-terminal.py'), '[40,\n 2]', process.execPath, cliMain, 'call', sock, 'add', '--args-file', '-'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const r = await outcomeOf(typer);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const typed = JSON.parse(r.stdout) as { prompt: string; stdout: string; stderr: string; code: number };
    expect(typed).toEqual({
      prompt: 'afunix: reading the argument list (a JSON array) from the terminal; end it with Ctrl-D\n',
      stdout: '42\n',
      stderr: '',
      code: 0,
    });
  });

  it('a file that cannot be read, or arguments given both ways, are usage errors', async () => {
    const missing = join(tmp.dir, 'no-such.json');
    const r = await afunix(['call', sock, 'echo', '--args-file', missing]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe(`afunix: cannot read --args-file ${missing}: ENOENT [USAGE]`);
    const both = await afunix(['call', sock, 'echo', '1', '--args-file', missing]);
    expect(both.code).toBe(2);
    expect(oneLineError(both.stderr)).toBe('afunix: the arguments go on the command line or in --args-file, not both [USAGE]');
  });
});

/** `afunix <args>` with `input` on its standard input. */
function afunixWithInput(args: string[], input: string) {
  const child = spawnCli(args, { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.end(input);
  return outcomeOf(child);
}

describe('call: a method the service does not have', () => {
  it('is a usage error that names the nearest method', async () => {
    for (const [typed, near] of [['ech', 'echo'], ['Count', 'count'], ['greeet', 'greet']]) {
      const r = await afunix(['call', sock, typed!]);
      expect(r.code).toBe(2);
      expect(oneLineError(r.stderr)).toBe(`afunix: the service at ${sock} has no method "${typed}" (did you mean "${near}"?) [METHOD_NOT_FOUND]`);
    }
  });

  it('lists the methods when none is near, or says where to find them when there are many', async () => {
    const few = join(tmp.dir, 'few.sock');
    await fixture('odd-describe.mjs', few, 'honest');
    const r = await afunix(['call', few, 'nosuch']);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe(`afunix: the service at ${few} has no method "nosuch" (its methods: ping, publish) [METHOD_NOT_FOUND]`);
    const many = await afunix(['call', sock, 'nosuch']);
    expect(oneLineError(many.stderr)).toMatch(new RegExp(`^afunix: the service at ${sock} has no method "nosuch" \\(it has \\d+: afunix methods ${sock} lists them\\) \\[METHOD_NOT_FOUND\\]$`));
  });

  it('without a hint when the service cannot describe itself', async () => {
    const refusing = join(tmp.dir, 'refusing.sock');
    await fixture('odd-describe.mjs', refusing, 'refused');
    const r = await afunix(['call', refusing, 'nosuch']);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe(`afunix: the service at ${refusing} has no method "nosuch" [METHOD_NOT_FOUND]`);
  });

  it('--timeout still bounds the call while the hint waits for a silent $describe', async () => {
    const silent = join(tmp.dir, 'silent.sock');
    await fixture('odd-describe.mjs', silent, 'silent');
    // (Before: the hint waited out its own 2 s, then said "no method", exit 2.)
    const r = await afunix(['call', silent, 'nosuch', '--timeout', '500']);
    expect(r.code).toBe(3);
    expect(oneLineError(r.stderr)).toBe('afunix: nosuch did not finish within 500 ms [ETIMEDOUT]');
  });
});

describe('help texts list the exit statuses each command can return', () => {
  const statusesOf = (help: string) => [...help.slice(help.indexOf('Exit status:')).matchAll(/^ {2}(\d+) +(.*)$/gm)].map((m) => Number(m[1]));
  const lineOf = (help: string, status: number) => new RegExp(`^ {2}${status} +.*(?:\\n {7}.*)*`, 'm').exec(help)?.[0];

  it.each([
    [[], [0, 1, 2, 3, 130, 141, 70]],
    [['info'], [0, 2, 3, 130, 141, 70]],
    [['methods'], [0, 2, 3, 130, 141, 70]],
    [['call'], [0, 1, 2, 3, 130, 141, 70]],
    [['watch'], [0, 2, 3, 141, 70]],
    [['ls'], [0, 2, 130, 141, 70]],
  ])('afunix %j --help', async (command, statuses) => {
    const r = await afunix([...command, '--help']);
    expect(r.code).toBe(0);
    expect(statusesOf(r.stdout)).toEqual(statuses);
  });

  it('in the same words everywhere (one source), and each in the README table', async () => {
    const helps = await Promise.all([[], ['info'], ['methods'], ['call'], ['watch'], ['ls']].map(async (c) => (await afunix([...c, '--help'])).stdout));
    for (const status of [141, 70]) {
      const lines = helps.map((h) => lineOf(h, status));
      expect(lines.every((l) => l !== undefined)).toBe(true);
      expect(new Set(lines).size).toBe(1);
    }
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    for (const status of statusesOf(helps[0]!)) expect(readme).toMatch(new RegExp(`^\\| ${status} \\|`, 'm'));
  });

  it('watch | head: the 141 that watch --help now lists', async () => {
    const watcher = spawnCli(['watch', sock, 'tick']);
    const done = outcomeOf(watcher);
    await stderrMatching(watcher, /watching tick/);
    watcher.stdout!.destroy(); // the reader goes away
    await afunix(['call', sock, 'publish', '"tick"', '1']);
    expect((await done).code).toBe(141);
  });
});

describe('--timeout', () => {
  it.each(['1.5', '0', '-5', '9007199254740992', '1e3'])('%s: a whole number of milliseconds, with the range', async (value) => {
    const r = await afunix(['info', sock, `--timeout=${value}`]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe(`afunix: --timeout needs a whole number of milliseconds from 1 to 9007199254740991, got "${value}" [USAGE]`);
  });
});

describe('no command, or help on something that is not one (exit 2, as git)', () => {
  it('afunix alone prints the overview on stderr and exits 2', async () => {
    const r = await afunix([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^Usage: afunix <command>/);
  });

  it.each([['help', 'nosuch'], ['--help', 'nosuch']])('afunix %s %s names the unknown topic', async (...args) => {
    const r = await afunix(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(oneLineError(r.stderr)).toBe('afunix: no help for "nosuch": it is not a command (commands: info, methods, call, watch, ls) [USAGE]');
  });

  it('a near command name is suggested; help help is the overview; help takes one topic', async () => {
    const near = await afunix(['cal']);
    expect(near.code).toBe(2);
    expect(oneLineError(near.stderr)).toBe('afunix: unknown command "cal" (did you mean call?) [USAGE]');
    expect(oneLineError((await afunix(['help', 'calll'])).stderr)).toBe('afunix: no help for "calll": it is not a command (did you mean call?) [USAGE]');
    for (const topic of ['help', '--help']) {
      const r = await afunix(['help', topic]);
      expect(r.code, topic).toBe(0);
      expect(r.stdout).toMatch(/^Usage: afunix <command>/);
    }
    const extra = await afunix(['help', 'call', 'extra']);
    expect(extra.code).toBe(2);
    expect(oneLineError(extra.stderr)).toBe('afunix: afunix help takes at most one command, got 2 [USAGE]');
  });

  it('afunix help alone is still the overview, exit 0', async () => {
    const r = await afunix(['help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: afunix <command>/);
  });
});

describe('a socket path longer than sun_path', () => {
  it('says the limit and how to get under it; the relative path it suggests works', async () => {
    const dir = join(tmp.dir, 'd'.repeat(100));
    mkdirSync(dir);
    await running.startIn(dir, 'service.mjs', './app.sock'); // bound by a relative path
    const long = join(dir, 'app.sock');
    const r = await afunix(['info', long]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe(
      `afunix: the socket path ${long} is too long: ${long.length} bytes, and a path may have at most 107 (sun_path holds 108 bytes on Linux, with the final NUL); use a relative path from nearer by (cd to its directory, then ./app.sock), or a socket in a shorter directory [USAGE]`,
    );
    const relative = await afunix(['info', './app.sock', '--json'], { cwd: dir });
    expect(relative.code).toBe(0);
    expect(JSON.parse(relative.stdout)).toMatchObject({ service: 'fixture' });
  });

  it('an abstract name: its own limit', async () => {
    const name = `@${'a'.repeat(120)}`;
    const r = await afunix(['info', name]);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toBe(`afunix: the abstract name ${name} is too long: 120 bytes, and a name may have at most 107 (sun_path holds 108 bytes on Linux, with the leading NUL) [USAGE]`);
  });
});

describe('ls and symlinks', () => {
  it('follows a symlink to a socket and shows it; lists one directory, not its subdirectories', async () => {
    const dir = join(tmp.dir, 'links');
    mkdirSync(join(dir, 'real'), { recursive: true });
    const server = await fixture('service.mjs', join(dir, 'real', 'app.sock'));
    symlinkSync('real/app.sock', join(dir, 'app-link.sock'));
    symlinkSync('nowhere.sock', join(dir, 'dangling.sock'));
    writeFileSync(join(dir, 'plain.txt'), 'x');
    symlinkSync('plain.txt', join(dir, 'file-link'));
    const r = await afunix(['ls', dir, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { socket: join(dir, 'app-link.sock'), target: 'real/app.sock', state: 'alive', service: 'fixture', version: '2.3.4', pid: server.pid },
    ]);
    const table = await afunix(['ls', dir]);
    expect(table.stdout).toMatch(new RegExp(`^alive\\s+${join(dir, 'app-link.sock')} -> real/app\\.sock\\s+fixture\\s+2\\.3\\.4\\s+${server.pid}$`, 'm'));
    const sub = await afunix(['ls', join(dir, 'real'), '--json']);
    expect(JSON.parse(sub.stdout)).toEqual([{ socket: join(dir, 'real', 'app.sock'), state: 'alive', service: 'fixture', version: '2.3.4', pid: server.pid }]);
  });
});
