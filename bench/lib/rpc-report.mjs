// Turns the RPC suite's JSON (bench/results/latest.json) into
// docs/benchmarks.md (tables, ratios against the hand-written baseline,
// targets) and docs/benchmarks.svg (bar chart of W2 calls/s and W3 MB/s,
// log scale). No charting dependency: the SVG is written here.
//
// The generated part of benchmarks.md sits between two marker comments;
// whatever the file has outside them (analysis, profiles) is kept.
//
//   node bench/lib/rpc-report.mjs [results.json]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const START = '<!-- rpc-bench:generated:start (bench/lib/rpc-report.mjs writes this part from bench/results/latest.json) -->';
const END = '<!-- rpc-bench:generated:end -->';

const WORKLOADS = {
  W1: 'W1 latency: sequential echo, 2,000 warm-up + 20,000 measured',
  W2: 'W2 pipelined: 256 calls in flight, 2,000 warm-up + 200,000 measured',
  W3: 'W3 bulk: echo of 64 KiB binary, 4 in flight, 2,000 measured (+100 warm-up)',
  W4: 'W4 fd passing: one pipe fd per call, 256 in flight, 20,000 measured (+1,000 warm-up)',
  W5: 'W5 fan-out: one server, 100 subscribed connections in 4 client processes, 2,000 events each',
  W6: 'W6 idle connections: 10,000 concurrent connections from 4 client processes',
  W7: 'W7 cold call: a fresh process loads the client, connects, makes one call and exits; 15 of them',
};

function fmt(v, digits = 0) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–';
  if (digits === 0) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(digits);
}

function index(doc) {
  const by = new Map();
  for (const r of doc.results) by.set(`${r.system}/${r.workload}`, r);
  const systems = [];
  for (const r of doc.results) if (!systems.some((s) => s.system === r.system)) systems.push({ system: r.system, label: r.label, transport: r.transport });
  return { get: (s, w) => by.get(`${s}/${w}`), systems };
}

function ratio(v, b, lowerIsBetter) {
  if (!v || !b) return '–';
  return `${(lowerIsBetter ? b / v : v / b).toFixed(2)}×`;
}

// One table per workload: every system, its figures, and the baseline ratio
// of the main metric (× > 1 means better than the baseline).
function workloadTable(doc, w, columns, main) {
  const { get, systems } = index(doc);
  const base = get('baseline', w)?.metrics;
  const lines = [];
  lines.push(`| system | ${columns.map((c) => c.head).join(' | ')} | vs baseline |`);
  lines.push(`|---|${columns.map(() => '--:').join('|')}|--:|`);
  for (const s of systems) {
    const r = get(s.system, w);
    if (!r) continue;
    if (r.status === 'n/a') {
      lines.push(`| ${s.system} | ${columns.map(() => 'n/a').join(' | ')} | ${r.reason} |`);
      continue;
    }
    if (r.status !== 'ok') {
      lines.push(`| ${s.system} | ${columns.map(() => 'failed').join(' | ')} | |`);
      continue;
    }
    const m = r.metrics;
    const cells = columns.map((c) => fmt(m[c.key], c.digits));
    const capped = [m.capped && `${fmt(m.measured)} calls measured`, m.pinned_capped && `pinned: ${fmt(m.pinned_measured)}`].filter(Boolean);
    const name = capped.length ? `${s.system} (stopped after 12 s: ${capped.join(', ')})` : s.system;
    lines.push(`| ${name} | ${cells.join(' | ')} | ${s.system === 'baseline' ? '1.00×' : ratio(m[main.key], base?.[main.key], main.lower)} |`);
  }
  return lines.join('\n');
}

function targets(doc) {
  const { get, systems } = index(doc);
  const m = (s, w) => get(s, w)?.metrics;
  const base = (w) => m('baseline', w);
  const peers = systems.filter((s) => !s.system.startsWith('afunix') && s.system !== 'baseline').map((s) => s.system);
  const bestPeer = (w, k) => {
    let best = null;
    for (const p of peers) {
      const v = m(p, w)?.[k];
      if (v && (!best || v > best.v)) best = { p, v };
    }
    return best;
  };
  const ours = m('afunix-stream', 'W2') ? 'afunix-stream' : null;
  if (!ours) return '';
  const rows = [];
  const row = (target, measured, met) => rows.push(`| ${target} | ${measured} | ${met === null ? '–' : met ? 'met' : '**missed**'} |`);
  const w2 = m(ours, 'W2')?.calls_per_s;
  const w2b = base('W2')?.calls_per_s;
  const w2p = bestPeer('W2', 'calls_per_s');
  row('W2 ≥ 3× the baseline’s calls/s', `${fmt(w2)} vs ${fmt(w2b)}: ${ratio(w2, w2b)}`, w2 && w2b ? w2 >= 3 * w2b : null);
  row('W2 well ahead of every peer', w2p ? `best peer ${w2p.p} ${fmt(w2p.v)}: ${ratio(w2, w2p.v)}` : '–', w2p ? w2 > 1.5 * w2p.v : null);
  row('W2 aim: 1,000,000 calls/s', fmt(w2), w2 ? w2 >= 1e6 : null);
  const w3 = m(ours, 'W3')?.mb_per_s;
  const w3p = bestPeer('W3', 'mb_per_s');
  row('W3 ≥ 1,500 MB/s', fmt(w3), w3 ? w3 >= 1500 : null);
  row('W3 ≥ 2× the best peer', w3p ? `best peer ${w3p.p} ${fmt(w3p.v)}: ${ratio(w3, w3p.v)}` : '–', w3p && w3 ? w3 >= 2 * w3p.v : null);
  const w1 = m(ours, 'W1');
  const w1b = base('W1');
  if (w1?.pinned_median_us && w1b?.pinned_median_us) {
    row('W1 pinned median below the baseline’s', `${fmt(w1.pinned_median_us, 1)} µs vs ${fmt(w1b.pinned_median_us, 1)} µs`, w1.pinned_median_us < w1b.pinned_median_us);
  }
  if (w1 && w1b) row('W1 unpinned median no worse than the baseline’s (within 3%, the run-to-run noise of this VM)', `${fmt(w1.median_us, 1)} µs vs ${fmt(w1b.median_us, 1)} µs`, w1.median_us <= w1b.median_us * 1.03);
  const w4 = m(ours, 'W4');
  if (w4) row('W4 ≥ 100,000 fds/s, none leaked', `${fmt(w4.fds_per_s)} fds/s, ${fmt(w4.fds_leaked)} leaked`, w4.fds_per_s >= 1e5 && w4.fds_leaked === 0);
  const w6 = m(ours, 'W6');
  if (w6) row('W6 < 4 KiB server memory per idle connection, right after connecting', `RSS ${fmt(w6.rss_per_conn)} B, heap ${fmt(w6.heap_per_conn)} B`, w6.rss_per_conn < 4096 && w6.heap_per_conn < 4096);
  if (w6?.settled_rss_per_conn != null) {
    const after = w6.settled ? `after ${fmt(w6.settle_s, 1)} s idle` : `not settled in ${fmt(w6.settle_s, 1)} s`;
    row('W6 < 4 KiB, once the server has idled (V8 gave back the young generation)', `RSS ${fmt(w6.settled_rss_per_conn)} B, heap ${fmt(w6.settled_heap_per_conn)} B (${after})`, w6.settled_rss_per_conn < 4096 && w6.settled_heap_per_conn < 4096);
  }
  return [`Targets, for afunix-stream on this machine:`, '', '| target | measured | |', '|---|---|---|', ...rows].join('\n');
}

export function renderMarkdown(doc) {
  const out = [];
  out.push(START);
  out.push('');
  out.push(`Run of ${doc.date.slice(0, 16).replace('T', ' ')} UTC: \`pnpm bench -- --only=rpc\` on ${doc.cpu}, ${doc.nproc} CPUs, ${doc.platform}, Node ${doc.node}.`);
  out.push(`Load average ${doc.loadavg_start.join(' / ')} at the start, ${doc.loadavg_end.join(' / ')} at the end (1/5/15 min; the machine is shared, so read ratios within this run rather than absolute figures). ${doc.config.rounds} round(s) per W1–W3 figure, the median round shown; ${fmt(doc.seconds)} s in all.`);
  out.push('');
  out.push('![W2 calls/s and W3 MB/s per system, log scale](benchmarks.svg)');
  out.push('');
  const t = targets(doc);
  if (t) out.push(t, '');
  out.push(`### ${WORKLOADS.W1}`, '');
  out.push('Median and p99 round trip in µs; "pinned": both processes on CPU 0 (`taskset -c 0`), which removes this VM’s cross-CPU wake-up and leaves the software’s own cost. cpu: µs of CPU per call, client + server (all calls of the unpinned run). vs baseline compares the pinned median.', '');
  out.push(workloadTable(doc, 'W1', [
    { head: 'median µs', key: 'median_us', digits: 1 },
    { head: 'p99 µs', key: 'p99_us', digits: 1 },
    { head: 'pinned median µs', key: 'pinned_median_us', digits: 1 },
    { head: 'pinned p99 µs', key: 'pinned_p99_us', digits: 1 },
    { head: 'client cpu µs', key: 'client_cpu_us', digits: 1 },
    { head: 'server cpu µs', key: 'server_cpu_us', digits: 1 },
  ], { key: 'pinned_median_us', lower: true }));
  out.push('', `### ${WORKLOADS.W2}`, '');
  out.push('cpu: µs of CPU per call (client: measured calls; server: all calls).', '');
  out.push(workloadTable(doc, 'W2', [
    { head: 'calls/s', key: 'calls_per_s', digits: 0 },
    { head: 'client cpu µs', key: 'client_cpu_us', digits: 2 },
    { head: 'server cpu µs', key: 'server_cpu_us', digits: 2 },
  ], { key: 'calls_per_s' }));
  out.push('', `### ${WORKLOADS.W3}`, '');
  out.push('MB/s of one direction’s payload (1 MB = 10⁶ B). JSON systems carry the bytes as base64, as their users must.', '');
  out.push(workloadTable(doc, 'W3', [
    { head: 'MB/s', key: 'mb_per_s', digits: 0 },
    { head: 'calls/s', key: 'calls_per_s', digits: 0 },
    { head: 'client cpu µs', key: 'client_cpu_us', digits: 1 },
    { head: 'server cpu µs', key: 'server_cpu_us', digits: 1 },
  ], { key: 'mb_per_s' }));
  out.push('', `### ${WORKLOADS.W4}`, '');
  out.push('fd deltas: open fds of each process after the run (and a forced GC) minus before; 0 means nothing leaked.', '');
  out.push(workloadTable(doc, 'W4', [
    { head: 'fds/s', key: 'fds_per_s', digits: 0 },
    { head: 'client fd delta', key: 'client_fd_delta', digits: 0 },
    { head: 'server fd delta', key: 'server_fd_delta', digits: 0 },
  ], { key: 'fds_per_s' }));
  out.push('', `### ${WORKLOADS.W5}`, '');
  out.push('Events delivered per second, from the server’s first emit to the last event arriving at the last connection (50 events per event-loop turn; every connection checks it gets each event once, in order).', '');
  out.push(workloadTable(doc, 'W5', [
    { head: 'events/s', key: 'events_per_s', digits: 0 },
    { head: 'server cpu µs/event', key: 'server_cpu_us', digits: 2 },
  ], { key: 'events_per_s' }));
  out.push('', `### ${WORKLOADS.W6}`, '');
  out.push('Server memory per connection: RSS and V8 heap after forced GC, with all connections up and idle, minus the same before the first one (measured after a warm-up round of 1,000 connections, opened and closed, once V8 has given back the young generation that round grew); connect+handshake rate over all of them (64 connecting at a time per client process). Then the server idles until V8 has given back the young generation that the burst of connecting grew (it does so at the first GC that finds the allocation rate low over its last 5 s: here the server idles 6 s, then forces GCs, at most 30 s in all), and the same is measured again: “idle RSS” is what the connections cost to keep. Each connection then answers one call.', '');
  out.push(workloadTable(doc, 'W6', [
    { head: 'RSS B/conn', key: 'rss_per_conn', digits: 0 },
    { head: 'heap B/conn', key: 'heap_per_conn', digits: 0 },
    { head: 'idle RSS B/conn', key: 'settled_rss_per_conn', digits: 0 },
    { head: 'idle heap B/conn', key: 'settled_heap_per_conn', digits: 0 },
    { head: 'idle after s', key: 'settle_s', digits: 1 },
    { head: 'external B/conn', key: 'external_per_conn', digits: 0 },
    { head: 'connections/s', key: 'connects_per_s', digits: 0 },
  ], { key: 'rss_per_conn', lower: true }));
  const { get, systems } = index(doc);
  if (systems.some((x) => get(x.system, 'W7'))) {
    out.push('', `### ${WORKLOADS.W7}`, '');
    out.push('What a CLI pays to ask a daemon one thing (not in the issue’s list; no target). Median ms from spawn to exit, and the median of each run minus the process of Node alone (which loads nothing) run just before it; the phases, in the process: loading the client library (its adapter file), connecting (with any handshake), the call, and closing. One server throughout, warmed by a first pair not counted.', '');
    out.push(workloadTable(doc, 'W7', [
      { head: 'ms', key: 'median_ms', digits: 1 },
      { head: 'above Node’s start', key: 'above_node_ms', digits: 1 },
      { head: 'load ms', key: 'load_ms', digits: 1 },
      { head: 'connect ms', key: 'connect_ms', digits: 1 },
      { head: 'call ms', key: 'call_ms', digits: 1 },
      { head: 'close ms', key: 'close_ms', digits: 1 },
    ], { key: 'above_node_ms', lower: true }));
  }
  out.push('');
  out.push('Systems: afunix rpc over a stream and a seqpacket unix socket, and over TCP loopback; the hand-written baseline (node:net + 4-byte length prefix + msgpackr, bench/lib/rpc-baseline.mjs); vscode-jsonrpc; node-ipc 9.2.1; @grpc/grpc-js over `unix:` with msgpackr as its serializer; birpc over a net socket with msgpackr. Each is one adapter file, bench/lib/rpc-&lt;name&gt;.mjs. Server and clients are separate processes; every answer is checked.');
  out.push('');
  out.push(END);
  return out.join('\n');
}

// ------------------------------------------------------------ the chart

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function short(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v % 1e6 === 0 ? 0 : 2)}M`;
  if (v >= 1e4) return `${Math.round(v / 1e3)}k`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v.toFixed(v < 10 ? 1 : 0);
}

function panel(doc, { w, key, title, unit }, y0, width) {
  const { get, systems } = index(doc);
  const rows = systems.map((s) => ({ s, v: get(s.system, w)?.status === 'ok' ? get(s.system, w).metrics[key] : null }));
  const values = rows.map((r) => r.v).filter((v) => v > 0);
  if (!values.length) return { svg: '', height: 0 };
  const lo = Math.floor(Math.log10(Math.min(...values)));
  const hi = Math.ceil(Math.log10(Math.max(...values)) + 0.05);
  const left = 190;
  const right = width - 70;
  const x = (v) => left + ((Math.log10(v) - lo) / (hi - lo)) * (right - left);
  const barH = 18;
  const gap = 6;
  const top = y0 + 34;
  const parts = [];
  parts.push(`<text x="${left}" y="${y0 + 16}" class="title">${esc(title)} (${esc(unit)}, log scale; longer is better)</text>`);
  for (let d = lo; d <= hi; d++) {
    const gx = x(10 ** d).toFixed(1);
    parts.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${top + rows.length * (barH + gap)}" class="grid"/>`);
    parts.push(`<text x="${gx}" y="${top + rows.length * (barH + gap) + 14}" class="tick">${short(10 ** d)}</text>`);
  }
  rows.forEach(({ s, v }, i) => {
    const y = top + i * (barH + gap);
    const cls = s.system.startsWith('afunix') ? 'ours' : s.system === 'baseline' ? 'base' : 'peer';
    parts.push(`<text x="${left - 8}" y="${y + barH - 5}" class="label">${esc(s.system)}</text>`);
    if (v > 0) {
      const bx = x(v);
      parts.push(`<rect x="${left}" y="${y}" width="${Math.max(1, bx - left).toFixed(1)}" height="${barH}" class="${cls}"/>`);
      parts.push(`<text x="${(bx + 5).toFixed(1)}" y="${y + barH - 5}" class="value">${short(v)}</text>`);
    } else {
      parts.push(`<text x="${left + 4}" y="${y + barH - 5}" class="value">n/a</text>`);
    }
  });
  return { svg: parts.join('\n'), height: 34 + rows.length * (barH + gap) + 28 };
}

export function renderSvg(doc) {
  const width = 760;
  let y = 10;
  const panels = [];
  for (const p of [
    { w: 'W2', key: 'calls_per_s', title: 'W2 pipelined echo', unit: 'calls/s' },
    { w: 'W3', key: 'mb_per_s', title: 'W3 64 KiB echo', unit: 'MB/s' },
  ]) {
    const { svg, height } = panel(doc, p, y, width);
    panels.push(svg);
    y += height + 10;
  }
  const note = `${esc(doc.cpu)}, ${doc.nproc} CPUs, Node ${esc(doc.node)}, ${esc(doc.date.slice(0, 10))}, load ${doc.loadavg_start[0]}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 16}" viewBox="0 0 ${width} ${y + 16}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif">
<style>
.title { font-size: 14px; font-weight: 600; fill: #222; }
.label { font-size: 12px; fill: #222; text-anchor: end; }
.value { font-size: 11px; fill: #333; }
.tick { font-size: 10px; fill: #777; text-anchor: middle; }
.grid { stroke: #ddd; stroke-width: 1; }
.ours { fill: #2b6cb0; }
.base { fill: #718096; }
.peer { fill: #dd8452; }
.note { font-size: 10px; fill: #777; }
</style>
<rect width="100%" height="100%" fill="#fff"/>
${panels.join('\n')}
<text x="10" y="${y + 6}" class="note">${note}</text>
</svg>
`;
}

/** Writes docs/benchmarks.md (keeping what is outside the generated block) and docs/benchmarks.svg. */
export function writeDocs(doc, docsDir = join(root, 'docs')) {
  mkdirSync(docsDir, { recursive: true });
  const mdFile = join(docsDir, 'benchmarks.md');
  const svgFile = join(docsDir, 'benchmarks.svg');
  const generated = renderMarkdown(doc);
  let md;
  if (existsSync(mdFile)) {
    const old = readFileSync(mdFile, 'utf8');
    const a = old.indexOf(START);
    const b = old.indexOf(END);
    md = a >= 0 && b > a ? old.slice(0, a) + generated + old.slice(b + END.length) : `${old.trimEnd()}\n\n${generated}\n`;
  } else {
    md = `# Benchmarks\n\nafunix rpc next to what users would pick instead, measured in one run by \`pnpm bench\` (bench/suites/rpc.mjs).\n\n${generated}\n`;
  }
  writeFileSync(mdFile, md);
  writeFileSync(svgFile, renderSvg(doc));
  return [mdFile, svgFile];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2] ?? join(root, 'bench', 'results', 'latest.json');
  for (const f of writeDocs(JSON.parse(readFileSync(file, 'utf8')))) console.log(`wrote ${f}`);
}
