// An AggregateError crosses a real connection (a socket pair, the server
// in this process) with its errors, in both directions; one that cannot
// travel gets an answer that says why, and the connection carries on.
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { RemoteAggregateError, RpcCode, RpcError, connect, createServer } from '../src/index.js';

interface Gathering {
  methods: {
    failAll(): never;
    failWithCode(): never;
    failSelf(): never;
    failSelfWithCode(): never;
    failMany(n: number): never;
    gather(): AggregateError;
    inspect(err: unknown): { aggregate: boolean; remote: boolean; codes: string[]; nested: boolean };
    add(a: number, b: number): number;
  };
}

function allFailed(): AggregateError {
  const inner = new AggregateError([new TypeError('bad type'), 'not an error'], 'inner');
  return new AggregateError([new RpcError('one', { code: 'E_ONE', data: { id: 1 } }), inner], 'all failed', { cause: new Error('why') });
}

function containsItself(): AggregateError {
  const self = new AggregateError([new Error('fine')], 'self');
  self.errors.push(self);
  return self;
}

const server = createServer<Gathering>({
  service: 'gathering',
  handlers: {
    failAll() {
      throw allFailed();
    },
    failWithCode() {
      throw Object.assign(allFailed(), { code: 'E_ALL', data: { tried: 2 } });
    },
    failSelf() {
      throw containsItself();
    },
    failSelfWithCode() {
      throw Object.assign(containsItself(), { code: 'E_SELF' });
    },
    failMany(_ctx, n) {
      throw Object.assign(new AggregateError(Array.from({ length: n }, (_, i) => new Error(`attempt ${i} ${'x'.repeat(100)}`)), 'many'), { code: 'E_MANY' });
    },
    gather: () => allFailed(),
    inspect: (_ctx, err) => ({
      aggregate: err instanceof AggregateError,
      remote: err instanceof RemoteAggregateError,
      codes: err instanceof AggregateError ? err.errors.map((e: { code?: string }) => e.code ?? '-') : [],
      nested: err instanceof AggregateError && err.errors[1] instanceof AggregateError,
    }),
    add: (_ctx, a, b) => a + b,
  },
});
const [a, b] = socketPair();
void server.serve(a);
const client = await connect<Gathering>(b);
afterAll(() => client.$close());

function expectAllFailed(err: unknown, code: string): void {
  expect(err).toBeInstanceOf(AggregateError);
  // (One test covers every error from the wire; a subclass keeps the plain test.)
  expect(err).toBeInstanceOf(RpcError);
  expect(err).not.toBeInstanceOf(class Narrower extends RpcError {});
  expect(err).toMatchObject({ name: 'AggregateError', message: 'all failed', code });
  const { errors, cause } = err as AggregateError;
  expect(cause).toMatchObject({ name: 'Error', message: 'why' });
  expect(errors).toHaveLength(2);
  expect(errors[0]).toBeInstanceOf(RpcError);
  expect(errors[0]).toMatchObject({ message: 'one', code: 'E_ONE', data: { id: 1 } });
  expect(errors[1]).toBeInstanceOf(AggregateError);
  expect(errors[1]).toMatchObject({ message: 'inner', code: RpcCode.INTERNAL });
  expect((errors[1] as AggregateError).errors[0]).toMatchObject({ name: 'TypeError', message: 'bad type' });
  expect((errors[1] as AggregateError).errors[1]).toBe('not an error');
}

describe('AggregateError over a connection', () => {
  it('thrown by a handler, arrives an AggregateError with its errors, nested ones too', async () => {
    expectAllFailed(await client.failAll().catch((e: unknown) => e), RpcCode.INTERNAL);
  });

  it('keeps its code and data', async () => {
    const err = await client.failWithCode().catch((e: unknown) => e);
    expectAllFailed(err, 'E_ALL');
    expect((err as RemoteAggregateError).data).toEqual({ tried: 2 });
  });

  it('as a result, and as an argument', async () => {
    expectAllFailed(await client.gather(), RpcCode.INTERNAL);
    expect(await client.inspect(allFailed())).toEqual({ aggregate: true, remote: true, codes: ['E_ONE', RpcCode.INTERNAL], nested: true });
  });

  it('one that contains itself: ENCODE_ERROR with the path, or its own code with data.lost; no hang', async () => {
    await expect(client.$with({ timeout: 5_000 }).failSelf()).rejects.toMatchObject({
      code: RpcCode.ENCODE_ERROR,
      data: { path: '.error.errors[1]' },
    });
    await expect(client.$with({ timeout: 5_000 }).failSelfWithCode()).rejects.toMatchObject({
      code: 'E_SELF',
      message: 'self',
      data: { lost: { code: RpcCode.ENCODE_ERROR, path: '.error.errors[1]' } },
    });
    // Sent by the caller: refused before anything is sent.
    await expect(client.inspect(containsItself())).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
  });

  it("as many errors as the caller's maxMessageSize takes; more: its code, with data.lost saying MESSAGE_TOO_LARGE", async () => {
    const [ours, theirs] = socketPair();
    void server.serve(ours);
    const small = await connect<Gathering>(theirs, { maxMessageSize: 64 * 1024 });
    try {
      const fits = await small.failMany(400).catch((e: unknown) => e);
      expect(fits).toBeInstanceOf(AggregateError);
      expect((fits as AggregateError).errors).toHaveLength(400);
      const over = await small.$with({ timeout: 5_000 }).failMany(1_000).catch((e: unknown) => e);
      expect(over).not.toBeInstanceOf(AggregateError);
      expect(over).toMatchObject({ code: 'E_MANY', message: 'many', data: { lost: { code: RpcCode.MESSAGE_TOO_LARGE } } });
    } finally {
      await small.$close();
    }
  });

  it('the connection carries on', async () => {
    expect(await client.add(2, 3)).toBe(5);
  });
});
