// A guided run: starts daemon.mjs on a private socket, drives it with
// ctl.mjs the way you would from a shell, and stops it. Exits 0 when the
// daemon has exited cleanly.
// @ts-check
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// `node main.mjs | head -1`: once the reader of stdout is gone, print nothing
// more but finish as usual: the daemon is stopped and the temp dir removed, then exit 141, the status of a
// process that SIGPIPE ended (what the afunix CLI gives too).
process.stdout.on('error', (err) => {
  if (/** @type {{ code?: string }} */ (err).code !== 'EPIPE') throw err;
  process.once('exit', () => (process.exitCode = 141));
});

const here = (/** @type {string} */ file) => fileURLToPath(new URL(file, import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'daemon-control-'));
const socket = join(dir, 'control.sock');
const config = join(dir, 'config.json');

/** @param {string} greeting */
const writeConfig = (greeting) => writeFileSync(config, JSON.stringify({ greeting, heartbeatMs: 200 }));

/** Runs ctl.mjs as a separate process, and shows the command and what it printed. @param {string[]} args */
function ctl(...args) {
  console.log(`$ node ctl.mjs ${args.join(' ')}`);
  const out = execFileSync(process.execPath, [here('./ctl.mjs'), '--socket', socket, ...args], { encoding: 'utf8', timeout: 10_000 });
  process.stdout.write(`${out.trimEnd().replace(/^/gm, '  ')}\n`);
}

writeConfig('hello');
const daemon = spawn(process.execPath, [here('./daemon.mjs'), '--socket', socket, '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] });
const lines = createInterface({ input: daemon.stdout }); // read on: a full pipe would stall the daemon
const [ready] = await once(lines, 'line');
console.log(`started: ${ready.replace(/^info: /, '')}`);
console.log(`socket mode: ${(statSync(socket).mode & 0o777).toString(8)} (only this user may connect, and the daemon checks the uid too)`);

ctl('status');
writeConfig('bonjour');
console.log('(config.json now says "bonjour")');
ctl('reload');
ctl('logs', '--count', '2');
ctl('stop');

const [code] = await once(daemon, 'exit');
console.log(`daemon exited with ${code}`);
rmSync(dir, { recursive: true, force: true });
process.exitCode = code ?? 1;
