// One soak client process (scripts/soak.mjs starts several and SIGKILLs
// some of them along the way):
//   node soak-worker.mjs <address> <connections> <seed>
// Each connection runs up to 4 random operations at a time until SIGTERM;
// then the worker lets what is in flight settle and prints a final report.
// Every second it prints a progress line. Both are JSON lines on stdout.
import { openSync } from 'node:fs';
import { Fd, connect } from '../packages/rpc/dist/index.js';

const [address, connectionsArg, seedArg] = process.argv.slice(2);
const CONNECTIONS = Number(connectionsArg ?? 4);
const CONCURRENCY = 4;
const STUCK_MS = 10_000;

// A small seeded PRNG (mulberry32), so a run can be replayed.
let state = Number(seedArg ?? 1) >>> 0;
function random() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (n) => Math.floor(random() * n);

const stats = {
  completed: 0,
  failed: 0,
  byCode: {},
  unexpected: {},
  streamsItems: 0,
  reconnects: 0,
  events: 0,
  fdsSent: 0,
  maxLatencyMs: 0,
  stuck: 0,
};
const pending = new Map(); // op id -> start time
let nextOp = 0;
let stopping = false;
const devnull = Array.from({ length: 5 }, () => openSync('/dev/null', 'r'));

// Codes an operation may legitimately end with, by what it did.
const EXPECTED = {
  abort: ['ABORT_ERR'],
  timeout: ['ETIMEDOUT'],
  any: [],
};

function settle(kind, started, err) {
  const ms = performance.now() - started;
  stats.maxLatencyMs = Math.max(stats.maxLatencyMs, ms);
  if (!err) {
    stats.completed++;
    return;
  }
  const code = err.code ?? 'NO_CODE';
  stats.failed++;
  stats.byCode[code] = (stats.byCode[code] ?? 0) + 1;
  // A connection this worker closed on purpose (a reconnect) fails its calls with CONNECTION_CLOSED.
  const ok = (EXPECTED[kind] ?? []).includes(code) || code === 'CONNECTION_CLOSED';
  if (!ok) stats.unexpected[code] = (stats.unexpected[code] ?? 0) + 1;
}

async function op(slot) {
  const kind = random();
  const c = slot.client;
  if (kind < 0.3) return ['any', c.add(pick(1000), pick(1000))];
  if (kind < 0.4) {
    const size = [0, 10, 1000, 64 * 1024][pick(4)];
    const value = { buf: Buffer.alloc(size, 1), map: new Map([[1, 'a'], ['b', new Set([1, 2])]]), when: new Date(), big: 2n ** 70n };
    return ['any', c.echo(value)];
  }
  if (kind < 0.5) return ['any', c.delay(pick(50), 1)];
  if (kind < 0.58) {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), pick(20));
    return ['abort', c.$with({ signal: ac.signal }).delay(1_000, 1)];
  }
  if (kind < 0.65) return ['timeout', c.$with({ timeout: 5 + pick(10) }).delay(1_000, 1)];
  if (kind < 0.75) {
    return ['any', (async () => {
      for await (const _ of c.count(pick(200), 0)) stats.streamsItems++;
    })()];
  }
  if (kind < 0.8) {
    const stopAt = pick(100);
    return ['any', (async () => {
      for await (const n of c.count(1_000_000, 0)) {
        stats.streamsItems++;
        if (n >= stopAt) break; // cancels on the server
      }
    })()];
  }
  if (kind < 0.85) {
    const stopAt = pick(40);
    return ['any', (async () => {
      let i = 0;
      for await (const _ of c.feed(1_000, 16 * 1024)) if (++i >= stopAt) break;
      stats.streamsItems += i;
    })()];
  }
  if (kind < 0.9) {
    const n = 1 + pick(5);
    stats.fdsSent += n;
    return ['any', c.sink(...devnull.slice(0, n).map((fd) => Fd.from(fd)))];
  }
  if (kind < 0.95) return ['any', c.publish(2, 1024)];
  if (kind < 0.98) {
    c.$notify.add(1, 2);
    return ['any', Promise.resolve()];
  }
  // Reconnect: drop this connection (its calls in flight fail with
  // CONNECTION_CLOSED) and open a new one.
  return ['any', reconnect(slot)];
}

async function reconnect(slot) {
  const old = slot.client;
  slot.client = await open();
  stats.reconnects++;
  await old.$close();
}

async function open() {
  const c = await connect(address, { timeout: 5_000 });
  if (random() < 0.5) c.$events.on('tick', () => stats.events++);
  return c;
}

async function lane(slot) {
  while (!stopping) {
    const id = nextOp++;
    const started = performance.now();
    pending.set(id, started);
    let kind = 'any';
    try {
      const [k, p] = await op(slot);
      kind = k;
      await p;
      settle(kind, started, null);
    } catch (err) {
      settle(kind, started, err);
    } finally {
      pending.delete(id);
    }
  }
}

const slots = [];
for (let i = 0; i < CONNECTIONS; i++) slots.push({ client: await open() });
const lanes = slots.flatMap((slot) => Array.from({ length: CONCURRENCY }, () => lane(slot)));

const report = (type) => {
  const now = performance.now();
  let oldest = 0;
  for (const started of pending.values()) oldest = Math.max(oldest, now - started);
  if (oldest > STUCK_MS) stats.stuck++;
  process.stdout.write(`${JSON.stringify({ type, pid: process.pid, pending: pending.size, oldestPendingMs: Math.round(oldest), ...stats })}\n`);
};
const ticker = setInterval(() => report('progress'), 1_000);

process.on('SIGTERM', async () => {
  stopping = true;
  // Everything in flight settles (each within the bound), then the report.
  const deadline = Date.now() + STUCK_MS;
  await Promise.race([Promise.allSettled(lanes), new Promise((r) => setTimeout(r, STUCK_MS))]);
  clearInterval(ticker);
  if (Date.now() > deadline) stats.stuck++;
  await Promise.allSettled(slots.map((s) => s.client.$close()));
  report('final');
  process.exit(0);
});
process.stdout.write(`${JSON.stringify({ type: 'ready', pid: process.pid })}\n`);
