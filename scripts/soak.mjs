// The load soak: one server (test/fixtures/target.mjs) in its own process,
// several client processes (scripts/soak-worker.mjs) each running random
// calls, streams, aborts, deadlines, fds, events and reconnects on several
// connections, and every few seconds one of them SIGKILLed and replaced.
//
//   pnpm soak                      # 60 s
//   pnpm soak --seconds 600        # longer
//   node scripts/soak.mjs --seconds 10 --json   # what the CI test runs
//
// Options: --seconds N (60), --workers N (4), --connections N per worker (4),
// --kill-every S seconds (3; 0: never), --seed N, --json.
//
// At the end it prints calls completed, errors by code, kills, the server's
// fds, RSS and heap at start and end (both after a GC, with the same single
// monitor connection open) and its event-loop delay. It exits 1 if an
// invariant broke: a call with an unexpected error code, a call that did not
// settle within 10 s, fds not back to where they started, the heap grown by
// more than 16 MiB, or Object.prototype touched.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect } from '../packages/rpc/dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const MiB = (b) => Math.round((b / 1024 / 1024) * 10) / 10;
const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    workers: { type: 'string', default: '4' },
    connections: { type: 'string', default: '4' },
    'kill-every': { type: 'string', default: '3' },
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    json: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(opts.seconds);
const WORKERS = Number(opts.workers);
const CONNECTIONS = Number(opts.connections);
const KILL_EVERY = Number(opts['kill-every']) * 1000;
const SEED = Number(opts.seed);
const HEAP_GROWTH_LIMIT = 16 * 1024 * 1024;
const log = (...a) => opts.json || console.error(...a);

const dir = mkdtempSync(join(tmpdir(), 'afunix-soak-'));
const address = join(dir, 'soak.sock');

function lines(child, onLine) {
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      onLine(JSON.parse(line));
    } catch {
      // not ours
    }
  });
}

// ------------------------------------------------------------ the server
const server = spawn(process.execPath, ['--expose-gc', join(here, '../test/fixtures/target.mjs'), address, JSON.stringify({})], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise((resolve, reject) => {
  lines(server, (m) => m.ready && resolve());
  server.once('exit', (code) => reject(new Error(`the soak server exited early (${code})`)));
});
let serverDied = null;
server.once('exit', (code, signal) => (serverDied = { code, signal }));
const monitor = await connect(address);
async function settledStats() {
  await monitor.gc();
  await new Promise((r) => setTimeout(r, 200));
  await monitor.gc();
  return monitor.stats();
}
const start = await settledStats();
await monitor.resetDelay();

// ------------------------------------------------------------ the clients
const workers = new Map(); // pid -> { child, last, final }
const finished = []; // reports of workers that ended (killed: last progress; stopped: final)
let kills = 0;
let seq = 0;

function spawnWorker() {
  const child = spawn(process.execPath, [join(here, 'soak-worker.mjs'), address, String(CONNECTIONS), String(SEED + seq++)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const w = { child, last: null, final: null, killed: false };
  workers.set(child.pid, w);
  lines(child, (m) => {
    if (m.type === 'progress') w.last = m;
    if (m.type === 'final') w.final = m;
  });
  child.once('exit', () => {
    workers.delete(child.pid);
    const r = w.final ?? w.last;
    if (r) finished.push({ ...r, killed: w.killed });
  });
  return w;
}

const started = Date.now();
const loadAtStart = loadavg()[0];
for (let i = 0; i < WORKERS; i++) spawnWorker();
const killer = KILL_EVERY > 0
  ? setInterval(() => {
      const alive = [...workers.values()].filter((w) => !w.killed && w.last);
      if (alive.length === 0) return;
      const victim = alive[Math.floor(Math.random() * alive.length)];
      victim.killed = true;
      victim.child.kill('SIGKILL');
      kills++;
      spawnWorker();
    }, KILL_EVERY)
  : null;

// The server's memory and fds every 5 s under load: flat after warm-up, or a leak.
const series = [];
const progress = setInterval(async () => {
  const done = [...workers.values()].map((w) => w.last?.completed ?? 0).reduce((a, b) => a + b, 0) + finished.reduce((a, r) => a + r.completed, 0);
  const s = await monitor.stats().catch(() => null);
  if (s) series.push({ s: Math.round((Date.now() - started) / 1000), rssMiB: MiB(s.rss), heapMiB: MiB(s.heapUsed), fds: s.fds, connections: s.connections });
  log(`soak: ${Math.round((Date.now() - started) / 1000)} s, ${done} calls completed, ${kills} clients killed, server rss ${s ? MiB(s.rss) : '?'} MiB`);
}, 5_000);

await new Promise((r) => setTimeout(r, SECONDS * 1000));
clearInterval(killer);
clearInterval(progress);
const loaded = await monitor.stats(); // under load, before the clients stop
// Stop the rest gracefully: each lets its calls settle and reports.
await Promise.all(
  [...workers.values()].map(
    (w) =>
      new Promise((resolve) => {
        w.child.once('exit', resolve);
        w.child.kill('SIGTERM');
      }),
  ),
);
// Wait for the server to see every connection go.
const until = Date.now() + 10_000;
while ((await monitor.stats()).connections > 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
const end = await settledStats();
await monitor.$close();
const serverDiedDuringRun = serverDied;
server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));
rmSync(dir, { recursive: true, force: true });

// ------------------------------------------------------------ the report
const sum = (key) => finished.reduce((a, r) => a + (r[key] ?? 0), 0);
const merge = (key) => {
  const out = {};
  for (const r of finished) for (const [k, v] of Object.entries(r[key] ?? {})) out[k] = (out[k] ?? 0) + v;
  return out;
};
const result = {
  seconds: SECONDS,
  seed: SEED,
  workers: WORKERS,
  connectionsPerWorker: CONNECTIONS,
  clientProcesses: finished.length,
  clientsKilled: kills,
  callsCompleted: sum('completed'),
  callsFailed: sum('failed'),
  errorsByCode: merge('byCode'),
  unexpectedErrors: merge('unexpected'),
  unsettledAtStop: finished.filter((r) => !r.killed).reduce((a, r) => a + r.pending, 0),
  stuckCalls: sum('stuck'),
  streamItems: sum('streamsItems'),
  fdsPassed: sum('fdsSent'),
  eventsReceived: sum('events'),
  reconnects: sum('reconnects'),
  maxCallLatencyMs: Math.round(Math.max(0, ...finished.map((r) => r.maxLatencyMs))),
  // This machine's 1-minute load average at start and end (its cores: os.availableParallelism()).
  loadAverage: [round(loadAtStart), round(loadavg()[0])],
  server: {
    died: serverDiedDuringRun,
    fds: { start: start.fds, underLoad: loaded.fds, end: end.fds },
    rssMiB: { start: MiB(start.rss), underLoad: MiB(loaded.rss), end: MiB(end.rss) },
    heapUsedMiB: { start: MiB(start.heapUsed), end: MiB(end.heapUsed) },
    underLoadEvery5s: series,
    // How late the server's event loop ran, beyond its 10 ms sampling interval.
    eventLoopDelayMs: { p50: round(loaded.eventLoopDelay.p50), p99: round(loaded.eventLoopDelay.p99), max: round(loaded.eventLoopDelay.max) },
    connectionsSeen: end.counts.connections,
    disconnects: end.counts.disconnects,
    handshakeErrors: end.counts.handshakeErrors,
    polluted: end.polluted,
  },
};
function round(x) {
  return Math.round(x * 10) / 10;
}
const failures = [];
if (serverDiedDuringRun) failures.push(`the server died: ${JSON.stringify(serverDiedDuringRun)}`);
if (Object.keys(result.unexpectedErrors).length) failures.push(`unexpected error codes: ${JSON.stringify(result.unexpectedErrors)}`);
if (result.unsettledAtStop || result.stuckCalls) failures.push(`calls that did not settle: ${result.unsettledAtStop} at stop, ${result.stuckCalls} stuck`);
if (end.fds !== start.fds) failures.push(`server fds ${start.fds} at start, ${end.fds} at end`);
if (end.heapUsed - start.heapUsed > HEAP_GROWTH_LIMIT) failures.push(`server heap grew by ${MiB(end.heapUsed - start.heapUsed)} MiB`);
if (end.polluted) failures.push('Object.prototype was touched');
if (result.callsCompleted === 0) failures.push('no call completed');
result.failures = failures;

if (opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else console.log(JSON.stringify(result, null, 2));
process.exit(failures.length ? 1 : 0);
