// The worker: runs without privileges (uid 65534 when started by root).
// It cannot open the secret file itself, so it asks the broker, which sends
// back an open descriptor; reading through it needs no permission at all.
//   node worker.mjs <secret-path>    (the broker's channel on fd 3)
// @ts-check
import { openSync, readSync } from 'node:fs';
import { connect } from '@afunix/rpc';
import { fromFd } from '@afunix/transport';

// This stdout is the broker's: when its reader is gone (`node main.mjs |
// head -1`), print nothing more, do the work all the same, exit 141.
process.stdout.on('error', (err) => {
  if (/** @type {{ code?: string }} */ (err).code !== 'EPIPE') throw err;
  process.once('exit', () => (process.exitCode = 141));
});

const secret = process.argv[2] ?? '';
const name = secret.split('/').pop();
/** @param {unknown} err */
const codeOf = (err) => /** @type {{ code?: string }} */ (err).code;

try {
  openSync(secret, 'r');
  console.log(`worker (pid ${process.pid}, uid ${process.getuid?.()}): open(${name}) myself → it worked: not separated (not started as root?)`);
} catch (err) {
  console.log(`worker (pid ${process.pid}, uid ${process.getuid?.()}): open(${name}) myself → ${codeOf(err)}`);
}

/** @type {import('@afunix/rpc').RpcClient<import('./contract.js').Broker>} */
const broker = await connect(fromFd(3), { service: 'broker' });
const file = await broker.open(secret);
const buffer = Buffer.alloc(256);
const length = readSync(file.fd, buffer, 0, buffer.length, 0);
console.log(`worker: asked the broker instead; got fd ${file.fd}, read ${JSON.stringify(buffer.toString('utf8', 0, length).trim())}`);
file.close();

try {
  await broker.open('/etc/shadow');
  console.log('worker: the broker opened /etc/shadow for me (it should not have)');
} catch (err) {
  console.log(`worker: asked for /etc/shadow → refused: ${codeOf(err)}`);
}
await broker.$close();
