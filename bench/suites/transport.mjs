// Transport benchmark: @afunix/transport against Node's `net` on a unix
// socket in /tmp, server and client in separate processes, same workloads:
//
//   echo  sequential 64-byte round trips (warm-up, then N timed one by one
//         with process.hrtime.bigint): median and p99 in µs. Run unpinned and
//         with both processes pinned to CPU 0 (taskset), because on a VM a
//         cross-CPU wakeup costs more than everything else in a round trip.
//         ours-seqpacket joins in here: message boundaries come for free.
//   bulk  one direction, 1 GiB (--quick: 128 MiB) in 64 KiB writes honouring
//         backpressure; the receiver counts bytes and reports the count back.
//
// Both processes also report their CPU time (user+sys), so a figure can be
// split into sender and receiver cost; on a noisy VM it is steadier than wall
// time. Every echo is checked byte for byte and every bulk count must be exact; a
// mismatch fails the suite. Results: bench/results/transport.json (transport-dev.json with --quick).
//
//   node bench/suites/transport.mjs [--quick] [--rounds N]
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuModel } from '../lib/machine.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const peer = join(here, '..', 'lib', 'transport-peer.mjs');

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
// A --quick run is for development: its figures go to transport-dev.json (not
// committed), never over the full run's.
const resultsFile = join(here, '..', 'results', quick ? 'transport-dev.json' : 'transport.json');
const roundsArg = argv.find((a) => a.startsWith('--rounds='));

const MiB = 1024 * 1024;
const config = quick
  ? { echo: { warmup: 2_000, iterations: 10_000 }, bulk: { bytes: 128 * MiB, chunk: 64 * 1024 }, rounds: 1 }
  : { echo: { warmup: 5_000, iterations: 30_000 }, bulk: { bytes: 1024 * MiB, chunk: 64 * 1024 }, rounds: 3 };
if (roundsArg) config.rounds = Math.max(1, Number(roundsArg.split('=')[1]) || 1);

const TIMEOUT_MS = 120_000;


function tasksetWorks() {
  const r = spawnSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
  return r.status === 0;
}

let seq = 0;
function socketPath() {
  return join(tmpdir(), `afunix-bench-${process.pid}-${seq++}.sock`);
}

// Starts `node transport-peer.mjs ...`, under `taskset -c 0` when pinned.
function startPeer(args, pinned) {
  const [cmd, cmdArgs] = pinned ? ['taskset', ['-c', '0', process.execPath, peer, ...args]] : [process.execPath, [peer, ...args]];
  const child = spawn(cmd, cmdArgs, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, exited };
}

function nextMessage(p, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no answer in ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS);
    const onMessage = (m) => {
      cleanup();
      resolve(m);
    };
    const onExit = ({ code, signal }) => {
      cleanup();
      reject(new Error(`${what}: exited (${signal ?? `code ${code}`}) before answering`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      p.child.off('message', onMessage);
    };
    p.child.once('message', onMessage);
    p.exited.then(onExit);
  });
}

async function measure(system, workload, pinned) {
  const path = socketPath();
  const opts = config[workload];
  const server = startPeer(['server', system, workload, path], pinned);
  let client;
  try {
    await nextMessage(server, `${system} ${workload} server`);
    // The server reports its CPU time when the connection ends, which may be
    // before or after the client's result arrives.
    const serverDone = nextMessage(server, `${system} ${workload} server (cpu)`);
    serverDone.catch(() => {});
    client = startPeer(['client', system, workload, path, JSON.stringify(opts)], pinned);
    const { result } = await nextMessage(client, `${system} ${workload} client`);
    const { cpu_ms } = await serverDone;
    const count = workload === 'echo' ? opts.warmup + opts.iterations : opts.bytes / 2 ** 30;
    // CPU per round trip (µs) or per GiB (ms), client and server side.
    const unit = workload === 'echo' ? 1000 : 1;
    return {
      ...result,
      client_cpu: (result.cpu_ms * unit) / count,
      server_cpu: (cpu_ms * unit) / count,
      cpu_unit: workload === 'echo' ? 'µs per round trip' : 'ms per GiB',
    };
  } finally {
    for (const p of [client, server]) {
      if (!p) continue;
      if (p.child.connected) p.child.send('exit', () => {});
      const t = setTimeout(() => p.child.kill('SIGKILL'), 5_000);
      await p.exited;
      clearTimeout(t);
    }
    rmSync(path, { force: true });
  }
}

// Several rounds, interleaving the systems so that drift on a shared VM hits
// them alike; the reported figure is the median round (by the main metric).
async function bench(systems, workload, pinned, key) {
  const runs = new Map(systems.map((s) => [s, []]));
  for (let r = 0; r < config.rounds; r++) {
    for (const s of systems) runs.get(s).push(await measure(s, workload, pinned));
  }
  const out = new Map();
  for (const [s, list] of runs) {
    const sorted = [...list].sort((a, b) => a[key] - b[key]);
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    out.set(s, { ...median, rounds: list.map((x) => x[key]) });
  }
  return out;
}

function fmt(v, digits) {
  return v.toFixed(digits);
}

async function main() {
  const started = Date.now();
  const pinAvailable = tasksetWorks();
  const meta = {
    suite: 'transport',
    node: process.version,
    cpu: cpuModel(),
    nproc: cpus().length,
    platform: `${process.platform} ${process.arch}`,
    date: new Date().toISOString(),
    quick,
    config,
  };
  console.log(`transport: ${meta.cpu}, ${meta.nproc} CPUs, node ${meta.node}${quick ? ', --quick' : ''}, ${config.rounds} round(s) per figure`);
  if (!pinAvailable) console.log('transport: taskset not usable here, skipping the pinned echo runs');

  const records = [];
  const rows = [];
  const echoSystems = ['ours-stream', 'ours-seqpacket', 'net'];
  for (const pinned of pinAvailable ? [false, true] : [false]) {
    const label = pinned ? 'pinned cpu0' : 'unpinned';
    const res = await bench(echoSystems, 'echo', pinned, 'median_us');
    for (const [system, m] of res) {
      records.push({ system, workload: 'echo-64B', pinning: label, metrics: m });
    }
    const net = res.get('net');
    for (const ours of ['ours-stream', 'ours-seqpacket']) {
      const m = res.get(ours);
      const row = (metric, o, n, digits) => rows.push({ workload: `echo 64B ${label}`, system: ours.replace('ours-', ''), metric, o, n, digits, better: 'lower' });
      row('median µs', m.median_us, net.median_us, 1);
      row('p99 µs', m.p99_us, net.p99_us, 1);
      row('cpu µs/round trip', m.client_cpu + m.server_cpu, net.client_cpu + net.server_cpu, 1);
    }
  }

  const bulk = await bench(['ours-stream', 'net'], 'bulk', false, 'mb_per_s');
  for (const [system, m] of bulk) records.push({ system, workload: `bulk-${config.bulk.bytes / MiB}MiB-64KiB-writes`, pinning: 'unpinned', metrics: m });
  const ob = bulk.get('ours-stream');
  const nb = bulk.get('net');
  const bulkRow = (metric, o, n, better) => rows.push({ workload: `bulk ${config.bulk.bytes / MiB} MiB, 64 KiB writes`, system: 'stream', metric, o, n, digits: 0, better });
  bulkRow('MB/s', ob.mb_per_s, nb.mb_per_s, 'higher');
  bulkRow('sender cpu ms/GiB', ob.client_cpu, nb.client_cpu, 'lower');
  bulkRow('receiver cpu ms/GiB', ob.server_cpu, nb.server_cpu, 'lower');

  // The table.
  console.log('');
  console.log('ours/net: for µs and cpu rows below 1 means ours is better; for MB/s above 1 means ours is better.');
  console.log('cpu = user+sys CPU time of the processes (echo: client+server per round trip, warm-up included).');
  console.log('ours seqpacket is compared with net stream (net has no seqpacket). Within 3% reads as "about equal".');
  const head = ['workload', 'socket', 'metric', 'ours', 'net', 'ours/net', ''];
  const body = rows.map((r) => {
    const ratio = r.o / r.n;
    const wins = r.better === 'lower' ? ratio < 1 : ratio > 1;
    const verdict = Math.abs(ratio - 1) < 0.03 ? 'about equal' : wins ? 'ours better' : 'net better';
    return [r.workload, r.system, r.metric, fmt(r.o, r.digits), fmt(r.n, r.digits), ratio.toFixed(2), verdict];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => cells.map((c, i) => (i >= 3 && i <= 5 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const b of body) console.log(line(b));
  if (config.rounds > 1) {
    console.log('');
    console.log(`per-round main metric (the table shows the median of ${config.rounds}):`);
    for (const r of records) console.log(`  ${r.workload} ${r.pinning} ${r.system}: ${r.metrics.rounds.map((x) => x.toFixed(1)).join(', ')}`);
  }

  mkdirSync(dirname(resultsFile), { recursive: true });
  writeFileSync(resultsFile, `${JSON.stringify({ ...meta, results: records.map((r) => ({ ...r, node: meta.node, cpu: meta.cpu, date: meta.date })) }, null, 2)}\n`);
  console.log(`\ntransport: all responses verified; wrote ${resultsFile} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((err) => {
  console.error(`transport: ${err.stack ?? err}`);
  process.exit(1);
});
