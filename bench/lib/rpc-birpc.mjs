// birpc 4 over a node:net unix socket: birpc brings the calls, the user
// brings the channel. Here that is the baseline's length-prefixed frames
// with msgpackr as birpc's serializer. Events: the server calls the
// client's `tick` as an event (no answer).
import { createBirpc } from 'birpc';
import { pack, unpack } from 'msgpackr';
import { connectNet, listenNet } from './net-unix.mjs';
import { readFrames, sendFrame } from './rpc-baseline.mjs';

function channel(socket) {
  return {
    post: (data) => void sendFrame(socket, data),
    on: (fn) => readFrames(socket, fn),
    serialize: pack,
    deserialize: unpack,
  };
}

export const systems = [
  {
    name: 'birpc',
    label: 'birpc 4 + msgpackr',
    order: 50,
    transport: 'unix',
    na: { W4: 'birpc posts serialized messages over a net.Socket: no way to attach fds' },
    async listen(address, { handlers, backlog }) {
      const connections = new Set();
      const subscribers = new Set();
      const server = await listenNet(address, backlog, (socket) => {
        socket.on('error', () => {});
        const rpc = createBirpc(
          {
            echo: (v) => handlers.echo(v),
            bytes: (b) => handlers.bytes(b),
            subscribe: () => void subscribers.add(rpc),
          },
          { ...channel(socket), eventNames: ['tick'] },
        );
        connections.add(rpc);
        socket.on('close', () => {
          connections.delete(rpc);
          subscribers.delete(rpc);
          rpc.$close();
        });
      });
      return {
        address,
        connections: () => connections.size,
        subscribers: () => subscribers.size,
        publish(value) {
          for (const rpc of subscribers) void rpc.tick.asEvent(value);
        },
        close: () => server.close(),
      };
    },
    async connect(address) {
      const socket = await connectNet(address);
      socket.on('error', () => {});
      let onTick = null;
      const rpc = createBirpc({ tick: (v) => onTick?.(v) }, channel(socket));
      return {
        echo: (v) => rpc.echo(v),
        bytes: (b) => rpc.bytes(b),
        subscribe(cb) {
          onTick = cb;
          void rpc.subscribe();
        },
        close: () => {
          rpc.$close();
          socket.destroy();
        },
      };
    },
  },
];
