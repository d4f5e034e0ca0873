// The typed remote: `remote.add(1, 2)` becomes conn.call('add', [1, 2]).
import type { CallOptions, RpcConnection } from './connection.js';
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
    return callee.streams(method) ? failedStream(err as Error) : Promise.reject(err);
  }
}

export function remoteProxy(callee: Callee, options?: CallOptions): unknown {
  const methods = new Map<string, (...args: unknown[]) => unknown>();
  return new Proxy(Object.create(null), {
    get(_target, prop) {
      // Not a thenable: `await remote` must not try to call remote.then().
      if (typeof prop !== 'string' || prop === 'then') return undefined;
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
      if (typeof prop !== 'string' || prop === 'then') return undefined;
      return (...args: unknown[]) => conn().notify(prop, args);
    },
  });
}
