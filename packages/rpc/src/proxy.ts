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
        fn = (...args: unknown[]) => conn().call(prop, args, options);
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
