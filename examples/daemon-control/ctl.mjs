// The daemon's control client:
//   node ctl.mjs [--socket <path>] status [--json] | reload | logs [--count <n>] | stop
// Exit status: 0 done, 1 the daemon said no (or is not running), 2 usage,
// 141 the reader of its output went away (ctl.mjs logs | head).
// @ts-check
import { parseArgs } from 'node:util';
import { connect } from '@afunix/rpc';
import { SERVICE, defaultSocketPath } from './paths.mjs';

// `node ctl.mjs logs | head -1`: the reader is gone, and so is the point of
// going on. Exit at once with 141, as a process that SIGPIPE ended (the
// daemon sees the connection close).
process.stdout.on('error', (err) => {
  if (/** @type {{ code?: string }} */ (err).code !== 'EPIPE') throw err;
  process.exit(141);
});

/** @typedef {import('./contract.js').Control} Control */
/** @typedef {import('@afunix/rpc').RpcClient<Control>} Client */
// connect<Control>(), as JSDoc writes a type argument.
const connectControl = /** @type {typeof connect<Control>} */ (connect);

const USAGE = `usage: node ctl.mjs [--socket <path>] <command>
  status [--json]   what the daemon is doing
  reload            re-read its config file
  logs [--count n]  follow its log (until Ctrl-C, or n entries)
  stop              shut it down gracefully`;

/** @param {string} message @param {number} status @returns {never} */
function fail(message, status = 1) {
  console.error(`ctl: ${message}`);
  process.exit(status);
}

/** @param {unknown} err */
function explain(err, socket = '') {
  const e = /** @type {Error & { code?: string }} */ (err);
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') return `${SERVICE} is not running (nothing at ${socket})`;
  if (e.code === 'EACCES') return `permission denied on ${socket}: it belongs to another user`;
  return `${e.message} [${e.code ?? 'ERROR'}]`;
}

/** @param {Client} daemon @param {boolean} json */
async function status(daemon, json) {
  const s = await daemon.status();
  if (json) return console.log(JSON.stringify(s, null, 2));
  console.log(`${SERVICE} pid ${s.pid}, up ${(s.uptimeMs / 1000).toFixed(1)} s, socket from ${s.startedBy}`);
  console.log(`  socket   ${s.socket}`);
  console.log(`  config   ${s.configFile ?? '(defaults)'}: greeting ${JSON.stringify(s.config.greeting)}, heartbeat every ${s.config.heartbeatMs} ms`);
  console.log(`  reloads  ${s.reloads}, clients ${s.clients}`);
}

/** @param {Client} daemon @param {number} count prints this many entries, then returns (Infinity: until SIGINT/SIGTERM) */
function follow(daemon, count) {
  return new Promise((resolve) => {
    let seen = 0;
    const done = () => {
      daemon.$events.off('log', print);
      resolve(undefined);
    };
    /** @param {import('./contract.js').LogEntry} entry */
    const print = (entry) => {
      console.log(`${entry.time.slice(11, 23)} ${entry.level.padEnd(5)} ${entry.message}`);
      if (++seen >= count) done();
    };
    daemon.$events.on('log', print); // adding the listener subscribes
    daemon.$lifecycle.once('disconnect', () => done());
    process.once('SIGINT', done).once('SIGTERM', done);
  });
}

/** @param {string} socket @returns {Promise<Client>} */
async function open(socket) {
  try {
    return await connectControl(socket, { service: SERVICE, timeout: 3_000 });
  } catch (err) {
    return fail(explain(err, socket));
  }
}

/** @param {string[]} argv */
async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { socket: { type: 'string' }, json: { type: 'boolean' }, count: { type: 'string' } } });
  } catch (err) {
    fail(`${/** @type {Error} */ (err).message}\n${USAGE}`, 2);
  }
  const { values, positionals } = parsed;
  const [command] = positionals;
  if (!command || !['status', 'reload', 'logs', 'stop'].includes(command)) fail(USAGE, 2);
  const count = values.count === undefined ? Infinity : Number(values.count);
  if (!(count > 0)) fail('--count needs a positive number', 2);
  const socket = values.socket ?? defaultSocketPath();

  const daemon = await open(socket);
  try {
    if (command === 'status') await status(daemon, values.json === true);
    if (command === 'reload') {
      const { changed } = await daemon.reload();
      console.log(`reloaded: ${changed.length ? `${changed.join(', ')} changed` : 'nothing changed'}`);
    }
    if (command === 'logs') await follow(daemon, count);
    if (command === 'stop') console.log(`${SERVICE}: ${await daemon.stop()}`);
  } catch (err) {
    fail(explain(err, socket));
  } finally {
    await daemon.$close();
  }
}

await main(process.argv.slice(2));
