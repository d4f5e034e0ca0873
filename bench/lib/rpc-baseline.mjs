// The hand-written baseline: what a careful user writes instead of an RPC
// library. node:net on the same unix socket, each message a 4-byte
// big-endian length and one msgpackr value; partial reads are assembled
// without re-concatenating on every chunk, one write() per message, a Map
// of pending calls. Messages: [1, id, method, arg] request, [2, id, value]
// result, [3, id, message] error, [4, name, value] event, [5, name]
// subscribe.
//
// The framing helpers are exported: the birpc adapter puts birpc on the
// same frames, as a user of birpc over a socket would have to.
import { pack, unpack } from 'msgpackr';
import { connectNet, listenNet } from './net-unix.mjs';

/** One frame: length prefix and body in a single buffer, a single write(). */
export function sendFrame(socket, body) {
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  frame.set(body, 4);
  return socket.write(frame);
}

/** Calls onBody(Buffer) for every whole frame; a frame split across reads is joined once. */
export function readFrames(socket, onBody) {
  const parts = [];
  let held = 0;
  let wanted = 0; // bytes needed before the held parts are worth joining
  socket.on('data', (chunk) => {
    if (held > 0) {
      parts.push(chunk);
      held += chunk.length;
      if (held < wanted) return;
      chunk = Buffer.concat(parts, held);
      parts.length = 0;
      held = 0;
    }
    let off = 0;
    while (chunk.length - off >= 4) {
      const len = chunk.readUInt32BE(off);
      if (chunk.length - off - 4 < len) break;
      onBody(chunk.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    if (off < chunk.length) {
      const rest = chunk.subarray(off);
      parts.push(rest);
      held = rest.length;
      wanted = rest.length >= 4 ? 4 + rest.readUInt32BE(0) : 4;
    }
  });
}

export const systems = [
  {
    name: 'baseline',
    label: 'hand-written net+msgpackr',
    order: 10,
    transport: 'unix',
    na: { W4: "node:net has no API for SCM_RIGHTS: fds cannot travel" },
    async listen(address, { handlers, backlog }) {
      const sockets = new Set();
      const subscribers = new Set();
      const server = await listenNet(address, backlog, (socket) => {
        sockets.add(socket);
        socket.on('close', () => {
          sockets.delete(socket);
          subscribers.delete(socket);
        });
        socket.on('error', () => {});
        readFrames(socket, (body) => {
          const m = unpack(body);
          if (m[0] === 5) return void subscribers.add(socket);
          let reply;
          try {
            reply = [2, m[1], handlers[m[2]](m[3])];
          } catch (err) {
            reply = [3, m[1], String(err?.message ?? err)];
          }
          sendFrame(socket, pack(reply));
        });
      });
      return {
        address,
        connections: () => sockets.size,
        subscribers: () => subscribers.size,
        publish(value) {
          const body = pack([4, 'tick', value]);
          for (const socket of subscribers) sendFrame(socket, body);
        },
        close: () => server.close(),
      };
    },
    async connect(address) {
      const socket = await connectNet(address);
      const pending = new Map();
      let nextId = 1;
      let onTick = null;
      readFrames(socket, (body) => {
        const m = unpack(body);
        if (m[0] === 4) return onTick?.(m[2]);
        const p = pending.get(m[1]);
        if (!p) return;
        pending.delete(m[1]);
        if (m[0] === 2) p.resolve(m[2]);
        else p.reject(new Error(m[2]));
      });
      socket.on('close', () => {
        for (const p of pending.values()) p.reject(new Error('connection closed'));
        pending.clear();
      });
      const call = (method, arg) =>
        new Promise((resolve, reject) => {
          const id = nextId++;
          pending.set(id, { resolve, reject });
          sendFrame(socket, pack([1, id, method, arg]));
        });
      return {
        echo: (v) => call('echo', v),
        bytes: (b) => call('bytes', b),
        subscribe(cb) {
          onTick = cb;
          sendFrame(socket, pack([5, 'tick']));
        },
        close: () => socket.destroy(),
      };
    },
  },
];
