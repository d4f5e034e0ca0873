// Every call gets an answer, even when the answer the handler produced
// cannot travel: the caller then gets an error that says why, never silence.
import { openSync, closeSync } from 'node:fs';
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { Fd, RpcCode, RpcError, connect, createServer } from '../src/index.js';

interface Awkward {
  methods: {
    mapWithObjectKey(): Map<unknown, number>;
    tooManyFds(): Fd[];
    errorWithFunction(): never;
    hugeError(): never;
    throwsObject(): never;
    itemThatCannotTravel(): AsyncIterable<unknown>;
    errorMap(): never;
    add(a: number, b: number): number;
    hostile(kind: string): unknown;
  };
}

// Values a handler may hand back that throw when they are looked at.
const throwing = (what: string) => () => {
  throw new Error(what);
};
const hostile: Record<string, () => unknown> = {
  asyncGetter: async () => ({ get x() { return throwing('getter in result')(); } }),
  syncGetter: () => ({ get x() { return throwing('getter in result')(); } }),
  asyncIteratorGetter: async () => ({ get [Symbol.asyncIterator]() { return throwing('asyncIterator getter')(); } }),
  messageGetter: async () => {
    const err = new Error('x');
    Object.defineProperty(err, 'message', { get: () => { throw Object.create(null); } });
    throw err;
  },
  thenThrows: () => ({ then: throwing('then boom') }),
  thenTwiceThenThrows: () => ({
    then(ok: (v: unknown) => void, fail: (e: unknown) => void) {
      ok(1);
      fail(new Error('second word'));
      throw new Error('and a throw');
    },
  }),
  nullProtoThrown: () => {
    throw Object.create(null);
  },
};

const nulls = Array.from({ length: 300 }, () => openSync('/dev/null', 'r'));
afterAll(() => nulls.forEach((fd) => closeSync(fd)));

const server = createServer<Awkward>({
  service: 'awkward',
  handlers: {
    // String(key) throws for a null-prototype object: the path of the value used to crash prepare().
    mapWithObjectKey: () => new Map([[Object.create(null) as object, () => 1]]) as unknown as Map<unknown, number>,
    tooManyFds: () => nulls.map((fd) => Fd.from(fd)),
    errorWithFunction() {
      throw new RpcError('bad data', { code: 'E_BAD', data: { callback() {} } });
    },
    hugeError() {
      throw new RpcError('x'.repeat(20 << 20), { code: 'E_HUGE' });
    },
    throwsObject() {
      // eslint-disable-next-line @typescript-eslint/only-throw-error
      throw { code: 'E_OBJ', message: 'an object with a code' };
    },
    async *itemThatCannotTravel() {
      yield 1;
      yield { f() {} };
    },
    errorMap() {
      throw new RpcError('with a map', { code: 'E_MAP', data: { byId: new Map([[1, 'one']]) } });
    },
    add: (_ctx, a, b) => a + b,
    hostile: (_ctx, kind) => hostile[kind]!(),
  },
});
const [a, b] = socketPair();
void server.serve(a);
const client = await connect<Awkward>(b);
afterAll(() => client.$close());

describe('answers that cannot travel', () => {
  // The server runs in this process: an unhandled rejection or an uncaught
  // throw from one of these would fail the test run.
  it('values that throw when looked at (getters, thenables, message getters) get an answer with a code; the server lives on', async () => {
    const outcomes: Record<string, string> = {};
    for (const kind of Object.keys(hostile)) {
      outcomes[kind] = await client.hostile(kind).then(
        (value) => `value ${JSON.stringify(value)}`,
        (err: RpcError) => `error ${err.code}`,
      );
    }
    expect(outcomes).toEqual({
      asyncGetter: 'error ENCODE_ERROR',
      syncGetter: 'error ENCODE_ERROR',
      asyncIteratorGetter: 'value {}', // not iterable, then: sent as the value it is
      messageGetter: 'error ENCODE_ERROR',
      thenThrows: 'error INTERNAL',
      thenTwiceThenThrows: 'value 1', // its first word counts
      nullProtoThrown: 'error INTERNAL',
    });
    // As notifications, whose answers go nowhere: nothing to hear, nothing thrown.
    for (const kind of Object.keys(hostile)) client.$notify.hostile(kind);
    expect(await client.add(2, 2)).toBe(4);
  });

  it('a result with an unencodable value under an object Map key: ENCODE_ERROR, not a hang', async () => {
    await expect(client.$with({ timeout: 5_000 }).mapWithObjectKey()).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
  });

  it('a result with more fds than a message can carry: TOO_MANY_FDS, not a hang', async () => {
    await expect(client.$with({ timeout: 5_000 }).tooManyFds()).rejects.toMatchObject({ code: 'TOO_MANY_FDS' });
  });

  it('an error whose data cannot travel keeps its code and message; data.lost says why and where', async () => {
    await expect(client.$with({ timeout: 5_000 }).errorWithFunction()).rejects.toMatchObject({
      code: 'E_BAD',
      message: 'bad data',
      data: { lost: { code: RpcCode.ENCODE_ERROR, path: '.error.data.callback' } },
    });
  });

  it('an error too large to send keeps its code, its message cut short (it came as MESSAGE_TOO_LARGE)', async () => {
    const err = await client.$with({ timeout: 5_000 }).hugeError().catch((e: RpcError) => e);
    expect(err).toMatchObject({ code: 'E_HUGE', data: { lost: { code: RpcCode.MESSAGE_TOO_LARGE } } });
    expect(err.message.length).toBeLessThanOrEqual(1000);
  });

  it("a thrown { code, message } object travels as an error with that code, not as INTERNAL '[object Object]'", async () => {
    await expect(client.$with({ timeout: 5_000 }).throwsObject()).rejects.toMatchObject({ code: 'E_OBJ', message: 'an object with a code' });
  });

  it('a stream item that cannot travel ends the stream with ENCODE_ERROR', async () => {
    const items: unknown[] = [];
    const err = await (async () => {
      for await (const item of client.$with({ timeout: 5_000 }).itemThatCannotTravel()) items.push(item);
    })().catch((e: unknown) => e);
    expect(items).toEqual([1]);
    expect(err).toMatchObject({ code: RpcCode.ENCODE_ERROR });
  });

  it("Maps in an error's data keep their type", async () => {
    const err = await client.errorMap().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_MAP' });
    expect((err as RpcError).data).toEqual({ byId: new Map([[1, 'one']]) });
  });

  it('the connection carries on', async () => {
    expect(await client.add(2, 3)).toBe(5);
  });
});
