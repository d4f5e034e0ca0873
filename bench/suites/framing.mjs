// Framing benchmark: frames/s and MB/s (payload bytes, 1 MB = 10^6 B) for
// small (64 B) and large (1 MiB) frames.
//
//   decoder  in-process, no I/O: @afunix/framing's FrameDecoder next to a
//            naive length-prefix decoder that Buffer.concat()s every chunk
//            onto what it holds. The stream is cut into 64 KiB chunks, the
//            size of a stream socket read, so frames straddle chunks.
//   socket   two processes over a real AF_UNIX socket: the client sends
//            for a fixed time honouring backpressure, the server counts
//            from its first frame to end of stream. framing over stream,
//            framing over seqpacket, and raw seqpacket (one message per
//            write, no header) as the floor framing is measured against.
//
// The systems being compared run in alternation, several rounds, and the
// table shows each one's median round, so that a noisy neighbour on a
// shared machine hits them alike.
//
// Results: bench/results/framing.json (framing-dev.json with --quick).
//
//   node bench/suites/framing.mjs [--quick]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuModel } from '../lib/machine.mjs';
import { FrameDecoder, encodeHeader } from '../../packages/framing/dist/index.js';
import { loadError } from '../../packages/transport/dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const peer = join(here, '..', 'lib', 'framing-peer.mjs');

const quick = process.argv.includes('--quick');
// A --quick run is for development: its figures go to framing-dev.json (not
// committed), never over the full run's.
const resultsFile = join(here, '..', 'results', quick ? 'framing-dev.json' : 'framing.json');
const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 64 * KiB;
const config = quick ? { rounds: 1, decoderSeconds: 0.08, socketSeconds: 0.2 } : { rounds: 3, decoderSeconds: 0.4, socketSeconds: 0.8 };
// Large frames get twice the decoder time: fewer of them fit in a second,
// and their cost (allocating and faulting in fresh memory) varies more.
const SIZES = [
  { label: '64 B', bytes: 64, framesPerStream: 16_384, decoderTime: 1 },
  { label: '1 MiB', bytes: MiB, framesPerStream: 16, decoderTime: 2 },
];
const TIMEOUT_MS = 60_000;

function now() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function cutInto(stream, size) {
  const chunks = [];
  for (let at = 0; at < stream.length; at += size) chunks.push(stream.subarray(at, at + size));
  return chunks;
}

// ------------------------------------------------------------- decoders

/** The usual first attempt: keep one buffer, concat each chunk onto it, slice frames off the front. */
class NaiveDecoder {
  #held = Buffer.alloc(0);
  #onFrame;

  constructor(onFrame) {
    this.#onFrame = onFrame;
  }

  push(chunk) {
    this.#held = this.#held.length === 0 ? chunk : Buffer.concat([this.#held, chunk]);
    while (this.#held.length >= 4) {
      const length = this.#held.readUInt32LE(0);
      if (this.#held.length < 4 + length) return;
      this.#onFrame(this.#held.subarray(4, 4 + length));
      this.#held = this.#held.subarray(4 + length);
    }
  }
}

function afunixStream(size) {
  const payload = Buffer.alloc(size.bytes, 0x5a);
  return Buffer.concat(Array.from({ length: size.framesPerStream }, () => [encodeHeader(size.bytes), payload]).flat());
}

function naiveStream(size) {
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32LE(size.bytes);
  const payload = Buffer.alloc(size.bytes, 0x5a);
  return Buffer.concat(Array.from({ length: size.framesPerStream }, () => [prefix, payload]).flat());
}

function cpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

// Feeds the same chunked stream again and again for `seconds`; every frame
// is checked for its length so that a broken decoder cannot look fast. The
// rate is per second of this process's CPU time: the decoder is CPU-bound,
// and on a shared machine wall time mostly measures the neighbours.
function runDecoder(makeDecoder, stream, size, seconds) {
  const chunks = cutInto(stream, CHUNK);
  let frames = 0;
  let bytes = 0;
  const onFrame = (payload) => {
    if (payload.length !== size.bytes) throw new Error(`decoded a ${payload.length}-byte frame, expected ${size.bytes}`);
    frames++;
    bytes += payload.length;
  };
  const decoder = makeDecoder(onFrame);
  // Warm-up: long enough for the JIT's optimising tier to kick in.
  const warmUntil = now() + Math.min(0.2, seconds);
  do for (const c of chunks) decoder.push(c);
  while (now() < warmUntil);
  frames = 0;
  bytes = 0;
  const t0 = now();
  const cpu0 = cpuSeconds();
  do for (const c of chunks) decoder.push(c);
  while (now() - t0 < seconds);
  if (frames % size.framesPerStream !== 0) throw new Error(`decoded ${frames} frames, not a whole number of streams`);
  return { frames, bytes, seconds: now() - t0, cpu: cpuSeconds() - cpu0 };
}

// A run's rate per CPU-second: for the decoder its own CPU time; over a
// socket the busier side's (the rate it would reach with a core to itself).
function cpuRate(r) {
  return r.frames / (r.cpu ?? r.seconds);
}

/** The round with the median CPU rate, and every round's. */
function median(runs) {
  const sorted = [...runs].sort((a, b) => cpuRate(a) - cpuRate(b));
  return { ...sorted[Math.floor((sorted.length - 1) / 2)], rounds: runs.map((r) => Math.round(cpuRate(r))) };
}

function decoderBenchmarks() {
  const rows = [];
  for (const size of SIZES) {
    const streams = { ours: afunixStream(size), naive: naiveStream(size) };
    const runs = { ours: [], naive: [] };
    for (let r = 0; r < config.rounds; r++) {
      const seconds = config.decoderSeconds * size.decoderTime;
      runs.ours.push(runDecoder((f) => new FrameDecoder(f), streams.ours, size, seconds));
      runs.naive.push(runDecoder((f) => new NaiveDecoder(f), streams.naive, size, seconds));
    }
    rows.push({ group: 'decoder', system: 'afunix FrameDecoder', size: size.label, ...median(runs.ours) });
    rows.push({ group: 'decoder', system: 'naive Buffer.concat', size: size.label, ...median(runs.naive) });
  }
  return rows;
}

// ------------------------------------------------------------- sockets

function startPeer(role, dir) {
  const child = spawn(process.execPath, [peer, role, dir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const messages = [];
  const waiters = [];
  child.on('message', (m) => (waiters.length ? waiters.shift()(m) : messages.push(m)));
  const next = (what) =>
    new Promise((resolve, reject) => {
      if (messages.length) return resolve(messages.shift());
      const timer = setTimeout(() => reject(new Error(`${role}: no ${what} in ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS);
      waiters.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`${role}: exited (${signal ?? `code ${code}`}) before its ${what}`));
      });
    });
  return { child, exited, next };
}

const MODES = ['framing-stream', 'framing-seqpacket', 'raw-seqpacket'];

// One server and one client process for the whole run (starting node is
// slow on a busy machine); the cases go one at a time over one connection each.
async function socketBenchmarks() {
  const dir = mkdtempSync(join(tmpdir(), 'afunix-bench-framing-'));
  const server = startPeer('server', dir);
  const client = startPeer('client', dir);
  try {
    await Promise.all([server.next('ready'), client.next('ready')]);
    const rows = [];
    for (const size of SIZES) {
      const runs = new Map(MODES.map((m) => [m, []]));
      for (let round = 0; round < config.rounds; round++) {
        for (const mode of MODES) {
          client.child.send({ run: { mode, bytes: size.bytes, seconds: config.socketSeconds } });
          const [{ result }, { sent, cpu }] = await Promise.all([server.next(`${mode} result`), client.next(`${mode} result`)]);
          if (result.frames !== sent || result.bytes !== sent * size.bytes) {
            throw new Error(`${mode} ${size.label}: sent ${sent} frames, the receiver counted ${result.frames} (${result.bytes} bytes)`);
          }
          runs.get(mode).push({ ...result, receiverCpu: result.cpu, senderCpu: cpu, cpu: Math.max(result.cpu, cpu) });
        }
      }
      for (const mode of MODES) rows.push({ group: 'socket', system: mode, size: size.label, ...median(runs.get(mode)) });
    }
    return rows;
  } finally {
    for (const p of [client, server]) {
      p.child.kill();
      const t = setTimeout(() => p.child.kill('SIGKILL'), 5_000);
      await p.exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------- report


function printTable(rows) {
  const head = ['group', 'system', 'frame', 'frames/CPU-s', 'MB/CPU-s', 'vs', 'wall frames/s', 'wall MB/s'];
  const baseline = (r) =>
    rows.find((b) => b.group === r.group && b.size === r.size && b.system === (r.group === 'decoder' ? 'naive Buffer.concat' : 'raw-seqpacket'));
  const count = (n) => Math.round(n).toLocaleString('en-US');
  const body = rows.map((r) => {
    const base = baseline(r);
    const ratio = base && base !== r ? `${(cpuRate(r) / cpuRate(base)).toFixed(2)}x ${base.system.split(' ')[0]}` : '';
    const wall = r.group === 'socket' ? [count(r.frames / r.seconds), (r.bytes / 1e6 / r.seconds).toFixed(0)] : ['', ''];
    return [r.group, r.system, r.size, count(cpuRate(r)), (r.bytes / 1e6 / r.cpu).toFixed(0), ratio, ...wall];
  });
  const numeric = new Set([3, 4, 6, 7]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const b of body) console.log(line(b));
}

async function main() {
  if (loadError) throw new Error(`the transport's native addon is not loaded (${loadError.message.split('\n')[0]}): seqpacket and fd passing need it`);
  const started = Date.now();
  const meta = { suite: 'framing', node: process.version, cpu: cpuModel(), nproc: cpus().length, platform: `${process.platform} ${process.arch}`, date: new Date().toISOString(), quick, config, chunk: CHUNK };
  console.log(`framing: ${meta.cpu}, ${meta.nproc} CPUs, node ${meta.node}${quick ? ', --quick' : ''}; payload bytes, 1 MB = 10^6 B`);
  const rows = [...decoderBenchmarks(), ...(await socketBenchmarks())];
  console.log('');
  printTable(rows);
  console.log('');
  console.log(`decoder: ${CHUNK / KiB} KiB chunks, rate per second of CPU time; naive uses a 4-byte length prefix.`);
  console.log(`socket: one connection per case, ${config.socketSeconds} s of sending, frames counted by the receiver; frames/CPU-s divides by the busier process's CPU time, wall by elapsed time.`);
  console.log(`median of ${config.rounds} round(s), systems alternating; load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')} on ${cpus().length} CPUs.`);
  if (config.rounds > 1) for (const r of rows) console.log(`  ${r.group} ${r.system} ${r.size}: ${r.rounds.map((x) => x.toLocaleString('en-US')).join(', ')} frames/CPU-s`);
  mkdirSync(dirname(resultsFile), { recursive: true });
  writeFileSync(resultsFile, `${JSON.stringify({ ...meta, results: rows }, null, 2)}\n`);
  console.log(`framing: wrote ${resultsFile} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((err) => {
  console.error(`framing: ${err.stack ?? err}`);
  process.exit(1);
});
