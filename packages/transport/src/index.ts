export { SUN_PATH_SIZE, decodeAddress, encodeAddress, isAbstract } from './address.js';
export { type ConnectOptions, type ConnectionType, connect, fromFd, socketPair, socketPairFds } from './connect.js';
export { type DatagramInfo, type DatagramOptions, type SendOptions, UnixDatagram, createDatagram } from './datagram.js';
export { type AfunixError, afunixError, systemError } from './errors.js';
export { type Features, features } from './features.js';
export { type FdLike, MAX_FDS, ReceivedFds } from './fds.js';
export { loadError, type SocketType } from './native.js';
export { type ServerOptions, UnixServer, createServer } from './server.js';
export { type Credentials, type Receiver, UnixSocket, type UnixSocketOptions } from './socket.js';
