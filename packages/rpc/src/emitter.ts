// typed-emitter is CommonJS and types-only: under NodeNext its default
// export arrives as `.default`. One alias here keeps that out of the code.
import type { EventEmitter } from 'node:events';
import type TypedEmitterModule from 'typed-emitter';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type EventMap = { [event: string]: (...args: any[]) => void };
export type TypedEmitter<Events extends EventMap> = TypedEmitterModule.default<Events>;

/**
 * Emits an event that came from the peer, with `connection` first when
 * given (a server's clientEvents). EventEmitter throws an 'error' event
 * nobody listens to, which would take the connection down with it: a
 * peer's event named "error" with no listener is dropped instead.
 */
export function emitFromPeer(emitter: EventEmitter, name: string, args: unknown[], connection?: unknown): void {
  if (name === 'error' && emitter.listenerCount('error') === 0) return;
  if (connection === undefined) emitter.emit(name, ...args);
  else emitter.emit(name, connection, ...args);
}
