// The typed remote: `remote.add(1, 2)` becomes conn.call('add', [1, 2]).
import type { CallOptions, RpcConnection } from './connection.js';
import { closeTransfers } from './fd.js';
import { failedStream } from './stream.js';

/** What a remote calls through. */
export interface Callee {
  /** The connection; throws (CONNECTION_CLOSED) while there is none. */
  current(): RpcConnection;
  /** Whether `method` answers with a stream, as the peer's last hello said. */
  streams(method: string): boolean;
}

/**
 * Calls `method` through `callee`. Calls always answer with a promise, or
 * a stream for a stream method: even "not connected" arrives as a
 * rejection (or a stream that fails), never as a synchronous throw.
 */
export function callRemote(callee: Callee, method: string, args: unknown[], options?: CallOptions): unknown {
  try {
    return callee.current().call(method, args, options);
  } catch (err) {
    closeTransfers(args); // given away with a call that never leaves
    return callee.streams(method) ? failedStream(err as Error) : Promise.reject(err);
  }
}

/**
 * Runs `send` (a notification, an event) with `args`; if it throws, or
 * returns false (nothing sent), the Fd.transfer() fds in them are closed:
 * they were given away, and nobody else will close them.
 */
export function sendingArgs(args: unknown[], send: () => unknown): void {
  let sent: unknown;
  try {
    sent = send();
  } catch (err) {
    closeTransfers(args);
    throw err;
  }
  if (sent === false) closeTransfers(args);
}

// Names the language looks up on any object: JSON.stringify() asks for
// toJSON, String() and template literals for toString and valueOf. Read as
// remote methods they made hidden calls, whose rejections (no such method)
// took the process down. A method of one of these names is still reached
// through $connection.call().
const NOT_METHODS: Record<string, unknown> = {
  then: undefined, // `await remote` must not call remote.then()
  toJSON: undefined,
  valueOf: Object.prototype.valueOf, // the proxy itself, as for any object
  toString: () => '[object RpcRemote]',
  toLocaleString: () => '[object RpcRemote]',
};

export function remoteProxy(callee: Callee, options?: CallOptions): unknown {
  const methods = new Map<string, (...args: unknown[]) => unknown>();
  return new Proxy(Object.create(null), {
    get(_target, prop) {
      if (typeof prop !== 'string') return undefined;
      if (Object.hasOwn(NOT_METHODS, prop)) return NOT_METHODS[prop];
      let fn = methods.get(prop);
      if (!fn) {
        fn = (...args: unknown[]) => callRemote(callee, prop, args, options);
        methods.set(prop, fn);
      }
      return fn;
    },
  });
}

/** Fire-and-forget calls: `notifier.log('x')` sends and returns nothing. */
export function notifyProxy(conn: () => RpcConnection): unknown {
  return new Proxy(Object.create(null), {
    get(_target, prop) {
      if (typeof prop !== 'string') return undefined;
      if (Object.hasOwn(NOT_METHODS, prop)) return NOT_METHODS[prop];
      return (...args: unknown[]) => sendingArgs(args, () => conn().notify(prop, args));
    },
  });
}
