// Calls, notifications, events and errors against a service in another process.
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RpcCode, type RpcClient, connect } from '../src/index.js';
import { type Service, eventually, startService, tempDir } from './helpers.js';
import type { Lab } from './lab.js';

const tmp = tempDir();
let service: Service;
let client: RpcClient<Lab>;

beforeAll(async () => {
  service = await startService(join(tmp.dir, 'lab.sock'));
  client = await connect<Lab>(service.address, {
    service: 'lab',
    expose: { confirm: (_ctx, q) => q.endsWith('?') },
  });
});

afterAll(async () => {
  await client?.$close();
  await service?.stop();
  tmp.cleanup();
});

describe('request/response', () => {
  it('calls a method with inferred types', async () => {
    expect(await client.add(1, 2)).toBe(3);
    expect(client.$server).toMatchObject({ service: 'lab', version: '1.0.0' });
  });

  it('keeps many calls in flight and matches responses that come back in any order', async () => {
    const n = 500;
    const delays = Array.from({ length: n }, (_, i) => (i * 7919) % 50);
    const results = await Promise.all(delays.map((ms, i) => client.delay(ms, i)));
    expect(results).toEqual(delays.map((_, i) => i));
  });

  it('sends notifications without waiting for an answer', async () => {
    client.$notify.record('first');
    client.$notify.record('second');
    await eventually(async () => (await client.seen()).recorded.length >= 2);
    expect((await client.seen()).recorded).toEqual(['first', 'second']);
  });

  it('lets the server call the client back (bidirectional)', async () => {
    expect(await client.askClient('ready?')).toBe(true);
    expect(await client.askClient('no')).toBe(false);
  });

  it('reports the caller credentials to the handler', async () => {
    const { peer, pid } = await client.whoami();
    expect(peer).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(client.$peer?.pid).toBe(pid);
  });

  it('a client can be logged: JSON.stringify() and String() make no hidden calls', async () => {
    const before = client.$connection!.stats.callsOut;
    expect(JSON.stringify({ client })).toBe('{"client":{}}');
    expect(`${client} ${String(client.$with({ timeout: 5 }))} ${String(client.$notify)}`).toBe('[object RpcRemote] [object RpcRemote] [object RpcRemote]');
    expect(client.valueOf()).toBe(client);
    expect(client.$connection!.stats.callsOut).toBe(before);
    expect(await client.add(1, 2)).toBe(3);
  });

  it("the handler's context comes first: no argument sent or left out takes its place", async () => {
    const uid = process.getuid!();
    expect(await client.uidFor(7)).toEqual({ id: 7, uid });
    // An optional argument left out is just missing.
    expect(await client.uidFor()).toEqual({ id: undefined, uid });
    // One argument too many, shaped as a context (through the connection, as
    // a client of another contract or a raw peer would send it), is ignored.
    const forged = client.$connection!.call('uidFor', [7, { peer: { pid: 1, uid: 4242, gid: 0 }, method: 'uidFor' }]);
    expect(await forged).toEqual({ id: 7, uid });
  });
});

describe('events', () => {
  it('delivers events only to connections that subscribed', async () => {
    const other = await connect<Lab>(service.address);
    try {
      const got = once(client.$events as never, 'tick');
      const handler = () => {};
      client.$events.on('tick', handler);
      // The subscription travels before the publish call on the same connection.
      expect(await client.publish(7)).toBe(1);
      expect(await got).toEqual([7]);
      client.$events.off('tick', handler);
      // other never subscribed; after unsubscribing nobody receives it.
      await client.seen();
      expect(await other.publish(8)).toBe(0);
    } finally {
      await other.$close();
    }
  });

  it('keeps subscriptions following the listeners however they are removed', async () => {
    const c = await connect<Lab>(service.address);
    try {
      const ticks: number[] = [];
      const listen = () => c.$events.on('tick', (n) => ticks.push(n));
      // publish() answers with the number of subscribers, after sending the
      // event: the server's count and what arrived, both checked.
      listen();
      expect(await c.publish(1)).toBe(1);
      c.$events.removeAllListeners('tick');
      expect(await c.publish(2)).toBe(0);
      listen();
      expect(await c.publish(3)).toBe(1);
      c.$events.removeAllListeners();
      expect(await c.publish(4)).toBe(0);
      // Listeners added after removeAllListeners() subscribe again.
      listen();
      expect(await c.publish(5)).toBe(1);
      c.$events.removeAllListeners();
      c.$events.once('tick', (n) => ticks.push(n));
      expect(await c.publish(6)).toBe(1);
      expect(await c.publish(7)).toBe(0); // the once listener removed itself
      expect(ticks).toEqual([1, 3, 5, 6]);
    } finally {
      await c.$close();
    }
  });

  it('carries client events to the server, with the connection they came from', async () => {
    client.$emit('progress', 42);
    await eventually(async () => (await client.seen()).progress === 42);
    // The server's listener gets the sending connection first.
    expect((await client.seen()).progressFrom).toBe(process.pid);
  });
});

describe('errors survive the trip', () => {
  it('keeps name, message, code, data and cause; no stack by default', async () => {
    const err = await client.fail('rpc').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ name: 'RpcError', message: 'nope', code: 'E_NOPE', data: { x: 1 } });
    expect((err as Error).cause).toMatchObject({ name: 'TypeError', message: 'inner' });
    expect((err as { remoteStack?: string }).remoteStack).toBeUndefined();
  });

  it('keeps the name of built-in errors and wraps non-errors', async () => {
    await expect(client.fail('type')).rejects.toMatchObject({ name: 'TypeError', message: 'bad type' });
    await expect(client.fail('string')).rejects.toMatchObject({ code: RpcCode.INTERNAL });
  });

  it('has stable codes for an unknown method', async () => {
    const untyped = client as unknown as { nope(): Promise<unknown> };
    await expect(untyped.nope()).rejects.toMatchObject({ code: 'METHOD_NOT_FOUND' });
    // Names that exist on every object are not methods.
    const proto = client as unknown as Record<string, () => Promise<unknown>>;
    await expect(proto.constructor!()).rejects.toMatchObject({ code: 'METHOD_NOT_FOUND' });
    await expect(client.$connection!.call('toString', [])).rejects.toMatchObject({ code: 'METHOD_NOT_FOUND' });
    await expect(client.$connection!.call('hasOwnProperty', ['x'])).rejects.toMatchObject({ code: 'METHOD_NOT_FOUND' });
  });
});

describe('values survive the trip', () => {
  it('round-trips Date, Map, Set, BigInt, bytes, undefined vs null, nested errors', async () => {
    const value = {
      when: new Date(1_700_000_000_123),
      map: new Map<unknown, unknown>([['a', 1], [2, new Map([['deep', true]])]]),
      set: new Set([1, 'two']),
      big: 2n ** 70n,
      small: 123n,
      buf: Buffer.from([1, 2, 3]),
      u8: new Uint8Array([4, 5]),
      nothing: undefined,
      empty: null,
      list: [undefined, null, 1],
      error: Object.assign(new RangeError('inner'), { code: 'E_INNER' }),
    };
    const back = await client.echo(value);
    expect(back.when).toBeInstanceOf(Date);
    expect(back.when.getTime()).toBe(value.when.getTime());
    expect(back.map).toBeInstanceOf(Map);
    expect((back.map.get(2) as Map<string, boolean>).get('deep')).toBe(true);
    expect(back.set).toEqual(new Set([1, 'two']));
    expect(back.big).toBe(2n ** 70n);
    expect(back.small).toBe(123n);
    expect(Buffer.from(back.buf).equals(value.buf)).toBe(true);
    expect([...back.u8]).toEqual([4, 5]);
    expect('nothing' in back && back.nothing === undefined).toBe(true);
    expect(back.empty).toBeNull();
    expect(back.list).toEqual([undefined, null, 1]);
    expect(back.error).toBeInstanceOf(Error);
    expect(back.error).toMatchObject({ name: 'RangeError', message: 'inner', code: 'E_INNER' });
  });

  it('fails on the sender with the path of what cannot be encoded', async () => {
    await expect(client.echo({ a: [1, { f() {} }] })).rejects.toMatchObject({
      code: RpcCode.ENCODE_ERROR,
      data: { path: '.args[0].a[1].f' },
    });
    await expect(client.echo({ s: Symbol('x') })).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await expect(client.echo(cyclic)).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
    // A cycle through an error's data: each error is packed on its own.
    const looped = Object.assign(new Error('loop'), { data: {} as Record<string, unknown> });
    looped.data.me = looped;
    await expect(client.echo(looped)).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR, message: expect.stringContaining("a cycle through an error's data") });
    // ... also with many objects between the error and itself.
    const far = Object.assign(new Error('far'), { data: {} as Record<string, unknown> });
    let inside = far.data;
    for (let i = 0; i < 60; i++) inside = (inside.x = {}) as Record<string, unknown>;
    inside.me = far;
    await expect(client.echo(far)).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
    // The same in an event, which no caller waits for: $emit() throws it.
    expect(() => client.$emit('progress', looped as never)).toThrow(expect.objectContaining({ code: RpcCode.ENCODE_ERROR }));
    // The connection is unharmed, and an error in an error still travels.
    expect(await client.add(2, 2)).toBe(4);
    const inner = Object.assign(new Error('outer'), { data: { inner: new RangeError('inner') } });
    expect((await client.echo(inner)).data.inner).toMatchObject({ name: 'RangeError', message: 'inner' });
  });
});
