// The two sides of the framing socket benchmark, each its own process,
// started once per run by suites/framing.mjs and driven over IPC.
//
//   node framing-peer.mjs server <dir>   listens on <dir>/<mode>.sock for every mode;
//                                        per connection, counts what arrives from the
//                                        first frame to end of stream: {result}
//   node framing-peer.mjs client <dir>   on {run: {mode, bytes, seconds}}, connects,
//                                        sends for that long honouring backpressure,
//                                        ends, and answers {sent}
//
// mode: framing-stream | framing-seqpacket | raw-seqpacket
//   raw-seqpacket is a bare seqpacket UnixSocket (one write, one message;
//   read through setReceiver, the path the framing layer itself uses), so
//   the difference to framing-seqpacket is what framing costs.
import { join } from 'node:path';
import { connect, createServer } from '../../packages/transport/dist/index.js';
import { FramedChannel } from '../../packages/framing/dist/index.js';

export const MODES = ['framing-stream', 'framing-seqpacket', 'raw-seqpacket'];
const [role, dir] = process.argv.slice(2);
const MiB = 1024 * 1024;

// Room for a 1 MiB frame in one packet: seqpacket messages are bounded by
// the receiver's buffer and the sender's SO_SNDBUF.
function socketOptions(mode) {
  return { type: mode === 'framing-stream' ? 'stream' : 'seqpacket', maxMessageSize: 2 * MiB, sendBufferSize: 4 * MiB };
}

function fail(message) {
  console.error(`framing-peer ${role}: ${message}`);
  process.exit(2);
}

function now() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function cpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

// ---------------------------------------------------------------- server

function countFrames(mode, socket) {
  let frames = 0;
  let bytes = 0;
  let t0 = 0;
  let cpu0 = 0;
  const onPayload = (payload) => {
    if (frames === 0) {
      t0 = now();
      cpu0 = cpuSeconds();
    }
    frames++;
    bytes += payload.length;
  };
  const done = () => process.send({ result: { mode, frames, bytes, seconds: now() - t0, cpu: cpuSeconds() - cpu0 } });
  if (mode === 'raw-seqpacket') {
    socket.setReceiver(onPayload);
    socket.on('end', () => {
      done();
      socket.end();
    });
    socket.on('error', (err) => fail(`${mode} socket: ${err.message}`));
    return;
  }
  const channel = new FramedChannel(socket);
  channel.onFrame = onPayload;
  channel.on('end', () => {
    done();
    channel.end();
  });
  channel.on('error', (err) => fail(`${mode} channel: ${err.code} ${err.message}`));
}

async function server() {
  for (const mode of MODES) {
    const srv = createServer(socketOptions(mode), (socket) => countFrames(mode, socket));
    await srv.listen(join(dir, `${mode}.sock`));
  }
  process.send({ ready: true });
}

// ---------------------------------------------------------------- client

function sender(mode, socket) {
  if (mode === 'raw-seqpacket') {
    socket.on('error', (err) => fail(`${mode} socket: ${err.message}`));
    socket.resume(); // to see the server's end of stream
    return { send: (p) => socket.write(p), drain: (next) => socket.once('drain', next), end: () => socket.end(), closed: socket };
  }
  const channel = new FramedChannel(socket);
  channel.on('error', (err) => fail(`${mode} channel: ${err.code} ${err.message}`));
  return { send: (p) => channel.send(p), drain: (next) => channel.once('drain', next), end: () => channel.end(), closed: channel };
}

async function run({ mode, bytes, seconds }) {
  const socket = await connect(join(dir, `${mode}.sock`), socketOptions(mode));
  const payload = Buffer.alloc(bytes, 0x5a);
  const s = sender(mode, socket);
  const cpu0 = cpuSeconds();
  const deadline = now() + seconds;
  let sent = 0;
  await new Promise((resolve) => {
    const pump = () => {
      for (;;) {
        if (now() >= deadline) return resolve();
        for (let i = 0; i < 64; i++) {
          sent++;
          if (!s.send(payload)) return s.drain(pump);
        }
      }
    };
    pump();
  });
  s.end();
  const cpu = cpuSeconds() - cpu0;
  // The server ends its side once it has counted everything.
  await new Promise((resolve) => s.closed.once('close', resolve));
  process.send({ sent, cpu });
}

function client() {
  process.on('message', (m) => {
    if (m.run) run(m.run).catch((err) => fail(err.stack ?? String(err)));
  });
  process.send({ ready: true });
}

if (role === 'server') await server();
else if (role === 'client') client();
else fail('role must be server or client');
process.on('disconnect', () => process.exit(0));
