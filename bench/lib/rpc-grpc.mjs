// @grpc/grpc-js over a unix socket (unix:/path): HTTP/2, with msgpackr as
// the message serializer (the same codec as the baseline and afunix, so the
// comparison is about the RPC and transport layers; protobuf would need a
// schema per message). Events are a server stream per subscriber.
import grpc from '@grpc/grpc-js';
import { pack, unpack } from 'msgpackr';

const codec = { requestSerialize: pack, requestDeserialize: unpack, responseSerialize: pack, responseDeserialize: unpack };
const service = {
  echo: { path: '/bench.Bench/Echo', requestStream: false, responseStream: false, ...codec },
  bytes: { path: '/bench.Bench/Bytes', requestStream: false, responseStream: false, ...codec },
  subscribe: { path: '/bench.Bench/Subscribe', requestStream: false, responseStream: true, ...codec },
};
const Client = grpc.makeGenericClientConstructor(service, 'Bench');

export const systems = [
  {
    name: 'grpc',
    label: '@grpc/grpc-js 1.14 (unix:)',
    order: 40,
    transport: 'unix',
    na: { W4: 'HTTP/2 over a net.Socket: no way to attach fds' },
    async listen(address, { handlers }) {
      const server = new grpc.Server();
      const subscribers = new Set();
      server.addService(service, {
        echo: (call, cb) => cb(null, handlers.echo(call.request)),
        bytes: (call, cb) => cb(null, handlers.bytes(call.request)),
        subscribe(call) {
          subscribers.add(call);
          const drop = () => subscribers.delete(call);
          call.on('cancelled', drop);
          call.on('error', drop);
        },
      });
      await new Promise((resolve, reject) =>
        server.bindAsync(`unix:${address}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
      );
      return {
        address,
        // grpc-js does not count connections publicly; its HTTP/2 sessions are them.
        connections: () => server.sessions?.size ?? NaN,
        subscribers: () => subscribers.size,
        publish(value) {
          for (const call of subscribers) call.write(value);
        },
        close: () => server.forceShutdown(),
      };
    },
    async connect(address) {
      // A local subchannel pool: a new connection per client, as separate processes would have.
      const client = new Client(`unix:${address}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
      await new Promise((resolve, reject) => client.waitForReady(Date.now() + 30_000, (err) => (err ? reject(err) : resolve())));
      const call = (method, v) => new Promise((resolve, reject) => client[method](v, (err, res) => (err ? reject(err) : resolve(res))));
      let stream = null;
      return {
        echo: (v) => call('echo', v),
        bytes: (b) => call('bytes', b),
        subscribe(cb) {
          stream = client.subscribe({});
          stream.on('data', cb);
          stream.on('error', () => {});
        },
        close: () => {
          stream?.cancel();
          client.close();
        },
      };
    },
  },
];
