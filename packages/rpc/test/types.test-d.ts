// Compile-time guarantees: checked by `vitest --typecheck` (enabled in the
// root config). A wrong method name or argument type must not compile.
import { describe, expectTypeOf, it } from 'vitest';
import type { Credentials } from '@afunix/transport';
import type { CallContext, Fd, RpcClient, RpcConnection, RpcServer, RpcStream, ServerHandlers } from '../src/index.js';

interface Calc {
  methods: {
    add(a: number, b: number): number;
    greet(name: string): Promise<string>;
    count(to: number): AsyncIterable<number>;
    open(path: string): Fd;
    explode(): never;
  };
  events: { tick(n: number): void };
  clientMethods: { confirm(question: string): boolean };
  clientEvents: { progress(done: number, total: number): void };
}

declare const client: RpcClient<Calc>;
declare const server: RpcServer<Calc>;

interface Serializable {
  methods: { toJSON(): string; valueOf(): number; then(): void; size(): number };
}

describe('client types', () => {
  it('infers arguments and results', () => {
    expectTypeOf(client.add).parameters.toEqualTypeOf<[a: number, b: number]>();
    expectTypeOf(client.add(1, 2)).toEqualTypeOf<Promise<number>>();
    expectTypeOf(client.greet('x')).toEqualTypeOf<Promise<string>>();
    expectTypeOf(client.count(3)).toEqualTypeOf<RpcStream<number>>();
    expectTypeOf(client.open('/x')).toEqualTypeOf<Promise<Fd>>();
    expectTypeOf(client.explode()).toEqualTypeOf<Promise<never>>();
  });

  it('rejects wrong names and wrong arguments', () => {
    // @ts-expect-error: no such method
    void client.subtract(1, 2);
    // @ts-expect-error: wrong argument type
    void client.add('1', 2);
    // @ts-expect-error: missing argument
    void client.add(1);
    // @ts-expect-error: clientMethods are not callable on the server proxy
    void client.confirm('sure?');
  });

  it('types events both ways', () => {
    client.$events.on('tick', (n) => expectTypeOf(n).toEqualTypeOf<number>());
    // @ts-expect-error: unknown event
    client.$events.on('tock', () => {});
    client.$emit('progress', 1, 2);
    // @ts-expect-error: wrong event arguments
    client.$emit('progress', '1');
  });

  it('$unref() and $ref() give back the typed client', () => {
    expectTypeOf(client.$unref()).toEqualTypeOf<RpcClient<Calc>>();
    expectTypeOf(client.$unref().$ref().add(1, 2)).toEqualTypeOf<Promise<number>>();
  });

  it('keeps the $with proxy typed', () => {
    expectTypeOf(client.$with({ timeout: 10 }).add(1, 2)).toEqualTypeOf<Promise<number>>();
    expectTypeOf(client.$notify.add).returns.toEqualTypeOf<void>();
  });

  it('leaves out the names the proxy answers itself', () => {
    const s = {} as RpcClient<Serializable>;
    expectTypeOf(s.size()).toEqualTypeOf<Promise<number>>();
    // @ts-expect-error: JSON.stringify(client) must not call the server
    void s.toJSON();
    // @ts-expect-error: `await client` must not either
    void s.then();
    // @ts-expect-error: nor may a notification reach one
    s.$notify.toJSON();
  });
});

describe('server handler types', () => {
  it('gives handlers the context, then the same arguments', () => {
    const handlers: ServerHandlers<Calc> = {
      add: (ctx, a, b) => {
        expectTypeOf(a).toEqualTypeOf<number>();
        expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>();
        expectTypeOf(ctx.remote.confirm).returns.toEqualTypeOf<Promise<boolean>>();
        return a + b;
      },
      greet: async (_ctx, name) => `hi ${name}`,
      async *count(_ctx, to) {
        for (let i = 0; i < to; i++) yield i;
      },
      open: () => ({}) as Fd,
      explode: () => {
        throw new Error('always');
      },
    };
    expectTypeOf(handlers.add).parameter(0).toEqualTypeOf<CallContext<{ readonly confirm: (question: string) => Promise<boolean> }>>();
  });

  it('rejects handlers of the wrong shape', () => {
    const bad: ServerHandlers<Calc> = {
      // @ts-expect-error: returns a string where the contract says number
      add: () => 'three',
      greet: async () => 'x',
      async *count() {
        yield 1;
      },
      open: () => ({}) as Fd,
      explode: () => {
        throw new Error('always');
      },
    };
    void bad;
  });

  it('keeps an optional parameter optional, the context in front of it', () => {
    const handlers: ServerHandlers<{ methods: { list(prefix?: string): string[] } }> = {
      list: (ctx, prefix) => {
        expectTypeOf(ctx.peer).toEqualTypeOf<Credentials | null>();
        expectTypeOf(prefix).toEqualTypeOf<string | undefined>();
        return [prefix ?? ''];
      },
    };
    void handlers;
  });

  it('gives a client event listener the sending connection, then the arguments', () => {
    server.clientEvents.on('progress', (from, done, total) => {
      expectTypeOf(from).toEqualTypeOf<RpcConnection>();
      expectTypeOf(done).toEqualTypeOf<number>();
      expectTypeOf(total).toEqualTypeOf<number>();
    });
  });
});
