// One process of the RPC benchmark (suites/rpc.mjs): a server, or a client
// running one workload, for one system. The workloads live here, once; a
// system is an adapter (bench/lib/rpc-<name>.mjs) exporting `systems`, each
// with listen(address, {handlers, backlog}) and connect(address). The
// process talks to the suite over the IPC channel: requests carry `rid`,
// answers echo it.
//
//   node rpc-peer.mjs server <adapter file> <system> <address> <json options>
//   node rpc-peer.mjs client <adapter file> <system> <address> <json options>
import { fstatSync, readdirSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';
import { pathToFileURL } from 'node:url';
import { setImmediate as tick } from 'node:timers/promises';
import { check, payload } from './rpc-payload.mjs';

const [role, file, systemName, address, optionsJson] = process.argv.slice(2);
const options = optionsJson ? JSON.parse(optionsJson) : {};
const { systems } = await import(pathToFileURL(file).href);
const system = systems.find((s) => s.name === systemName);

function fail(message) {
  console.error(`rpc-peer ${role} ${systemName} ${options.workload ?? ''}: ${message}`);
  process.exit(2);
}
if (!system) fail(`no system ${systemName} in ${file}`);
process.on('unhandledRejection', (err) => fail(`unhandled rejection: ${err?.stack ?? err}`));
process.on('disconnect', () => process.exit(0));

const now = () => process.hrtime.bigint();
const cpuMs = (since) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
};
const openFds = () => readdirSync('/proc/self/fd').length - 1; // the directory listing's own fd

// The suite's requests: { rid, cmd, ... } -> handler result, sent back with rid.
function serve(commands) {
  process.on('message', async (m) => {
    if (m === 'exit') process.exit(0);
    const handler = commands[m.cmd];
    if (!handler) return fail(`unknown command ${m.cmd}`);
    try {
      process.send({ rid: m.rid, ...(await handler(m)) });
    } catch (err) {
      fail(`${m.cmd}: ${err?.stack ?? err}`);
    }
  });
}

// Bytes the young generation holds resident. It grows while a burst of
// connections survives its scavenges, and V8 shrinks it back at a GC that
// finds the allocation rate low over its last 5 s: in an idle server, the
// next GC (the memory reducer's, some 10-40 s on here, or any other).
const youngResident = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.physical_space_size ?? 0;

async function collect() {
  if (!global.gc) return;
  for (let i = 0; i < 3; i++) {
    global.gc();
    await tick();
  }
}

// ---------------------------------------------------------------- server

const handlers = {
  echo: (v) => v,
  bytes: (b) => b,
  // W4: answer with the inode, so the client can check it got its own fd back here.
  fd: (fd) => fstatSync(fd).ino,
};

async function server() {
  const srv = await system.listen(address, { handlers, backlog: 8192 });
  let cpuMark = process.cpuUsage();
  serve({
    mark: () => {
      cpuMark = process.cpuUsage();
      return {};
    },
    cpu: () => ({ cpu_ms: cpuMs(cpuMark) }),
    count: () => ({ connections: srv.connections(), subscribers: srv.subscribers() }),
    fds: async () => {
      await collect();
      return { fds: openFds() };
    },
    memory: async () => {
      await collect();
      const m = process.memoryUsage();
      return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, young: youngResident(), connections: srv.connections(), at: String(now()) };
    },
    // W6: idles, then collects, until the young generation is back to
    // `young` bytes resident (its size before the connections came) or
    // `maxMs` have passed.
    settle: async ({ young, maxMs }) => {
      const t0 = Date.now();
      let idleMs = 6_000; // past V8's 5 s window of allocation rate
      do {
        await new Promise((r) => setTimeout(r, Math.min(idleMs, Math.max(0, maxMs - (Date.now() - t0)))));
        await collect();
        idleMs = 3_000;
      } while (youngResident() > young && Date.now() - t0 < maxMs);
      return { settled: youngResident() <= young, settle_ms: Date.now() - t0 };
    },
    // W5: `events` events to every subscriber, `batch` per turn of the event loop.
    fanout: async ({ events, batch }) => {
      const cpu = process.cpuUsage();
      const t0 = now();
      for (let seq = 0; seq < events; ) {
        const end = Math.min(events, seq + batch);
        for (; seq < end; seq++) srv.publish({ seq, topic: 'tick', ok: true });
        await tick();
      }
      return { t0: String(t0), emitted_ms: Number(now() - t0) / 1e6, cpu_ms: cpuMs(cpu) };
    },
  });
  process.send({ ready: true, address: srv.address });
}

// ---------------------------------------------------------------- client

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

// A system too slow to finish a workload in `capSeconds` of measuring stops
// there (flagged `capped` with the count measured): rates and percentiles
// stay comparable, and one slow peer cannot take the run past its budget.
const capNs = (opts) => BigInt(Math.round((opts.capSeconds ?? 1e6) * 1e9));

// W1: one call at a time.
async function latency(c, opts) {
  const { warmup, iterations } = opts;
  const all = new Float64Array(iterations);
  const total = warmup + iterations;
  const cap = capNs(opts);
  const cpu = process.cpuUsage();
  let measuring = 0n;
  let i = 0;
  for (; i < total; i++) {
    const t0 = now();
    if (i === warmup) measuring = t0;
    else if (i > warmup && t0 - measuring > cap) break;
    const r = await c.echo(payload(i));
    const t1 = now();
    check(r, i);
    if (i >= warmup) all[i - warmup] = Number(t1 - t0) / 1000;
  }
  const cpu_ms = cpuMs(cpu);
  const measured = i - warmup;
  const samples = all.subarray(0, measured).sort();
  let sum = 0;
  for (const s of samples) sum += s;
  return {
    verified: i,
    measured,
    capped: measured < iterations,
    median_us: quantile(samples, 0.5),
    p99_us: quantile(samples, 0.99),
    mean_us: sum / measured,
    client_cpu_us: (cpu_ms * 1000) / i,
  };
}

// Keeps `inflight` calls going until `total` are answered; the clock runs
// from the answer that ends the warm-up to the last answer.
function pipeline(total, warmup, inflight, start, cap = capNs({})) {
  return new Promise((resolve, reject) => {
    let issued = 0;
    let answered = 0;
    let t0 = now();
    const cpu = process.cpuUsage();
    let cpuWarm = null;
    let stop = total;
    const issue = () => {
      const i = issued++;
      start(i).then(
        () => {
          answered++;
          if (answered === warmup) {
            t0 = now();
            cpuWarm = process.cpuUsage();
          } else if (answered > warmup && (answered & 1023) === 0 && stop === total && now() - t0 > cap) {
            stop = issued; // no new calls; the ones in flight finish
          }
          if (issued < stop) issue();
          else if (answered === issued) {
            const seconds = Number(now() - t0) / 1e9;
            resolve({ seconds, measured: answered - warmup, capped: answered < total, client_cpu_ms: cpuMs(cpuWarm ?? cpu) });
          }
        },
        reject,
      );
    };
    for (let k = 0; k < Math.min(inflight, total); k++) issue();
  });
}

async function pipelined(c, opts) {
  const { warmup, calls, inflight } = opts;
  const r = await pipeline(warmup + calls, warmup, inflight, (i) => c.echo(payload(i)).then((v) => check(v, i)), capNs(opts));
  return {
    verified: warmup + r.measured,
    measured: r.measured,
    capped: r.capped,
    calls_per_s: r.measured / r.seconds,
    seconds: r.seconds,
    client_cpu_us: (r.client_cpu_ms * 1000) / r.measured,
  };
}

async function bulk(c, { warmup, calls, inflight, size }) {
  // One buffer per slot in flight, stamped with the call number, reused
  // only after its answer was checked.
  const slots = Array.from({ length: inflight }, () => Buffer.alloc(size, 0x5a));
  const free = [...slots];
  const r = await pipeline(warmup + calls, warmup, inflight, async (i) => {
    const buf = free.pop();
    buf.writeUInt32LE(i, 0);
    buf.writeUInt32LE(i, size - 4);
    const back = await c.bytes(buf);
    if (!Buffer.isBuffer(back) && !(back instanceof Uint8Array)) throw new Error(`call ${i}: not bytes back`);
    if (Buffer.compare(back, buf) !== 0) throw new Error(`call ${i}: ${back.length} bytes back differ from the ${size} sent`);
    free.push(buf);
  });
  return {
    verified: warmup + calls,
    mb_per_s: (r.measured * size) / 1e6 / r.seconds,
    calls_per_s: r.measured / r.seconds,
    seconds: r.seconds,
    client_cpu_us: (r.client_cpu_ms * 1000) / r.measured,
  };
}

async function fds(c, { warmup, calls, inflight, pipe }) {
  const ino = fstatSync(pipe).ino;
  const r = await pipeline(warmup + calls, warmup, inflight, (i) =>
    c.fd(pipe).then((got) => {
      if (got !== ino) throw new Error(`call ${i}: the server saw inode ${got}, sent ${ino}`);
    }),
  );
  return { verified: warmup + calls, fds_per_s: r.measured / r.seconds, seconds: r.seconds, client_cpu_us: (r.client_cpu_ms * 1000) / r.measured };
}

// A full listen backlog (the server accepting slower than clients connect)
// is EAGAIN on a unix socket; afunix's connect() waits it out, node:net's
// does not, so every system gets the same patient retry here.
async function connectPatiently() {
  const deadline = Date.now() + 60_000;
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    try {
      return await system.connect(address);
    } catch (err) {
      if (err?.code !== 'EAGAIN' || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

// Opens `count` connections, at most `parallel` connecting at a time.
async function openMany(count, parallel) {
  const conns = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      conns[i] = await connectPatiently();
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
  return conns;
}

async function client() {
  const w = options.workload;
  if (w === 'W5') return fanoutClient();
  if (w === 'W6') return idleClient();
  const c = await system.connect(address);
  let pipe = -1;
  if (w === 'W4') {
    const { openSync } = await import('node:fs');
    pipe = openSync(options.fifo, 'r+'); // a FIFO opened read-write: a pipe fd that never blocks to open
  }
  const fdsBefore = openFds();
  const run = (name, opts) => {
    if (name === 'W1') return latency(c, opts);
    if (name === 'W2') return pipelined(c, opts);
    if (name === 'W3') return bulk(c, opts);
    if (name === 'W4') return fds(c, { ...opts, pipe });
    return fail(`unknown workload ${name}`);
  };
  let result;
  // --quick runs W1-W3 one after the other on one connection (fewer processes to start).
  if (w === 'W123') {
    result = {};
    for (const [name, opts] of Object.entries(options.sequence)) result[name] = await run(name, opts);
  } else {
    result = await run(w, options);
  }
  if (w === 'W4') {
    await collect();
    result.client_fd_delta = openFds() - fdsBefore;
  }
  process.send({ result }, () => {});
  serve({ close: async () => (await c.close(), {}) });
}

// W5: `connections` subscribers here; each checks it gets every event, in order.
async function fanoutClient() {
  const { connections, events } = options;
  const conns = await openMany(connections, 16);
  let done = 0;
  let tLast = 0n;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  conns.forEach((c, k) => {
    let expected = 0;
    c.subscribe((e) => {
      if (e?.seq !== expected || e.topic !== 'tick' || e.ok !== true) fail(`connection ${k}: event ${JSON.stringify(e)}, expected seq ${expected}`);
      expected++;
      if (expected === events) {
        done++;
        if (done === connections) {
          tLast = now();
          finish();
        }
      }
    });
  });
  // One answered call per connection: its subscription was sent before it.
  await Promise.all(conns.map((c, k) => c.echo(payload(k)).then((r) => check(r, k))));
  serve({
    wait: async () => {
      await finished;
      return { t_end: String(tLast), received: connections * events };
    },
  });
  process.send({ ready: true });
}

// W6: idle connections. Reports when they are all up; checks each with one call when asked.
async function idleClient() {
  const { connections, parallel } = options;
  const t0 = now();
  const conns = await openMany(connections, parallel);
  const t1 = now();
  serve({
    verify: async () => {
      let i = 0;
      const worker = async () => {
        while (i < conns.length) {
          const k = i++;
          check(await conns[k].echo(payload(k)), k);
        }
      };
      await Promise.all(Array.from({ length: 32 }, worker));
      return { verified: conns.length };
    },
  });
  process.send({ ready: true, t_start: String(t0), t_end: String(t1) });
}

if (role === 'server') await server();
else if (role === 'client') await client();
else fail('role must be server or client');
