// A long-running daemon with a typed control API on a unix socket:
//   node daemon.mjs [--socket <path>] [--config <file.json>]
// It binds its socket itself (mode 0600, $XDG_RUNTIME_DIR by default), or
// takes it from systemd when socket-activated (see systemd/). Only processes
// of its own uid may talk to it. SIGHUP reloads, SIGTERM/SIGINT stop it.
// @ts-check
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { RpcError, createServer } from '@afunix/rpc';
import { listenFds } from '@afunix/transport';
import { SERVICE, defaultSocketPath } from './paths.mjs';

/** @typedef {import('./contract.js').Config} Config */
/** @typedef {import('./contract.js').Control} Control */

// setInterval's longest period: a longer one fires every 1 ms instead.
const MAX_HEARTBEAT_MS = 2 ** 31 - 1;

/** The command line; a bad one ends the daemon with one line, not a stack. */
function commandLine() {
  try {
    return parseArgs({ options: { socket: { type: 'string' }, config: { type: 'string' } } });
  } catch (err) {
    console.error(`${SERVICE}: ${/** @type {Error} */ (err).message.split('\n')[0]} (usage: daemon.mjs [--socket <path>] [--config <file.json>])`);
    return process.exit(2);
  }
}

const { values: options } = commandLine();
const configFile = options.config ?? null;
/** @type {Config} */
const DEFAULTS = { greeting: 'hello', heartbeatMs: 1000 };
const startedAt = Date.now();
let config = startupConfig();
let reloads = 0;
let heartbeats = 0;
/** @type {NodeJS.Timeout | undefined} */
let heartbeat;

/** @returns {Config} */
function readConfig() {
  if (!configFile) return { ...DEFAULTS };
  let parsed;
  try {
    parsed = JSON.parse(readFileSync(configFile, 'utf8'));
  } catch (err) {
    throw new RpcError(`cannot use ${configFile}: ${/** @type {Error} */ (err).message}`, { code: 'E_BAD_CONFIG' });
  }
  const next = { ...DEFAULTS, ...parsed };
  if (typeof next.greeting !== 'string' || !Number.isInteger(next.heartbeatMs) || next.heartbeatMs < 10 || next.heartbeatMs > MAX_HEARTBEAT_MS) {
    throw new RpcError(`${configFile} needs a string "greeting" and an integer "heartbeatMs" from 10 to ${MAX_HEARTBEAT_MS}`, { code: 'E_BAD_CONFIG' });
  }
  return next;
}

/** @returns {Config} a broken file at startup ends the daemon with one line, not a stack */
function startupConfig() {
  try {
    return readConfig();
  } catch (err) {
    console.error(`${SERVICE}: ${/** @type {Error} */ (err).message}`);
    return process.exit(1);
  }
}

/**
 * To the control clients that follow the log, and to stdout (the journal, under systemd).
 * @param {'info' | 'warn' | 'debug'} level
 * @param {string} message
 */
function log(level, message) {
  const entry = { time: new Date().toISOString(), level, message };
  process.stdout.write(`${level}: ${message}\n`);
  server.publish('log', entry);
}

function startHeartbeat() {
  clearInterval(heartbeat);
  heartbeat = setInterval(() => log('debug', `heartbeat ${++heartbeats}: ${config.greeting}`), config.heartbeatMs);
}

/** @returns {{ changed: Array<keyof Config> }} */
function reload() {
  const next = readConfig(); // throws E_BAD_CONFIG, and the old config stays
  const changed = /** @type {Array<keyof Config>} */ (Object.keys(next)).filter((k) => next[k] !== config[k]);
  config = next;
  reloads++;
  if (changed.includes('heartbeatMs')) startHeartbeat();
  log('info', `reloaded ${configFile ?? '(defaults)'}: ${changed.length ? `${changed.join(', ')} changed` : 'nothing changed'}`);
  return { changed };
}

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  clearInterval(heartbeat);
  log('info', 'shutting down');
  await server.close({ timeout: 2_000 }); // answers in flight still go out
}

let startedBy = /** @type {'systemd' | 'itself'} */ ('itself');
let socketPath = '';

/** @type {import('@afunix/rpc').RpcServer<Control>} */
const server = createServer({
  service: SERVICE,
  version: '1.0.0',
  allow: 'same-user', // checked against the kernel's peer credentials
  events: ['log'],
  handlers: {
    status: () => ({
      pid: process.pid,
      uptimeMs: Date.now() - startedAt,
      startedBy,
      socket: socketPath,
      configFile,
      config,
      reloads,
      clients: server.connections.size,
    }),
    reload,
    stop() {
      setImmediate(shutdown); // after this answer has been sent
      return 'stopping';
    },
  },
});
server.on('handshakeError', (err, peer) => log('warn', `refused a client (pid ${peer?.pid}, uid ${peer?.uid}): ${err.message}`));

async function listen() {
  const [activated] = listenFds(); // systemd's socket, if it started us
  if (activated) {
    startedBy = 'systemd';
    socketPath = server.listenFd(activated.fd).address();
    return;
  }
  socketPath = options.socket ?? defaultSocketPath({ create: true });
  await server.listen(socketPath, { mode: 0o600 }); // the mode is set before anyone can connect
}

try {
  await listen();
} catch (err) {
  console.error(`${SERVICE}: cannot listen: ${/** @type {Error} */ (err).message}`);
  process.exit(1);
}
process.on('SIGHUP', () => {
  try {
    reload();
  } catch (err) {
    log('warn', /** @type {Error} */ (err).message);
  }
});
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// stdout is the log (the journal under systemd, main.mjs's pipe in the
// guided run). Should its reader go away (`node daemon.mjs | head -1`, or
// main.mjs dying), stop as on SIGTERM: not crash, nor run on unseen.
process.stdout.on('error', (err) => {
  if (/** @type {{ code?: string }} */ (err).code !== 'EPIPE') throw err;
  shutdown();
});
startHeartbeat();
log('info', `${SERVICE} (pid ${process.pid}) listening on ${socketPath} (socket from ${startedBy === 'systemd' ? 'systemd' : 'the daemon itself'})`);
