// What this machine allows, with no library at all: W3's and W4's shapes
// written in C against the raw syscalls (bench/ceiling/*.c), two processes
// over a unix socketpair, each answer checked. A target such as "W4: 100,000
// fds/s" means something only next to what plain sendmsg/recvmsg reach on
// the same machine in the same run, and on a VM that varies from hour to hour.
//
//   bulk  echo of 64 KiB messages, 4 in flight (W3's shape)      MB/s
//   fds   one fd per sendmsg, fstat() and close() on the far side,
//         the inode sent back; 256 in flight (W4's shape)         fds/s
//
// Needs a C compiler (cc); without one the suite says so and passes.
// Results: bench/results/ceiling.json (ceiling-dev.json with --quick), and the
// ceiling section of docs/benchmarks.md on a full run.
//
//   node bench/suites/ceiling.mjs [--quick] [--rounds=N]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuModel } from '../lib/machine.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const sources = join(here, '..', 'ceiling');
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const roundsArg = Number(argv.find((a) => a.startsWith('--rounds='))?.split('=')[1]);
const rounds = roundsArg > 0 ? roundsArg : quick ? 1 : 3;
const resultsFile = join(here, '..', 'results', quick ? 'ceiling-dev.json' : 'ceiling.json');
const docsFile = join(here, '..', '..', 'docs', 'benchmarks.md');
const START = '<!-- ceiling:generated:start (bench/suites/ceiling.mjs writes this part) -->';
const END = '<!-- ceiling:generated:end -->';

// Each program's arguments keep W3's and W4's counts (bench/suites/rpc.mjs).
const programs = [
  { name: 'bulk', workload: 'W3', metric: 'mb_per_s', unit: 'MB/s', args: quick ? [10, 200, 4, 65536] : [100, 2000, 4, 65536] },
  { name: 'fds', workload: 'W4', metric: 'fds_per_s', unit: 'fds/s', args: quick ? [100, 2000, 256] : [1000, 20000, 256] },
];

function compile(dir) {
  if (spawnSync('cc', ['--version'], { stdio: 'ignore' }).status !== 0) return false;
  for (const p of programs) execFileSync('cc', ['-O2', '-Wall', '-o', join(dir, p.name), join(sources, `${p.name}.c`)], { stdio: 'inherit' });
  return true;
}

function measure(dir, p) {
  const out = execFileSync(join(dir, p.name), p.args.map(String), { encoding: 'utf8', timeout: 120_000 });
  const m = new RegExp(`^${p.metric}=([0-9.]+)$`, 'm').exec(out);
  if (!m) throw new Error(`${p.name} printed no ${p.metric}: ${out}`);
  return Number(m[1]);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

function writeDocsSection(rows, doc) {
  const lines = [
    START,
    `C against the raw syscalls, no RPC, in the same \`pnpm bench\` (${doc.date.slice(0, 16).replace('T', ' ')} UTC, load ${doc.load.start.join(' ')}; median of ${rounds}): the ceiling afunix's W3 and W4 are read against.`,
    '',
    '| shape | program | figure | rounds |',
    '|---|---|--:|---|',
    ...rows.map((r) => `| ${r.workload} | bench/ceiling/${r.name}.c | ${Math.round(r.value).toLocaleString('en-US')} ${r.unit} | ${r.rounds.map((x) => Math.round(x).toLocaleString('en-US')).join(' / ')} |`),
    END,
  ];
  const old = readFileSync(docsFile, 'utf8');
  const a = old.indexOf(START);
  const b = old.indexOf(END);
  const md = a >= 0 && b > a ? old.slice(0, a) + lines.join('\n') + old.slice(b + END.length) : `${old.trimEnd()}\n\n## What the machine allows\n\n${lines.join('\n')}\n`;
  writeFileSync(docsFile, md);
}

const dir = mkdtempSync(join(tmpdir(), 'afunix-ceiling-'));
try {
  if (!compile(dir)) {
    console.log('ceiling: no C compiler (cc): skipped');
    process.exit(0);
  }
  const load = { start: loadavg().map((x) => Number(x.toFixed(2))) };
  const rows = [];
  for (const p of programs) {
    const list = [];
    for (let i = 0; i < rounds; i++) list.push(measure(dir, p));
    rows.push({ name: p.name, workload: p.workload, metric: p.metric, unit: p.unit, value: median(list), rounds: list, args: p.args });
    console.log(`ceiling: ${p.workload} ${p.name}: ${Math.round(median(list)).toLocaleString('en-US')} ${p.unit} (rounds ${list.map((x) => Math.round(x)).join(', ')})`);
  }
  load.end = loadavg().map((x) => Number(x.toFixed(2)));
  const doc = { date: new Date().toISOString(), node: process.version, cpu: cpuModel(), cpus: cpus().length, load, rows };
  writeFileSync(resultsFile, `${JSON.stringify(doc, null, 2)}\n`);
  if (!quick) writeDocsSection(rows, doc);
  console.log(`ceiling: wrote ${resultsFile}${quick ? '' : ` and ${docsFile}`}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
