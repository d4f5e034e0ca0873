// node:net on a unix socket path, as the peers' adapters use it: listening
// and dialing resolve once ready and reject on the first error.
import net from 'node:net';

export function listenNet(address, backlog, onSocket) {
  const server = net.createServer(onSocket);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path: address, backlog }, () => resolve(server));
  });
}

export function connectNet(address) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(address, () => resolve(socket));
    socket.once('error', reject);
  });
}
