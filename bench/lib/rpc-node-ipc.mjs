// node-ipc 9.2.1 (pinned: 9.2.2, 10.1.1-10.1.3 and 11.x carried malicious
// code; 14.x needs Node 22). It has events, not calls, so the adapter adds
// what every user of it writes: an id per request and a map of pending
// answers. Its messages are JSON with a '\f' delimiter, so W3's payload is
// base64.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const nodeIpc = require('node-ipc');

function instance(id) {
  const ipc = new nodeIpc.IPC();
  ipc.config.id = id;
  ipc.config.silent = true;
  ipc.config.maxConnections = 1_000_000;
  // The driver retries a refused connect (EAGAIN on a full backlog) itself;
  // node-ipc's own retry would leave a second connection behind.
  ipc.config.retry = 50;
  ipc.config.maxRetries = 0;
  ipc.config.stopRetrying = true;
  return ipc;
}

let clientIpc = null;
let clientSeq = 0;

export const systems = [
  {
    name: 'node-ipc',
    label: 'node-ipc 9.2.1',
    order: 30,
    transport: 'unix',
    na: { W4: 'JSON messages over a net.Socket: no way to attach fds' },
    async listen(address, { handlers }) {
      const ipc = instance('bench');
      const subscribers = new Set();
      let connections = 0;
      await new Promise((resolve) => {
        ipc.serve(address, resolve);
        ipc.server.start();
      });
      const server = ipc.server;
      server.on('connect', () => connections++);
      server.on('socket.disconnected', (socket) => {
        connections--;
        subscribers.delete(socket);
      });
      server.on('error', () => {});
      server.on('echo', ({ id, v }, socket) => server.emit(socket, 'echo', { id, v: handlers.echo(v) }));
      server.on('bytes', ({ id, v }, socket) => server.emit(socket, 'bytes', { id, v: handlers.bytes(Buffer.from(v, 'base64')).toString('base64') }));
      server.on('subscribe', (_data, socket) => subscribers.add(socket));
      return {
        address,
        connections: () => connections,
        subscribers: () => subscribers.size,
        publish(value) {
          for (const socket of subscribers) server.emit(socket, 'tick', value);
        },
        close: () => server.stop(),
      };
    },
    async connect(address) {
      // One IPC instance per process, one named connection per connect().
      clientIpc ??= instance(`client-${process.pid}`);
      const ipc = clientIpc;
      const id = `c${clientSeq++}`;
      const conn = await new Promise((resolve, reject) => {
        ipc.connectTo(id, address, () => {
          const c = ipc.of[id];
          c.on('connect', () => resolve(c));
          c.on('error', (err) => {
            ipc.disconnect(id);
            reject(err);
          });
        });
      });
      const pending = new Map();
      let nextId = 1;
      const settle = ({ id: callId, v }) => {
        const p = pending.get(callId);
        if (!p) return;
        pending.delete(callId);
        p(v);
      };
      conn.on('echo', settle);
      conn.on('bytes', settle);
      const call = (method, v) =>
        new Promise((resolve) => {
          const callId = nextId++;
          pending.set(callId, resolve);
          conn.emit(method, { id: callId, v });
        });
      return {
        echo: (v) => call('echo', v),
        bytes: async (b) => Buffer.from(await call('bytes', b.toString('base64')), 'base64'),
        subscribe(cb) {
          conn.on('tick', cb);
          conn.emit('subscribe', {});
        },
        close: () => ipc.disconnect(id),
      };
    },
  },
];
