// Contracts are plain TypeScript types. A service declares what it offers:
//
//   interface Calc {
//     methods: { add(a: number, b: number): number; count(to: number): AsyncIterable<number> };
//     events: { tick(n: number): void };            // server -> client
//     clientMethods: { confirm(q: string): boolean }; // the server may call these on the client
//     clientEvents: { progress(p: number): void };    // client -> server
//   }
//
// and both ends are typed from it: no schema language, no code generation.
import type { CallContext } from './incoming.js';
import type { RpcStream } from './stream.js';

export interface Contract {
  methods?: object;
  events?: object;
  clientMethods?: object;
  clientEvents?: object;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyFn = (...args: any[]) => any;
type Section<C, K extends keyof Contract> = C extends { [P in K]: infer T } ? (T extends object ? T : object) : object;

export type MethodsOf<C> = Section<C, 'methods'>;
export type EventsOf<C> = Section<C, 'events'>;
export type ClientMethodsOf<C> = Section<C, 'clientMethods'>;
export type ClientEventsOf<C> = Section<C, 'clientEvents'>;

type Callable<T> = { [K in keyof T as T[K] extends AnyFn ? K : never]: T[K] };

// `any` and `never` (a method that always throws) extend everything, and
// neither is a stream; the tuple wrappers stop conditional distribution.
type IsAny<T> = 0 extends 1 & T ? true : false;
type IsStream<R> = IsAny<R> extends true
  ? false
  : [Awaited<R>] extends [never]
    ? false
    : [Awaited<R>] extends [AsyncIterable<unknown>]
      ? true
      : false;
type StreamItem<R> = Awaited<R> extends AsyncIterable<infer U> ? U : never;

/**
 * How a method looks from the calling side. (A generic method, e.g.
 * `echo<T>(v: T): T`, loses its type parameter here: TypeScript cannot carry
 * generics through mapped conditional types, so it becomes `unknown`.)
 */
export type RemoteMethod<F> = F extends (...args: infer A) => infer R
  ? IsStream<R> extends true
    ? (...args: A) => RpcStream<StreamItem<R>>
    : (...args: A) => Promise<Awaited<R>>
  : never;

// Names the proxies answer themselves (proxy.ts), so that `await`,
// JSON.stringify() and String() of a proxy make no remote call. A contract
// method of one of these names is not on the typed proxy; it is reached
// through `$connection.call()`.
type ProxyOwnName = 'then' | 'toJSON' | 'valueOf' | 'toString' | 'toLocaleString';
type ProxyMethods<T> = { [K in keyof Callable<T> as K extends ProxyOwnName ? never : K]: Callable<T>[K] };

export type Remote<T> = { readonly [K in keyof ProxyMethods<T>]: RemoteMethod<ProxyMethods<T>[K]> };

/** Fire-and-forget versions of the same methods. */
export type Notifier<T> = { readonly [K in keyof ProxyMethods<T>]: ProxyMethods<T>[K] extends (...args: infer A) => unknown ? (...args: A) => void : never };

/**
 * How a method looks to its implementer: the call context, then the
 * arguments. The context comes first so that no argument a caller sends or
 * leaves out can stand in its place (an optional parameter stays optional).
 */
export type HandlerOf<F, Ctx> = F extends (...args: infer A) => infer R
  ? IsStream<R> extends true
    ? (ctx: Ctx, ...args: A) => AsyncIterable<StreamItem<R>>
    : (ctx: Ctx, ...args: A) => Awaited<R> | Promise<Awaited<R>>
  : never;

export type Handlers<T, Ctx> = { [K in keyof Callable<T>]: HandlerOf<Callable<T>[K], Ctx> };

export type ServerContext<C> = CallContext<Remote<ClientMethodsOf<C>>>;
export type ClientContext<C> = CallContext<Remote<MethodsOf<C>>>;

export type ServerHandlers<C> = Handlers<MethodsOf<C>, ServerContext<C>>;
export type ClientHandlers<C> = Handlers<ClientMethodsOf<C>, ClientContext<C>>;

export type EventArgs<E, K extends keyof E> = E[K] extends (...args: infer A) => unknown ? A : never;

/** An event map in the shape typed-emitter wants. */
export type Listeners<E> = { [K in keyof E & string]: (...args: EventArgs<E, K>) => void };

/** Client events as the server receives them: the sending connection first, as a handler's context. */
export type ListenersWith<X, E> = { [K in keyof E & string]: (from: X, ...args: EventArgs<E, K>) => void };
