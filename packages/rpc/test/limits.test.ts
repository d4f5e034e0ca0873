// Limits and hostile peers, against a service in another process: calls in
// flight, message sizes, bytes that are not the protocol, prototype keys.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fd, Msg, RpcCode, type RpcClient, connect } from '../src/index.js';
import { encode, encodeToBuffer } from '../src/codec.js';
import { type Service, eventually, startService, tempDir } from './helpers.js';
import type { Lab } from './lab.js';
import { cleanUp } from './procs.js';
import { type RawPeer, frame, helloFrame, messageFrame, rawPeer } from './wire.js';

const MiB = 1024 * 1024;
const tmp = tempDir();
let busy: Service; // maxInFlight: 4
let small: Service; // maxMessageSize: 1 MiB
let good: RpcClient<Lab>; // a well-behaved client of `small`, used throughout
const clients: Array<RpcClient<Lab>> = [];

beforeAll(async () => {
  busy = await startService(join(tmp.dir, 'busy.sock'), { maxInFlight: 4 });
  small = await startService(join(tmp.dir, 'small.sock'), { maxMessageSize: MiB });
  good = await connect<Lab>(small.address);
});

afterAll(async () => {
  await cleanUp([...clients.map((c) => () => c.$close()), () => good?.$close(), () => busy?.stop(), () => small?.stop()]);
  tmp.cleanup();
});

async function client(address: string, options: Parameters<typeof connect<Lab>>[1] = {}): Promise<RpcClient<Lab>> {
  const c = await connect<Lab>(address, options);
  clients.push(c);
  return c;
}

describe('maxInFlight', () => {
  it('refuses calls beyond the limit with OVERLOADED, and the connection carries on', async () => {
    const c = await client(busy.address);
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => c.delay(300, i)));
    const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    // The server handles calls in order: the first four take the slots.
    expect(ok).toEqual([0, 1, 2, 3]);
    expect(refused).toHaveLength(6);
    for (const err of refused) expect(err).toMatchObject({ code: RpcCode.OVERLOADED, message: expect.stringContaining('4') });
    expect(await c.add(1, 2)).toBe(3);
    // The slots are free again.
    expect(await Promise.all([10, 11, 12, 13].map((v) => c.delay(1, v)))).toEqual([10, 11, 12, 13]);
  });
});

describe('message size', () => {
  it('fails an argument larger than the server accepts locally with MESSAGE_TOO_LARGE; the connection survives', async () => {
    const c = await client(small.address);
    const conn = c.$connection;
    await expect(c.echo(Buffer.alloc(2 * MiB, 1))).rejects.toMatchObject({
      code: RpcCode.MESSAGE_TOO_LARGE,
      message: expect.stringMatching(/\d+ bytes/),
      data: { size: expect.any(Number), limit: MiB, limitOf: 'receiver' },
    });
    expect(c.$connection).toBe(conn);
    expect(await c.add(2, 2)).toBe(4);
    const half = await c.echo(Buffer.alloc(MiB / 2, 7));
    expect(half.length).toBe(MiB / 2);
  });

  it('fails a result larger than the client accepts with MESSAGE_TOO_LARGE; the connection survives', async () => {
    const c = await client(small.address, { maxMessageSize: 64 * 1024 });
    const conn = c.$connection;
    // (The server's error: whose limit it was travels with it.)
    await expect(c.big(128 * 1024)).rejects.toMatchObject({ code: RpcCode.MESSAGE_TOO_LARGE, data: { limit: 64 * 1024, limitOf: 'receiver' } });
    // Over the server's own limit as well: that one is named, since raising ours would not help.
    await expect(c.big(2 * MiB)).rejects.toMatchObject({ code: RpcCode.MESSAGE_TOO_LARGE, data: { limit: MiB, limitOf: 'sender' } });
    expect(c.$connection).toBe(conn);
    expect((await c.big(1024)).length).toBe(1024);
  });

  it("fails a message over the sender's own maxMessageSize, under the peer's, with limitOf: 'sender'", async () => {
    const c = await client(small.address, { maxMessageSize: 64 * 1024 });
    const err = (await c.echo(Buffer.alloc(128 * 1024, 1)).catch((e: unknown) => e)) as { data?: { size: number } };
    expect(err).toMatchObject({ code: RpcCode.MESSAGE_TOO_LARGE, data: { limit: 64 * 1024, limitOf: 'sender' } });
    expect(err.data!.size).toBeGreaterThan(128 * 1024);
    expect(await c.add(1, 1)).toBe(2);
  });
});

describe('a peer that breaks the protocol is cut off; others carry on', () => {
  const peers: RawPeer[] = [];
  afterAll(() => peers.forEach((p) => p.destroy()));

  async function raw(): Promise<RawPeer> {
    const p = await rawPeer(small.address);
    peers.push(p);
    return p;
  }

  async function established(): Promise<RawPeer> {
    const p = await raw();
    p.send(helloFrame());
    expect(await p.nextMessage()).toMatchObject([Msg.HELLO, { service: 'lab' }]);
    return p;
  }

  async function stillServing(): Promise<void> {
    expect(await good.add(40, 2)).toBe(42);
    const fresh = await client(small.address);
    expect(await fresh.delay(1, 9)).toBe(9);
  }

  // Sends `bytes` as a connection's first, and gives the handshake errors
  // the server reported for it once it closed that connection.
  async function refusedFirst(bytes: Buffer): Promise<unknown[]> {
    const before = (await good.troubles()).handshakeErrors.length;
    const p = await raw();
    p.send(bytes);
    await p.closed;
    return (await good.troubles()).handshakeErrors.slice(before);
  }

  it('garbage instead of a hello', async () => {
    expect(await refusedFirst(Buffer.from('GET / HTTP/1.1\r\nHost: lab\r\n\r\n'))).toEqual([{ code: RpcCode.PROTOCOL_ERROR, message: expect.stringContaining('frame magic') }]);
    await stillServing();
  });

  it('a frame header with an absurd length, before and after the hello', async () => {
    const absurd = Buffer.from([0xaf, 1, 0, 0, 0xf0, 0xff, 0xff, 0xff]);
    expect(await refusedFirst(absurd)).toEqual([{ code: 'FRAME_TOO_LARGE', message: expect.stringContaining('maxFrameSize') }]);

    const second = await established();
    second.send(absurd);
    await second.closed;
    await stillServing();
  });

  it('a first frame larger than a hello may be is refused at its header, not buffered (a peer not yet known)', async () => {
    // 300 KiB: under this server's maxMessageSize (1 MiB), over the 256 KiB a hello may take.
    const header = Buffer.from([0xaf, 1, 0, 0, 0, 0, 0, 0]);
    header.writeUInt32LE(300 * 1024, 4);
    // (And nothing more: the server must not wait for the rest.)
    expect(await refusedFirst(header)).toEqual([{ code: 'FRAME_TOO_LARGE', message: expect.stringContaining('262144') }]);
    // Past the hello, the server's own limit is back: a 600 KiB call goes through.
    expect((await good.echo(Buffer.alloc(600 * 1024, 7))).length).toBe(600 * 1024);
    await stillServing();
  });

  it('a first frame that says it carries fds is refused at its header (a hello carries none)', async () => {
    // (Each such header held up to 253 of the server's fds until the handshake timeout.)
    const header = Buffer.from([0xaf, 1, 0, 253, 16, 0, 0, 0]);
    expect(await refusedFirst(header)).toEqual([{ code: 'TOO_MANY_FDS', message: expect.stringContaining('maxFds is 0') }]);
    await stillServing();
  });

  it('a call of a million arguments is refused with INVALID_ARGUMENTS (spread into the handler, they overflowed the stack)', async () => {
    const p = await established();
    p.send(messageFrame([Msg.REQUEST, 7, 'record', new Array<number>(1_000_000).fill(1)]));
    const answer = await p.nextMessage();
    expect(answer).toMatchObject([Msg.ERROR, 7, { code: RpcCode.INVALID_ARGUMENTS, message: expect.stringContaining('at most 4096') }]);
    p.destroy();
    await stillServing();
  });

  const malformed: Array<[string, Buffer]> = [
    ['bytes that are not msgpack', frame(Buffer.from([0xc1]))],
    ['a message that is not an array', frame(encodeToBuffer('not a list' as never))],
    ['an unknown message kind', messageFrame([99, 1])],
    ['a negative call id', messageFrame([Msg.REQUEST, -1, 'record', ['raw']])],
    ['arguments that are not a list', messageFrame([Msg.REQUEST, 1, 'record', 'raw'])],
    // The message refers to fd #0, but no fd came with it.
    ['an Fd that did not come with the message', frame(encodeToBuffer([Msg.REQUEST, 1, 'record', [Fd.from(0)]]))],
  ];

  it.each(malformed)('a valid hello, then %s', async (_what, bytes) => {
    const before = (await good.troubles()).disconnects.length;
    const p = await established();
    p.send(bytes);
    await p.closed;
    await eventually(async () => (await good.troubles()).disconnects.length > before);
    const { disconnects } = await good.troubles();
    expect(disconnects.slice(before)).toContainEqual({ code: RpcCode.PROTOCOL_ERROR, message: expect.stringContaining('protocol error from peer') });
    // Nothing the raw peer sent was handled.
    expect((await good.seen()).recorded).not.toContain('raw');
    await stillServing();
  });
});

describe('prototype pollution', () => {
  it('__proto__ and constructor keys in arguments and events do not reach Object.prototype', async () => {
    const evil = JSON.parse(
      '{"__proto__": {"polluted": "yes"}, "constructor": {"prototype": {"polluted": "yes"}}, "nested": [{"__proto__": {"polluted": "yes"}}]}',
    ) as Record<string, unknown>;
    expect(Object.keys(evil)).toContain('__proto__'); // an own key, as JSON.parse makes it
    const back = (await good.echo(evil)) as Record<string, unknown>;
    good.$notify.record(evil);
    good.$emit('progress', evil as never);
    (good.$emit as (name: string, ...args: unknown[]) => void)('__proto__', evil);
    (good.$emit as (name: string, ...args: unknown[]) => void)('constructor', evil);
    const map = await good.echo(new Map<unknown, unknown>([['__proto__', { polluted: 'yes' }]]));

    const report = await good.pollution();
    expect(report.polluted).toBeUndefined();
    expect(report.protoKeys).toEqual(report.baseline);
    // Nor here, and the values keep a plain prototype.
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    expect(back.polluted).toBeUndefined();
    expect(Object.getPrototypeOf((back.nested as object[])[0])).toBe(Object.prototype);
    expect((back.constructor as { prototype: unknown }).prototype).toEqual({ polluted: 'yes' }); // plain data
    expect(map).toEqual(new Map([['__proto__', { polluted: 'yes' }]]));
    // Names that exist on every object are not methods on the server. (The
    // client proxy answers valueOf itself: the call goes through $connection.)
    const untyped = good as unknown as Record<string, () => Promise<unknown>>;
    for (const name of ['__proto__', 'hasOwnProperty']) {
      await expect(untyped[name]!()).rejects.toMatchObject({ code: RpcCode.METHOD_NOT_FOUND });
    }
    await expect(good.$connection!.call('valueOf', [])).rejects.toMatchObject({ code: RpcCode.METHOD_NOT_FOUND });
    expect(await good.add(1, 1)).toBe(2);
  });
});
