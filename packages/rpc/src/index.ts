export { type ClientControls, type ClientOptions, type ReconnectOptions, type RpcClient, connect } from './client.js';
export { type CallOptions, type ConnectionStats, RpcConnection } from './connection.js';
export type {
  ClientContext, ClientEventsOf, ClientHandlers, ClientMethodsOf, Contract, EventsOf, Handlers, MethodsOf, Notifier, Remote,
  RemoteMethod, ServerContext, ServerHandlers,
} from './contract.js';
export { DESCRIBE, type MethodDescription, type ServiceDescription } from './describe.js';
export { type ErrorRecord, RemoteAggregateError, RpcCode, RpcError, type RpcErrorOptions } from './errors.js';
export { Fd } from './fd.js';
export { type CallContext, type CallInfo, type Interceptor } from './incoming.js';
export type { PeerPolicy } from './policy.js';
export { DEFAULT_MAX_MESSAGE_SIZE, MAX_EVENT_NAME, MAX_SUBSCRIPTIONS, MIN_MAX_MESSAGE_SIZE, Msg, PROTOCOL_VERSION, STREAM_WINDOW } from './protocol.js';
export { type RpcServerOptions, RpcServer, createServer } from './server.js';
export { CHANNEL_FD, type Helper, type SpawnHelperOptions, serveParent, spawnHelper } from './spawn.js';
export { RpcStream } from './stream.js';
export type { Validator } from './validation.js';
