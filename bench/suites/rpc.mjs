// RPC benchmark: afunix rpc next to what a user would pick instead, in one
// run, server and clients always in separate processes (bench/lib/rpc-peer.mjs),
// over unix sockets in /tmp (afunix-tcp: TCP loopback). Every answer is
// checked. Systems are the adapters bench/lib/rpc-<name>.mjs (each exports
// `systems`); adding one is adding a file.
//
//   W1 latency    sequential echo(payload), payload {id: i, name: "alpha", ok: true,
//                 tags: ["a","b"]}; 2,000 warm-up then 20,000 measured; median and
//                 p99 µs. Unpinned, and with both processes on CPU 0 (taskset -c 0),
//                 which shows the software's cost without the VM's cross-CPU wake-up.
//   W2 pipelined  the same payload, 256 calls in flight, 2,000 warm-up then
//                 200,000 measured; calls/s.
//   W3 bulk       echo of a 64 KiB binary payload, 4 in flight, 2,000 measured
//                 calls (after 100 warm-up); MB/s of one direction's payload.
//   W4 fd passing calls carrying one fd each (a pipe), 256 in flight, 20,000
//                 measured (after 1,000 warm-up); fds/s, and the fd count of both
//                 processes back to where it was. Only where fds can travel.
//   W5 fan-out    one server emitting small events to 100 subscribed connections
//                 in 4 client processes; 2,000 events each, 50 per event-loop turn;
//                 events delivered/s, each connection checking order and count.
//   W6 idle conns 10,000 concurrent idle connections from 4 client processes (64
//                 connecting at a time each), after a warm-up round of 1,000
//                 opened and closed; server RSS and heap per connection
//                 (after forced GC, before vs after) and connect+handshake rate;
//                 then the same once the server has idled until V8 gave back
//                 the young generation the burst grew (at most 30 s).
//   W7 cold call  what a CLI pays to ask a daemon one thing: a fresh node process
//                 loads the client, connects, makes one echo call and exits; 15
//                 such processes one after another, each after one of Node alone
//                 (loading nothing); median ms from spawn to exit, and above
//                 Node's own start. Not in the list; no target.
//
// A system that cannot finish W1 or W2 within 12 s of measuring (grpc here)
// stops there; its row says `capped` and how many calls were measured.
//
// W1-W3 run several rounds (3; the peers other than the baseline: 1) with
// the systems interleaved, so a noisy neighbour hits them alike; the figure
// is each system's median round. --quick: far fewer calls, one round, no
// pinned W1, 300 connections for W6; for development, not for figures.
// --steady: W2-W4 measured long after the JIT and the heap have settled
// (W2: 20,000 warm-up + 1,000,000 calls; W3: 2,000 + 30,000; W4: 5,000 +
// 100,000), beside the defined workloads rather than instead of them: their
// calls take well under a second here, much of it still warming up.
//
//   node bench/suites/rpc.mjs [--quick|--steady] [--systems=a,b] [--workloads=W1,W2] [--rounds=N]
//
// A default run writes bench/results/latest.json, docs/benchmarks.md and
// docs/benchmarks.svg; --quick or a filtered run writes
// bench/results/latest-dev.json only.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cpuModel } from '../lib/machine.mjs';
import { canPin, coldProcess, now, tempPath, until, withServer, works } from '../lib/rpc-processes.mjs';
import { writeDocs } from '../lib/rpc-report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const libDir = join(here, '..', 'lib');
const resultsDir = join(here, '..', 'results');
const NOT_ADAPTERS = new Set(['rpc-cold.mjs', 'rpc-payload.mjs', 'rpc-peer.mjs', 'rpc-processes.mjs', 'rpc-report.mjs']);

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const arg = (name) => argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const onlySystems = arg('systems')?.split(',');
const onlyWorkloads = arg('workloads')?.split(',');

const config = quick
  ? {
      rounds: 1,
      W1: { warmup: 200, iterations: 1_000 },
      W2: { warmup: 300, calls: 3_000, inflight: 256 },
      W3: { warmup: 10, calls: 60, inflight: 4, size: 64 * 1024 },
      W4: { warmup: 100, calls: 2_000, inflight: 256 },
      W5: { connections: 100, processes: 2, events: 50, batch: 50 },
      W6: { connections: 300, processes: 2, parallel: 64, warmup: 50, settleMs: 0 },
      W7: { runs: 3 },
    }
  : {
      rounds: 3,
      W1: { warmup: 2_000, iterations: 20_000, capSeconds: 12 },
      W2: { warmup: 2_000, calls: 200_000, inflight: 256, capSeconds: 12 },
      W3: { warmup: 100, calls: 2_000, inflight: 4, size: 64 * 1024 },
      W4: { warmup: 1_000, calls: 20_000, inflight: 256 },
      W5: { connections: 100, processes: 4, events: 2_000, batch: 50 },
      W6: { connections: 10_000, processes: 4, parallel: 64, warmup: 1_000, settleMs: 30_000 },
      W7: { runs: 15 },
    };
const steady = argv.includes('--steady');
if (steady) {
  config.W2 = { ...config.W2, warmup: 20_000, calls: 1_000_000 };
  config.W3 = { ...config.W3, warmup: 2_000, calls: 30_000 };
  config.W4 = { ...config.W4, warmup: 5_000, calls: 100_000 };
}
if (arg('rounds')) config.rounds = Math.max(1, Number(arg('rounds')) || 1);
if (arg('w6-warmup')) config.W6.warmup = Math.max(0, Number(arg('w6-warmup')) || 0);

// ------------------------------------------------------------ systems

async function loadSystems() {
  const list = [];
  for (const f of readdirSync(libDir).sort()) {
    if (!/^rpc-.+\.mjs$/.test(f) || NOT_ADAPTERS.has(f)) continue;
    const file = join(libDir, f);
    const mod = await import(pathToFileURL(file).href);
    for (const s of mod.systems ?? []) list.push({ ...s, file });
  }
  list.sort((a, b) => (a.order ?? 100) - (b.order ?? 100));
  return onlySystems ? list.filter((s) => onlySystems.includes(s.name)) : list;
}

// ------------------------------------------------------------ workloads

// W1-W3: one client connection; server CPU time over the whole run.
async function single(system, workload, pinned = false) {
  const opts = config[workload];
  return withServer(system, { workload, pinned }, async (server, client) => {
    await server.ask('mark');
    const c = client(opts);
    const { result } = await c.next((m) => m.result, 'result');
    const { cpu_ms } = await server.ask('cpu');
    await c.ask('close');
    const calls = result.verified ?? (workload === 'W1' ? opts.warmup + opts.iterations : opts.warmup + opts.calls);
    return { ...result, server_cpu_us: (cpu_ms * 1000) / calls };
  });
}

async function combined(system, sequence) {
  return withServer(system, { workload: 'W123' }, async (server, client) => {
    const c = client({ sequence });
    const { result } = await c.next((m) => m.result, 'result');
    await c.ask('close');
    return result;
  });
}

async function fdPassing(system) {
  const opts = config.W4;
  const fifo = tempPath('fifo');
  if (!works('mkfifo', [fifo])) throw new Error('mkfifo failed');
  try {
    return await withServer(system, { workload: 'W4', nofile: true }, async (server, client) => {
      const before = (await server.ask('fds')).fds;
      await server.ask('mark');
      const c = client({ ...opts, fifo });
      const { result } = await c.next((m) => m.result, 'result');
      const { cpu_ms } = await server.ask('cpu');
      result.server_cpu_us = (cpu_ms * 1000) / (opts.warmup + opts.calls);
      await c.ask('close');
      await until('the server to see the client go', 5_000, async () => (await server.ask('count')).connections === 0);
      const after = (await server.ask('fds')).fds;
      return { ...result, server_fd_delta: after - before, fds_leaked: after - before + result.client_fd_delta };
    });
  } finally {
    rmSync(fifo, { force: true });
  }
}

async function fanout(system) {
  const { connections, processes, events, batch } = config.W5;
  return withServer(system, { workload: 'W5', nofile: true }, async (server, client) => {
    const each = Math.ceil(connections / processes);
    const cs = [];
    for (let p = 0, left = connections; left > 0; p++, left -= each) cs.push(client({ connections: Math.min(each, left), events }));
    await Promise.all(cs.map((c) => c.next((m) => m.ready, 'ready')));
    await until('every subscription to reach the server', 10_000, async () => (await server.ask('count')).subscribers === connections);
    const waits = cs.map((c) => c.ask('wait'));
    const sent = await server.ask('fanout', { events, batch });
    const ends = await Promise.all(waits);
    const tEnd = ends.reduce((m, e) => (BigInt(e.t_end) > m ? BigInt(e.t_end) : m), 0n);
    const received = ends.reduce((n, e) => n + e.received, 0);
    const seconds = Number(tEnd - BigInt(sent.t0)) / 1e9;
    return {
      verified: received,
      events_per_s: received / seconds,
      seconds,
      emit_ms: sent.emitted_ms,
      server_cpu_us: (sent.cpu_ms * 1000) / received,
    };
  });
}

async function idle(system) {
  const { connections, processes, parallel, warmup, settleMs } = config.W6;
  return withServer(system, { workload: 'W6', nofile: true }, async (server, client) => {
    // A round of connections opened and closed before anything is measured:
    // the server's connection code, and the pages of node's own binary it
    // runs, are then resident in "before" too, as in a server that has
    // served. Without it the delta also holds what the server first touches
    // at its first connections, however small it was at start.
    // The round grows the young generation too: "before" waits, as the
    // idle figure below does, until V8 has given that back.
    if (warmup > 0) {
      const fresh = await server.ask('memory');
      const warm = client({ connections: warmup, parallel });
      await warm.next((m) => m.ready, 'ready');
      await warm.stop();
      await until('the warm-up connections closed on the server', 60_000, async () => (await server.ask('count')).connections === 0);
      await server.ask('settle', { young: fresh.young, maxMs: settleMs });
    }
    const before = await server.ask('memory');
    const each = Math.ceil(connections / processes);
    const cs = [];
    for (let left = connections; left > 0; left -= each) cs.push(client({ connections: Math.min(each, left), parallel }));
    const ready = await Promise.all(cs.map((c) => c.next((m) => m.ready, 'ready')));
    const all = await until(`${connections} connections on the server`, 60_000, async () => {
      const { connections: n } = await server.ask('count');
      return n >= connections || Number.isNaN(n) ? now() : null;
    });
    const t0 = ready.reduce((m, r) => (BigInt(r.t_start) < m ? BigInt(r.t_start) : m), BigInt(ready[0].t_start));
    const t1 = ready.reduce((m, r) => (BigInt(r.t_end) > m ? BigInt(r.t_end) : m), all);
    const after = await server.ask('memory');
    // The same connections once the server has idled until V8 gave back the
    // young generation the burst of connecting grew: what they cost to keep.
    const { settled, settle_ms } = await server.ask('settle', { young: before.young, maxMs: settleMs });
    const idleAfter = await server.ask('memory');
    const verified = (await Promise.all(cs.map((c) => c.ask('verify')))).reduce((n, v) => n + v.verified, 0);
    if (verified !== connections) throw new Error(`${verified} of ${connections} connections answered`);
    const per = (k) => (after[k] - before[k]) / connections;
    return {
      verified,
      connections,
      server_connections_seen: after.connections,
      rss_per_conn: per('rss'),
      heap_per_conn: per('heapUsed'),
      settled_rss_per_conn: (idleAfter.rss - before.rss) / connections,
      settled_heap_per_conn: (idleAfter.heapUsed - before.heapUsed) / connections,
      settled,
      settle_s: settle_ms / 1000,
      warmup_connections: warmup,
      young_before: before.young,
      young_after: after.young,
      young_settled: idleAfter.young,
      external_per_conn: per('external'),
      connects_per_s: connections / (Number(t1 - t0) / 1e9),
      rss_before: before.rss,
      rss_after: after.rss,
      heap_before: before.heapUsed,
      heap_after: after.heapUsed,
    };
  });
}

// W7: cold client processes against one server, each run after one of Node
// alone, so that both see the same machine. A first pair, not counted,
// warms the server (and the file cache) up.
async function coldCalls(system) {
  const { runs } = config.W7;
  return withServer(system, { workload: 'W7' }, async (_server, _client, address) => {
    const pairs = [];
    for (let i = 0; i <= runs; i++) {
      const alone = await coldProcess([]);
      const call = await coldProcess([system.file, system.name, address]);
      if (i > 0) pairs.push({ alone, call });
    }
    const of = (f) => middle(pairs.map(f));
    return {
      verified: runs,
      median_ms: of((p) => p.call.wall_ms),
      node_ms: of((p) => p.alone.wall_ms),
      // Per pair: two medians' difference would be noisier.
      above_node_ms: of((p) => p.call.wall_ms - p.alone.wall_ms),
      load_ms: of((p) => p.call.loaded - p.call.started),
      connect_ms: of((p) => p.call.connected - p.call.loaded),
      call_ms: of((p) => p.call.answered - p.call.connected),
      close_ms: of((p) => p.call.closed - p.call.answered),
      runs_ms: pairs.map((p) => Number(p.call.wall_ms.toFixed(1))),
    };
  });
}

// ------------------------------------------------------------ running

const WORKLOADS = ['W1', 'W2', 'W3', 'W4', 'W5', 'W6', 'W7'];
// The systems the targets are about get every round; the other peers one
// (grpc alone would otherwise take minutes).
const roundsFor = (s) => (s.ours || s.name === 'baseline' ? config.rounds : 1);
const wanted = (w) => !onlyWorkloads || onlyWorkloads.includes(w);

/** The middle of `values` (the lower of the two middles of an even count). */
function middle(values) {
  return [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)];
}

/** The round whose `key` is the middle one, with every round's `key`. */
function median(list, key) {
  const m = middle(list.map((x) => x[key]));
  return { ...list.find((x) => x[key] === m), rounds: list.map((x) => x[key]) };
}

// A measurement that fails is reported (and fails the suite at the end),
// but does not stop the others.
const failures = [];
async function timed(label, fn) {
  const t = Date.now();
  try {
    return await fn();
  } catch (err) {
    failures.push(`${label}: ${err.message}`);
    console.log(`  ${label} FAILED: ${err.message}`);
    return null;
  } finally {
    process.stdout.write(`  ${label} ${((Date.now() - t) / 1000).toFixed(1)} s\n`);
  }
}

async function main() {
  const started = Date.now();
  const systems = await loadSystems();
  const meta = {
    suite: 'rpc',
    node: process.version,
    cpu: cpuModel(),
    nproc: cpus().length,
    platform: `${process.platform} ${process.arch}`,
    date: new Date().toISOString(),
    loadavg_start: loadavg().map((x) => Number(x.toFixed(2))),
    quick,
    steady,
    pinned_available: canPin,
    config,
  };
  console.log(`rpc: ${meta.cpu}, ${meta.nproc} CPUs, node ${meta.node}, load ${meta.loadavg_start.join(' ')}${quick ? ', --quick' : ''}${steady ? ', --steady' : ''}, ${config.rounds} round(s) for W1-W3`);
  console.log(`rpc: systems ${systems.map((s) => s.name).join(', ')}`);

  const results = new Map(systems.map((s) => [s.name, {}]));
  const set = (s, w, v) => (results.get(s.name)[w] = v);
  const na = (s, w) => s.na?.[w];

  // W1-W3: rounds, systems interleaved.
  const interleaved = [
    ['W1', 'median_us', false],
    ['W1p', 'median_us', true],
    ['W2', 'calls_per_s'],
    ['W3', 'mb_per_s'],
  ].filter(([w]) => wanted(w.slice(0, 2)) && (w !== 'W1p' || (canPin && !quick)));
  // --quick: W1-W3 in one client process per system, one after the other.
  if (quick) {
    for (const s of systems) {
      const sequence = Object.fromEntries(['W1', 'W2', 'W3'].filter((w) => wanted(w) && !na(s, w)).map((w) => [w, config[w]]));
      if (!Object.keys(sequence).length) continue;
      const r = await timed(`W1-W3 ${s.name}`, () => combined(s, sequence));
      if (r) for (const [w, m] of Object.entries(r)) set(s, w, { ...m, rounds: [] });
    }
    interleaved.length = 0;
  }
  for (const [w, key, pinned] of interleaved) {
    const runs = new Map(systems.map((s) => [s.name, []]));
    for (let r = 0; r < config.rounds; r++) {
      for (const s of systems) {
        if (na(s, w.slice(0, 2)) || r >= roundsFor(s)) continue;
        const m = await timed(`${w} ${s.name} round ${r + 1}`, () => single(s, w.slice(0, 2), pinned));
        if (m) runs.get(s.name).push(m);
      }
    }
    for (const s of systems) {
      const list = runs.get(s.name);
      if (list.length) set(s, w, median(list, key));
    }
  }
  for (const s of systems) {
    if (wanted('W4') && !na(s, 'W4')) set(s, 'W4', await timed(`W4 ${s.name}`, () => fdPassing(s)));
    if (wanted('W5') && !na(s, 'W5')) set(s, 'W5', await timed(`W5 ${s.name}`, () => fanout(s)));
    if (wanted('W6') && !na(s, 'W6')) set(s, 'W6', await timed(`W6 ${s.name}`, () => idle(s)));
    if (wanted('W7') && !na(s, 'W7')) set(s, 'W7', await timed(`W7 ${s.name}`, () => coldCalls(s)));
  }
  for (const s of systems) {
    const r = results.get(s.name);
    for (const w of Object.keys(r)) if (r[w] === null) delete r[w];
  }
  meta.loadavg_end = loadavg().map((x) => Number(x.toFixed(2)));
  meta.seconds = (Date.now() - started) / 1000;

  // One row per system x workload.
  const rows = [];
  for (const s of systems) {
    const r = results.get(s.name);
    for (const w of WORKLOADS) {
      if (!wanted(w)) continue;
      const base = { system: s.name, label: s.label, transport: s.transport, workload: w, node: meta.node, cpu: meta.cpu, date: meta.date };
      if (na(s, w)) {
        rows.push({ ...base, status: 'n/a', reason: na(s, w) });
        continue;
      }
      let metrics = r[w];
      if (w === 'W1' && r.W1p) {
        const p = r.W1p;
        metrics = { ...metrics, pinned_median_us: p.median_us, pinned_p99_us: p.p99_us, pinned_measured: p.measured, pinned_capped: p.capped, pinned_rounds: p.rounds, pinned_client_cpu_us: p.client_cpu_us, pinned_server_cpu_us: p.server_cpu_us };
      }
      rows.push(metrics ? { ...base, status: 'ok', metrics } : { ...base, status: 'failed' });
    }
  }
  const doc = { ...meta, results: rows };
  printTable(doc, systems);

  const full = !quick && !steady && !onlySystems && !onlyWorkloads;
  mkdirSync(resultsDir, { recursive: true });
  const out = join(resultsDir, full ? 'latest.json' : 'latest-dev.json');
  writeFileSync(out, `${JSON.stringify(doc, null, 2)}\n`);
  console.log(`\nrpc: every answer checked; wrote ${out}`);
  if (full) for (const f of writeDocs(doc)) console.log(`rpc: wrote ${f}`);
  console.log(`rpc: done in ${meta.seconds.toFixed(1)} s, load ${meta.loadavg_start.join(' ')} -> ${meta.loadavg_end.join(' ')}`);
  if (failures.length) {
    console.log(`rpc: ${failures.length} measurement(s) failed:`);
    for (const f of failures) console.log(`  ${f}`);
    process.exitCode = 1;
  }
}

function printTable(doc, systems) {
  const get = (s, w) => doc.results.find((r) => r.system === s && r.workload === w);
  const num = (v, d = 0) => (v === undefined || v === null || Number.isNaN(v) ? '-' : v >= 1e4 && d === 0 ? Math.round(v).toLocaleString('en-US') : v.toFixed(d));
  const cols = [
    ['W1 µs med', 'W1', 'median_us', 1],
    ['p99', 'W1', 'p99_us', 1],
    ['W1 pinned med', 'W1', 'pinned_median_us', 1],
    ['p99', 'W1', 'pinned_p99_us', 1],
    ['W2 calls/s', 'W2', 'calls_per_s', 0],
    ['W3 MB/s', 'W3', 'mb_per_s', 0],
    ['W4 fds/s', 'W4', 'fds_per_s', 0],
    ['leak', 'W4', 'fds_leaked', 0],
    ['W5 events/s', 'W5', 'events_per_s', 0],
    ['W6 RSS B/conn', 'W6', 'rss_per_conn', 0],
    ['heap B/conn', 'W6', 'heap_per_conn', 0],
    ['idle RSS', 'W6', 'settled_rss_per_conn', 0],
    ['conn/s', 'W6', 'connects_per_s', 0],
    ['W7 ms', 'W7', 'median_ms', 0],
  ];
  const head = ['system', ...cols.map((c) => c[0])];
  const body = systems.map((s) => [
    s.name,
    ...cols.map(([, w, k, d]) => {
      const r = get(s.name, w);
      if (!r) return '';
      if (r.status === 'n/a') return 'n/a';
      if (r.status === 'failed') return 'FAILED';
      return num(r.metrics?.[k], d);
    }),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log('');
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const b of body) console.log(line(b));
  const nas = doc.results.filter((r) => r.status === 'n/a');
  if (nas.length) {
    console.log('\nn/a:');
    for (const r of nas) console.log(`  ${r.workload} ${r.system}: ${r.reason}`);
  }
  // Ratios against the hand-written baseline (higher is better for ours).
  const base = (w, k) => get('baseline', w)?.metrics?.[k];
  if (base('W2', 'calls_per_s')) {
    console.log('\nagainst the hand-written baseline (x = times better):');
    for (const s of systems.filter((x) => x.ours)) {
      const r = (w, k, lower) => {
        const o = get(s.name, w)?.metrics?.[k];
        const b = base(w, k);
        return o && b ? `${(lower ? b / o : o / b).toFixed(2)}x` : '-';
      };
      console.log(
        `  ${s.name.padEnd(17)} W1 ${r('W1', 'median_us', true)}  W1 pinned ${r('W1', 'pinned_median_us', true)}  W2 ${r('W2', 'calls_per_s')}  W3 ${r('W3', 'mb_per_s')}  W5 ${r('W5', 'events_per_s')}  W6 RSS ${r('W6', 'rss_per_conn', true)}  W7 ${r('W7', 'above_node_ms', true)}`,
      );
    }
  }
}

main().catch((err) => {
  console.error(`rpc: ${err.stack ?? err}`);
  process.exit(1);
});
