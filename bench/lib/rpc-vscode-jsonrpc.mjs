// vscode-jsonrpc (the JSON-RPC of VS Code and language servers): its
// Content-Length framed JSON over a node:net unix socket. JSON has no bytes,
// so W3's payload travels as base64, as it would for a user of this library.
import rpc from 'vscode-jsonrpc/node';
import { connectNet, listenNet } from './net-unix.mjs';

const { createMessageConnection, SocketMessageReader, SocketMessageWriter } = rpc;

function open(socket) {
  return createMessageConnection(new SocketMessageReader(socket), new SocketMessageWriter(socket));
}

export const systems = [
  {
    name: 'vscode-jsonrpc',
    label: 'vscode-jsonrpc 10',
    order: 20,
    transport: 'unix',
    na: { W4: 'JSON over a net.Socket: no way to attach fds' },
    async listen(address, { handlers, backlog }) {
      const connections = new Set();
      const subscribers = new Set();
      const server = await listenNet(address, backlog, (socket) => {
        socket.on('error', () => {});
        const conn = open(socket);
        conn.onRequest('echo', (v) => handlers.echo(v));
        conn.onRequest('bytes', ({ b64 }) => ({ b64: handlers.bytes(Buffer.from(b64, 'base64')).toString('base64') }));
        conn.onNotification('subscribe', () => subscribers.add(conn));
        conn.onClose(() => {
          connections.delete(conn);
          subscribers.delete(conn);
        });
        conn.onError(() => {});
        conn.listen();
        connections.add(conn);
      });
      return {
        address,
        connections: () => connections.size,
        subscribers: () => subscribers.size,
        publish(value) {
          for (const conn of subscribers) void conn.sendNotification('tick', value);
        },
        close: () => server.close(),
      };
    },
    async connect(address) {
      const socket = await connectNet(address);
      socket.on('error', () => {});
      const conn = open(socket);
      conn.onError(() => {});
      conn.listen();
      return {
        echo: (v) => conn.sendRequest('echo', v),
        bytes: async (b) => Buffer.from((await conn.sendRequest('bytes', { b64: b.toString('base64') })).b64, 'base64'),
        subscribe(cb) {
          conn.onNotification('tick', cb);
          void conn.sendNotification('subscribe');
        },
        close: () => {
          conn.dispose();
          socket.destroy();
        },
      };
    },
  },
];
