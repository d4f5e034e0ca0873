// One side of a transport benchmark, run as its own process by
// suites/transport.mjs (possibly under `taskset`). It talks to the parent
// over the IPC channel: the server says {ready}, the client sends {result}.
//
//   node transport-peer.mjs server <system> <workload> <path>
//   node transport-peer.mjs client <system> <workload> <path> <json options>
//
// system:   ours-stream | ours-seqpacket | net
// workload: echo | bulk
//
// Both systems are driven through the same Duplex API ('data', write(),
// 'drain', end()), so the comparison is what an application would see.
import net from 'node:net';
import { connect, createServer, features, loadError } from '@afunix/transport';

const [role, system, workload, path, optionsJson] = process.argv.slice(2);
const options = optionsJson ? JSON.parse(optionsJson) : {};

function fail(message) {
  console.error(`transport-peer ${role} ${system} ${workload}: ${message}`);
  process.exit(2);
}

// Without the addon the package quietly serves streams through net: that
// would be net against net, so refuse rather than print a meaningless ratio.
if (system !== 'net' && (loadError || !features.native)) {
  fail(`the native addon is not loaded (${loadError?.message ?? 'features.native is false'}); build it first`);
}

const ECHO_SIZE = 64;

function cpuMs(since) {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
}

// ---------------------------------------------------------------- server

function serveEcho(socket) {
  socket.on('data', (d) => socket.write(d));
  socket.on('end', () => socket.end());
  socket.on('error', (err) => fail(`server socket: ${err.message}`));
}

function serveBulk(socket) {
  let count = 0;
  socket.on('data', (d) => {
    count += d.length;
  });
  socket.on('end', () => socket.end(`${count}\n`));
  socket.on('error', (err) => fail(`server socket: ${err.message}`));
}

async function server() {
  const serve = workload === 'echo' ? serveEcho : serveBulk;
  // The server's CPU time for the whole connection goes to the parent, so
  // that a figure can be split into sender and receiver cost.
  const onConnection = (socket) => {
    const start = process.cpuUsage();
    let reported = false;
    const report = () => {
      if (reported) return;
      reported = true;
      process.send({ cpu_ms: cpuMs(start) });
    };
    socket.once('end', () => setImmediate(report));
    socket.once('close', report);
    serve(socket);
  };
  let srv;
  if (system === 'net') {
    srv = net.createServer({ allowHalfOpen: true }, onConnection);
    await new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(path, resolve);
    });
  } else {
    const type = system === 'ours-seqpacket' ? 'seqpacket' : 'stream';
    srv = createServer({ type }, onConnection);
    await srv.listen(path);
  }
  // One connection per run: stop listening once it arrived, and exit when
  // the parent says so (or goes away).
  srv.once('connection', () => srv.close());
  process.on('message', (m) => {
    if (m === 'exit') process.exit(0);
  });
  process.on('disconnect', () => process.exit(0));
  process.send({ ready: true });
}

// ---------------------------------------------------------------- client

async function open() {
  if (system === 'net') {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path, allowHalfOpen: true }, () => resolve(s));
      s.once('error', reject);
    });
  }
  return connect(path, { type: system === 'ours-seqpacket' ? 'seqpacket' : 'stream' });
}

function quantile(sorted, q) {
  // Nearest-rank on the sorted sample.
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

async function echoClient(socket) {
  const { warmup, iterations } = options;
  const total = warmup + iterations;
  const samples = new Float64Array(iterations);
  const expected = Buffer.alloc(ECHO_SIZE);
  const received = Buffer.alloc(ECHO_SIZE);
  let have = 0;
  let i = 0;
  let t0 = 0n;

  return new Promise((resolve, reject) => {
    const send = () => {
      // A different payload every round trip, so a stale or misrouted reply
      // cannot pass the check.
      expected.fill(i & 0xff);
      expected.writeUInt32LE(i, 0);
      expected.writeUInt32LE(total - i, ECHO_SIZE - 4);
      have = 0;
      t0 = process.hrtime.bigint();
      // write() copies nothing: hand it a fresh copy since `expected` is reused.
      socket.write(Buffer.from(expected));
    };
    socket.on('data', (d) => {
      if (have + d.length > ECHO_SIZE) return reject(new Error(`round trip ${i}: ${have + d.length} bytes back for ${ECHO_SIZE} sent`));
      d.copy(received, have);
      have += d.length;
      if (have < ECHO_SIZE) return;
      const t1 = process.hrtime.bigint();
      if (!received.equals(expected)) return reject(new Error(`round trip ${i}: echoed bytes differ from those sent`));
      if (i >= warmup) samples[i - warmup] = Number(t1 - t0) / 1000;
      i++;
      if (i < total) send();
      else {
        samples.sort();
        let sum = 0;
        for (const s of samples) sum += s;
        resolve({
          verified: total,
          median_us: quantile(samples, 0.5),
          p99_us: quantile(samples, 0.99),
          mean_us: sum / iterations,
          min_us: samples[0],
          max_us: samples[iterations - 1],
          iterations,
          warmup,
        });
      }
    });
    socket.once('error', reject);
    socket.once('end', () => {
      if (i < total) reject(new Error(`connection ended after ${i} of ${total} round trips`));
    });
    send();
  });
}

async function bulkClient(socket) {
  const { bytes, chunk } = options;
  const buf = Buffer.alloc(chunk, 0x5a);
  return new Promise((resolve, reject) => {
    let reply = '';
    let sent = 0;
    let t0 = 0n;
    socket.setEncoding('utf8');
    socket.on('data', (s) => {
      reply += s;
    });
    socket.once('error', reject);
    socket.once('end', () => {
      const t1 = process.hrtime.bigint();
      const seconds = Number(t1 - t0) / 1e9;
      const counted = Number(reply.trim());
      if (counted !== bytes) return reject(new Error(`receiver counted ${reply.trim() || 'nothing'} bytes, sent ${bytes}`));
      resolve({ verified: counted, bytes, chunk, seconds, mb_per_s: bytes / 1e6 / seconds });
    });
    const pump = () => {
      while (sent < bytes) {
        const n = Math.min(chunk, bytes - sent);
        sent += n;
        if (!socket.write(n === chunk ? buf : buf.subarray(0, n))) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end();
    };
    t0 = process.hrtime.bigint();
    pump();
  });
}

async function client() {
  const socket = await open();
  const start = process.cpuUsage();
  let result;
  try {
    result = workload === 'echo' ? await echoClient(socket) : await bulkClient(socket);
  } catch (err) {
    fail(err.message);
  }
  result.cpu_ms = cpuMs(start);
  socket.destroy();
  process.send({ result }, () => process.exit(0));
}

if (role === 'server') await server();
else if (role === 'client') await client();
else fail('role must be server or client');
