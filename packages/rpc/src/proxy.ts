// The typed remote: `remote.add(1, 2)` becomes conn.call('add', [1, 2]).
import type { CallOptions, RpcConnection } from './connection.js';

export function remoteProxy(conn: () => RpcConnection, options?: CallOptions): unknown {
  const methods = new Map<string, (...args: unknown[]) => unknown>();
  return new Proxy(Object.create(null), {
    get(_target, prop) {
      // Not a thenable: `await remote` must not try to call remote.then().
      if (typeof prop !== 'string' || prop === 'then') return undefined;
      let fn = methods.get(prop);
      if (!fn) {
        // Calls always answer with a promise (or a stream): even "not
        // connected" arrives as a rejection, never as a synchronous throw.
        fn = (...args: unknown[]) => {
          try {
            return conn().call(prop, args, options);
          } catch (err) {
            return Promise.reject(err);
          }
        };
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
