// One contract over every transport the RPC layer runs on: a seqpacket
// socket, TCP (any Duplex), and the socketpair of spawnHelper/serveParent.
// Each in another process; each with typed calls, events, a stream, and fds
// where they can travel.
import { once } from 'node:events';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Fd, RpcCode, type RpcClient, connect, spawnHelper } from '../src/index.js';
import { fixtures, startService, tempDir } from './helpers.js';
import type { Lab } from './lab.js';
import { cleanUp, runFixture } from './procs.js';

const tmp = tempDir();
const cleanups: Array<() => unknown> = [];
const textFile = join(tmp.dir, 'note.txt');
writeFileSync(textFile, 'passed by descriptor');

afterAll(async () => {
  await cleanUp(cleanups);
  tmp.cleanup();
});

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** What every transport must carry: calls both ways, events, a stream longer than the credit window. */
async function exercise(c: RpcClient<Lab>): Promise<void> {
  expect(await c.add(1, 2)).toBe(3);
  expect(await c.echo({ when: new Date(5), big: 2n ** 70n })).toEqual({ when: new Date(5), big: 2n ** 70n });
  expect(await c.askClient('ready?')).toBe(true);
  const ticks: number[] = [];
  const onTick = (n: number) => ticks.push(n);
  c.$events.on('tick', onTick);
  expect(await c.publish(5)).toBe(1);
  expect(ticks).toEqual([5]);
  c.$events.off('tick', onTick);
  const items: number[] = [];
  for await (const i of c.count(100)) items.push(i);
  expect(items).toEqual(range(100));
}

/** fds both ways: one we send, one the server opens for us. */
async function passFds(c: RpcClient<Lab>): Promise<void> {
  const fd = openSync(textFile, 'r');
  try {
    expect(await c.readFd(Fd.from(fd))).toBe('passed by descriptor');
  } finally {
    closeSync(fd);
  }
  const received = await c.open(textFile);
  const mine = received.take();
  try {
    expect(readFileSync(mine, 'utf8')).toBe('passed by descriptor');
  } finally {
    closeSync(mine);
  }
}

const expose = { confirm: (_ctx: unknown, q: string) => q.endsWith('?') };

describe('seqpacket', () => {
  it('carries calls, events, a stream and fds', async () => {
    const s = await startService(join(tmp.dir, 'seq.sock'), { type: 'seqpacket' });
    cleanups.push(() => s.stop());
    const c = await connect<Lab>(s.address, { type: 'seqpacket', expose });
    cleanups.push(() => c.$close());
    expect(c.$connection!.channel.transport).toMatchObject({ type: 'seqpacket' });
    await exercise(c);
    await passFds(c);
    expect((await c.whoami()).peer?.pid).toBe(process.pid);
  });

  it('fails a message larger than a packet can be with MESSAGE_TOO_LARGE; the connection survives', async () => {
    const s = await startService(join(tmp.dir, 'seq-big.sock'), { type: 'seqpacket' });
    cleanups.push(() => s.stop());
    const c = await connect<Lab>(s.address, { type: 'seqpacket' });
    cleanups.push(() => c.$close());
    const conn = c.$connection;
    // Above the socket's default packet size (256 KiB), far below maxMessageSize (16 MiB).
    await expect(c.echo(Buffer.alloc(512 * 1024))).rejects.toMatchObject({ code: RpcCode.MESSAGE_TOO_LARGE });
    expect(c.$connection).toBe(conn);
    expect(await c.add(1, 1)).toBe(2);
  });
});

describe('TCP (any Duplex)', () => {
  async function tcpClient(): Promise<RpcClient<Lab>> {
    const service = runFixture('lab-service.mjs', ['tcp:127.0.0.1']);
    cleanups.push(() => service.kill());
    const { port } = await service.next<{ port: number }>();
    const socket = netConnect(port, '127.0.0.1');
    const c = await connect<Lab>(socket, { service: 'lab', expose });
    cleanups.push(() => c.$close());
    return c;
  }

  it('carries calls, events and a stream; no peer credentials', async () => {
    const c = await tcpClient();
    await exercise(c);
    expect(c.$peer).toBeNull();
    expect((await c.whoami()).peer).toBeNull();
  });

  it('fails an fd with a clear code, either way, and the connection carries on', async () => {
    const c = await tcpClient();
    const fd = openSync(textFile, 'r');
    try {
      await expect(c.readFd(Fd.from(fd))).rejects.toMatchObject({
        code: 'ERR_AFUNIX_UNSUPPORTED',
        message: expect.stringContaining('file descriptors'),
      });
    } finally {
      closeSync(fd);
    }
    // A result with an fd cannot travel back either: the server says so.
    await expect(c.open(textFile)).rejects.toMatchObject({ code: 'ERR_AFUNIX_UNSUPPORTED' });
    expect(await c.add(2, 3)).toBe(5);
  });
});

interface HelperApi {
  methods: {
    uid(): number;
    add(a: number, b: number): number;
    pid(): number;
    greet(name: string): string;
    tick(n: number): number;
    count(to: number): AsyncIterable<number>;
    readFd(fd: Fd): string;
    open(path: string): Fd;
  };
  events: { tick(n: number): void };
  clientMethods: { title(): string };
}

describe('spawnHelper / serveParent', () => {
  it('runs the helper as another uid (privilege separation), over the same channel', async () => {
    if (process.getuid?.() !== 0) throw new Error('this test needs root (CI runs as root) to start a helper as uid 65534');
    const { client: h, child } = await spawnHelper<HelperApi>(join(fixtures, 'helper.mjs'), {
      service: 'helper',
      uid: 65534,
      gid: 65534,
      expose: { title: () => 'Dr.' },
    });
    cleanups.push(() => child.kill('SIGKILL'));
    expect(await h.uid()).toBe(65534);
    expect(await h.pid()).toBe(child.pid);
    const exited = once(child, 'exit');
    await h.$close();
    expect((await exited)[0]).toBe(0);
  });

  it('carries calls both ways, events, a stream and fds, and the helper exits when closed', async () => {
    const { client: h, child } = await spawnHelper<HelperApi>(join(fixtures, 'helper.mjs'), {
      service: 'helper',
      args: ['2.5'],
      expose: { title: () => 'Dr.' },
    });
    cleanups.push(() => child.kill('SIGKILL'));
    const exited = once(child, 'exit');
    expect(h.$server).toMatchObject({ service: 'helper', version: '2.5' });
    expect(await h.pid()).toBe(child.pid);
    expect(await h.add(2, 2)).toBe(4);
    expect(await h.greet('Who')).toBe('Dr. Who'); // the helper called us back

    const ticks: number[] = [];
    h.$events.on('tick', (n) => ticks.push(n));
    expect(await h.tick(7)).toBe(7);
    expect(ticks).toEqual([7]);

    const items: number[] = [];
    for await (const i of h.count(50)) items.push(i);
    expect(items).toEqual(range(50));

    const fd = openSync(textFile, 'r');
    try {
      expect(await h.readFd(Fd.from(fd))).toBe('passed by descriptor');
    } finally {
      closeSync(fd);
    }
    const received = (await h.open(textFile)).take();
    try {
      expect(readFileSync(received, 'utf8')).toBe('passed by descriptor');
    } finally {
      closeSync(received);
    }

    await h.$close();
    expect(await exited).toEqual([0, null]);
  });
});
