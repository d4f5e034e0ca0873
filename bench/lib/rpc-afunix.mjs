// afunix rpc (@afunix/rpc, as built in packages/rpc/dist): over a stream
// socket, over a seqpacket socket, and over TCP loopback (a net.Socket
// served as any Duplex) to show what the unix socket buys.
import net from 'node:net';
import { Fd, connect, createServer } from '@afunix/rpc';
import { features, loadError } from '@afunix/transport';

// Without the addon the transport quietly falls back to node:net (or fails):
// refuse, rather than print figures for something else.
function requireNative() {
  if (loadError || !features.native) throw new Error(`the native addon is not loaded (${loadError?.message ?? 'features.native is false'}): build packages/transport first`);
}

function rpcServer(handlers) {
  return createServer({
    service: 'bench',
    handlers: {
      echo: (_ctx, v) => handlers.echo(v),
      bytes: (_ctx, b) => handlers.bytes(b),
      // The Fd is closed by the server once the handler returns.
      fd: (_ctx, fd) => handlers.fd(fd.fd),
      ping: () => true,
    },
  });
}

function api(server, address) {
  return {
    address,
    connections: () => server.connections.size,
    subscribers: () => {
      let n = 0;
      for (const c of server.connections) if (c.isSubscribed('tick')) n++;
      return n;
    },
    publish: (value) => server.publish('tick', value),
    close: () => server.close({ timeout: 100 }),
  };
}

function clientApi(client) {
  return {
    echo: (v) => client.echo(v),
    bytes: (b) => client.bytes(b),
    fd: (fd) => client.fd(Fd.from(fd)),
    subscribe: (cb) => client.$events.on('tick', cb),
    close: () => client.$close(),
  };
}

function unixVariant(name, label, type, order) {
  return {
    name,
    label,
    order,
    transport: 'unix',
    ours: true,
    na: {},
    async listen(address, { handlers, backlog }) {
      requireNative();
      const server = rpcServer(handlers);
      await server.listen(address, { type, backlog });
      return api(server, address);
    },
    async connect(address) {
      return clientApi(await connect(address, { service: 'bench', type }));
    },
  };
}

export const systems = [
  unixVariant('afunix-stream', 'afunix rpc, stream', 'stream', 1),
  unixVariant('afunix-seqpacket', 'afunix rpc, seqpacket', 'seqpacket', 2),
  {
    name: 'afunix-tcp',
    label: 'afunix rpc, TCP loopback',
    order: 3,
    transport: 'tcp',
    ours: true,
    na: { W4: 'TCP cannot carry fds (no SCM_RIGHTS)' },
    async listen(_address, { handlers, backlog }) {
      const server = rpcServer(handlers);
      const listener = net.createServer({ noDelay: true }, (socket) => void server.serve(socket).catch(() => {}));
      await new Promise((resolve, reject) => {
        listener.once('error', reject);
        listener.listen({ host: '127.0.0.1', port: 0, backlog }, resolve);
      });
      const a = api(server, `127.0.0.1:${listener.address().port}`);
      return { ...a, close: () => (listener.close(), server.close({ timeout: 100 })) };
    },
    async connect(address) {
      const [host, port] = address.split(':');
      const socket = await new Promise((resolve, reject) => {
        const s = net.connect({ host, port: Number(port), noDelay: true }, () => resolve(s));
        s.once('error', reject);
      });
      return clientApi(await connect(socket, { service: 'bench' }));
    },
  },
];
