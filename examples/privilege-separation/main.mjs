// The broker: holds the privilege (here, simply being root), opens files
// for a worker that runs without it, and gives the descriptors away with
// Fd.transfer(), keeping nothing open itself.
// @ts-check
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { Fd, RpcError, createServer } from '@afunix/rpc';
import { fromFd, socketPairFds } from '@afunix/transport';

// `node main.mjs | head -1`: once the reader of stdout is gone, print nothing
// more but finish (and clean up) as usual, then exit 141, the status of a
// process that SIGPIPE ended (what the afunix CLI gives too). The worker, which
// shares this stdout, does the same.
process.stdout.on('error', (err) => {
  if (/** @type {{ code?: string }} */ (err).code !== 'EPIPE') throw err;
  process.once('exit', () => (process.exitCode = 141));
});

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

// A secret only the broker's uid may read: mode 0600, in a 0700 directory.
const dir = mkdtempSync(join(tmpdir(), 'privsep-'));
const secret = join(dir, 'secret.txt');
const token = randomBytes(4).toString('hex');
writeFileSync(secret, `launch code ${token}\n`, { mode: 0o600 });

/** @type {import('@afunix/rpc').ServerHandlers<import('./contract.js').Broker>} */
const handlers = {
  open(_ctx, path) {
    // The policy lives here, in the privileged process: one file, read-only.
    if (resolve(path) !== secret) throw new RpcError(`${path} is not on the broker's list`, { code: 'E_NOT_ALLOWED' });
    return Fd.transfer(openSync(secret, 'r')); // closed here once it is on its way
  },
};

/** Descriptors of this process that refer to the secret file. */
function secretFdsHeld() {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === secret;
    } catch {
      return false; // the fd readdir itself used, gone already
    }
  });
}

// spawnHelper() cannot change uid, so the channel is set up by hand: a
// socketpair, one end on the worker's fd 3, the worker started as nobody.
const [ours, theirs] = socketPairFds('stream');
const who = isRoot ? { uid: NOBODY, gid: NOBODY } : {};
console.log(`broker (pid ${process.pid}, uid ${process.getuid?.()}): wrote secret.txt (mode 0600, token ${token}); starting the worker as uid ${isRoot ? NOBODY : `${process.getuid?.()} (not root: cannot drop privileges)`}`);
const worker = spawn(process.execPath, [fileURLToPath(new URL('./worker.mjs', import.meta.url)), secret], {
  stdio: ['ignore', 'inherit', 'inherit', theirs],
  ...who,
});
closeSync(theirs); // the worker has its copy
const server = createServer({ service: 'broker', handlers });
// A worker that dies before its hello fails this; its exit status tells why.
await server.serve(fromFd(ours)).catch((err) => console.error(`broker: the worker never connected: ${err.message}`));

const [code] = await once(worker, 'exit');
const held = secretFdsHeld();
console.log(`broker: worker exited with ${code}; the broker holds ${held.length === 0 ? 'no descriptor' : `${held.length} descriptor(s)`} for secret.txt`);
await server.close();
rmSync(dir, { recursive: true, force: true });
process.exitCode = code === 0 && held.length === 0 ? 0 : 1;
