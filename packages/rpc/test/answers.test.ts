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
    itemThatCannotTravel(): AsyncIterable<unknown>;
    errorMap(): never;
    add(a: number, b: number): number;
  };
}

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
    async *itemThatCannotTravel() {
      yield 1;
      yield { f() {} };
    },
    errorMap() {
      throw new RpcError('with a map', { code: 'E_MAP', data: { byId: new Map([[1, 'one']]) } });
    },
    add: (a, b) => a + b,
  },
});
const [a, b] = socketPair();
void server.serve(a);
const client = await connect<Awkward>(b);
afterAll(() => client.$close());

describe('answers that cannot travel', () => {
  it('a result with an unencodable value under an object Map key: ENCODE_ERROR, not a hang', async () => {
    await expect(client.$with({ timeout: 5_000 }).mapWithObjectKey()).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
  });

  it('a result with more fds than a message can carry: TOO_MANY_FDS, not a hang', async () => {
    await expect(client.$with({ timeout: 5_000 }).tooManyFds()).rejects.toMatchObject({ code: 'TOO_MANY_FDS' });
  });

  it('an error whose data cannot travel: ENCODE_ERROR naming the path', async () => {
    await expect(client.$with({ timeout: 5_000 }).errorWithFunction()).rejects.toMatchObject({
      code: RpcCode.ENCODE_ERROR,
      data: { path: '.error.data.callback' },
    });
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
