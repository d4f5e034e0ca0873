// The typed remote: `remote.add(1, 2)` becomes conn.call('add', [1, 2]).
import type { CallOptions, RpcConnection } from './connection.js';

/**
 * Calls `method` on the connection `conn()` returns. Calls always answer
 * with a promise (or a stream): even "not connected" arrives as a
 * rejection, never as a synchronous throw.
 */
export function callRemote(conn: () => RpcConnection, method: string, args: unknown[], options?: CallOptions): unknown {
  try {
    return conn().call(method, args, options);
  } catch (err) {
    return Promise.reject(err);
  }
}

export function remoteProxy(conn: () => RpcConnection, options?: CallOptions): unknown {
  const methods = new Map<string, (...args: unknown[]) => unknown>();
  return new Proxy(Object.create(null), {
    get(_target, prop) {
      // Not a thenable: `await remote` must not try to call remote.then().
      if (typeof prop !== 'string' || prop === 'then') return undefined;
      let fn = methods.get(prop);
      if (!fn) {
        fn = (...args: unknown[]) => callRemote(conn, prop, args, options);
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
