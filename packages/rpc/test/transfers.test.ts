// Fd.transfer() gives a descriptor away: it is closed exactly once, whether
// the message carrying it leaves or not.
import { closeSync, fstatSync, openSync } from 'node:fs';
import { type UnixSocket, fromFd, socketPair, socketPairFds } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import type { FramedChannel } from '@afunix/framing';
import { Fd, RpcCode, type RpcClient, type RpcServer, connect, createServer } from '../src/index.js';
import { holdForSends, sendsDone } from '../src/fd.js';
import { Msg } from '../src/protocol.js';
import { MessageSender } from '../src/sender.js';
import { eventually, addedSince, openFds } from './helpers.js';

interface Broker {
  methods: {
    ping(...args: unknown[]): number;
  };
}

const openNull = () => openSync('/dev/null', 'r');

async function broker(): Promise<{ client: RpcClient<Broker>; close(): Promise<void> }> {
  const server = createServer<Broker>({ service: 'broker', handlers: { ping: () => 1 } });
  const [a, b] = socketPair();
  void server.serve(a);
  const client = await connect<Broker>(b);
  await client.ping(); // warm up
  return {
    client,
    async close() {
      await client.$close();
      await server.close({ timeout: 100 });
    },
  };
}

describe('Fd.transfer() in a call that never leaves', () => {
  it('with an aborted signal: the call fails and the fd is closed', async () => {
    const { client, close } = await broker();
    try {
      const before = openFds();
      const signal = AbortSignal.abort();
      for (let i = 0; i < 5; i++) {
        await expect(client.$with({ signal }).ping(Fd.transfer(openNull()))).rejects.toMatchObject({ code: RpcCode.ABORTED });
      }
      expect(addedSince(before)).toEqual([]);
    } finally {
      await close();
    }
  });

  it('on a closed connection: the call fails and the fd is closed', async () => {
    const { client, close } = await broker();
    try {
      const connection = client.$connection!;
      connection.close();
      const before = openFds();
      for (let i = 0; i < 5; i++) {
        await expect(connection.call('ping', [new Map([['fd', Fd.transfer(openNull())]])])).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
      }
      expect(addedSince(before)).toEqual([]);
    } finally {
      await close();
    }
  });

  it('from a client with no connection ($close()d): calls, streams, notifications and events close their fds', async () => {
    interface Streams {
      methods: { ping(...args: unknown[]): number; items(...args: unknown[]): AsyncIterable<number> };
      clientEvents: { note(...args: unknown[]): void };
    }
    const server = createServer<Streams>({ service: 'broker', handlers: { ping: () => 1, async *items() { yield 1; } } });
    const [a, b] = socketPair();
    void server.serve(a);
    const client = await connect<Streams>(b);
    await client.$close();
    try {
      const before = openFds();
      await expect(client.ping(Fd.transfer(openNull()))).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
      await expect(client.items(Fd.transfer(openNull())).next()).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
      expect(() => client.$notify.ping(Fd.transfer(openNull()))).toThrow(expect.objectContaining({ code: RpcCode.CONNECTION_CLOSED }));
      expect(() => client.$emit('note', Fd.transfer(openNull()))).toThrow(expect.objectContaining({ code: RpcCode.CONNECTION_CLOSED }));
      expect(addedSince(before)).toEqual([]);
    } finally {
      await server.close({ timeout: 100 });
    }
  });

  it('with arguments that cannot travel: the call fails and the fd is closed', async () => {
    const { client, close } = await broker();
    try {
      const before = openFds();
      for (let i = 0; i < 5; i++) {
        await expect(client.ping(() => 1, Fd.transfer(openNull()))).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
      }
      expect(addedSince(before)).toEqual([]);
    } finally {
      await close();
    }
  });
});

interface Slow {
  methods: {
    openLater(ms: number): Fd;
    openEach(ms: number): AsyncIterable<Fd>;
  };
}

// Bound on the wait for fds to be closed: liveness, not speed.
const SETTLES = 3_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Fd.transfer() in an answer that never leaves', () => {
  let returned = 0;
  let produced = 0;
  const server = createServer<Slow>({
    service: 'slow',
    handlers: {
      async openLater(_ctx, ms) {
        const fd = openNull();
        await sleep(ms);
        returned++;
        return Fd.transfer(fd);
      },
      async *openEach(_ctx, ms) {
        for (;;) {
          const fd = openNull();
          await sleep(ms);
          produced++;
          yield Fd.transfer(fd);
        }
      },
    },
  });
  afterAll(() => server.close({ timeout: 100 }));

  async function slowClient(): Promise<RpcClient<Slow>> {
    const [a, b] = socketPair();
    void server.serve(a);
    return connect<Slow>(b);
  }

  it('a result returned after the caller timed out: its fd is closed', async () => {
    const client = await slowClient();
    try {
      const before = openFds();
      const calls = Array.from({ length: 5 }, () => client.$with({ timeout: 1 }).openLater(50));
      for (const call of calls) await expect(call).rejects.toMatchObject({ code: RpcCode.TIMEOUT });
      await eventually(() => returned === 5);
      await eventually(() => addedSince(before).length === 0, SETTLES);
    } finally {
      returned = 0;
      await client.$close();
    }
  });

  it('a result returned after the caller disconnected: its fd is closed', async () => {
    const before = openFds();
    for (let i = 0; i < 5; i++) {
      const client = await slowClient();
      client.openLater(50).catch(() => {});
      await client.$close();
    }
    await eventually(() => returned === 5);
    await eventually(() => addedSince(before).length === 0, SETTLES);
    returned = 0;
  });

  it('a stream item produced while its consumer broke out: its fd is closed', async () => {
    const client = await slowClient();
    try {
      const before = openFds();
      for (let round = 1; round <= 3; round++) {
        for await (const fd of client.openEach(20)) {
          fd.close();
          break; // the generator is making the next one now
        }
        await eventually(() => produced === 2 * round);
      }
      await eventually(() => addedSince(before).length === 0, SETTLES);
    } finally {
      await client.$close();
    }
  });
});

describe('Fd.transfer() published to several subscribers', () => {
  it('every subscriber gets the same file, and the fd is closed once the last message has left', async () => {
    interface Files {
      methods: { ping(): number };
      events: { file(fd: Fd): void };
    }
    const server = createServer<Files>({ service: 'files', handlers: { ping: () => 1 } });
    const clients: Array<RpcClient<Files>> = [];
    try {
      const got: number[][] = [];
      for (let i = 0; i < 3; i++) {
        const [a, b] = socketPair();
        void server.serve(a);
        const client = await connect<Files>(b);
        clients.push(client);
        const inodes: number[] = [];
        got.push(inodes);
        client.$events.on('file', (fd) => {
          inodes.push(fstatSync(fd.fd).ino);
          fd.close();
        });
        await client.ping(); // its subscription has reached the server
      }
      const before = openFds();
      const file = openSync('/etc/hostname', 'r');
      const ino = fstatSync(file).ino;
      // The first message to leave used to close the fd under the others:
      // they carried a closed number (EBADF, dropped unreported) or one
      // opened again meanwhile, another file.
      expect(server.publish('file', Fd.transfer(file))).toBe(3);
      const reopened = openSync('/dev/null', 'r');
      await eventually(() => got.every((inodes) => inodes.length === 1));
      expect(got).toEqual([[ino], [ino], [ino]]);
      closeSync(reopened);
      await eventually(() => addedSince(before).length === 0);
    } finally {
      for (const client of clients) await client.$close();
      await server.close({ timeout: 100 });
    }
  });
});

describe('a received Fd passed on by its handler', () => {
  it('published by a handler that returns at once: the subscriber gets the file, and the server closes it once it has left', async () => {
    interface Relay {
      methods: { relay(fd: Fd): number; ping(): number };
      events: { file(fd: Fd): void };
    }
    // The handler's argument is closed when it returns, while the event
    // carrying it still waits to leave: it used to go out with a closed number.
    const server: RpcServer<Relay> = createServer<Relay>({ service: 'relay', handlers: { relay: (_ctx, fd): number => server.publish('file', fd), ping: () => 1 } });
    const pairs = [socketPair(), socketPair()];
    for (const [a] of pairs) void server.serve(a);
    const subscriber = await connect<Relay>(pairs[0]![1]);
    const caller = await connect<Relay>(pairs[1]![1]);
    try {
      const got: number[] = [];
      subscriber.$events.on('file', (fd) => {
        got.push(fstatSync(fd.fd).ino);
        fd.close();
      });
      await subscriber.ping();
      await caller.ping();
      const before = openFds();
      const file = openSync('/etc/hostname', 'r');
      expect(await caller.relay(Fd.from(file))).toBe(1);
      await eventually(() => got.length === 1);
      expect(got).toEqual([fstatSync(file).ino]);
      closeSync(file);
      await eventually(() => addedSince(before).length === 0);
    } finally {
      await subscriber.$close();
      await caller.$close();
      await server.close({ timeout: 100 });
    }
  });
});

describe('Fd.transfer() of a received Fd', () => {
  it('hands that Fd itself over: it is taken, and its descriptor is closed once, after the message has left', async () => {
    interface Desk {
      methods: { give(): Fd; check(fd: Fd): boolean };
    }
    const server = createServer<Desk>({
      service: 'desk',
      handlers: { give: () => Fd.transfer(openNull()), check: (_ctx, fd) => fstatSync(fd.fd).isCharacterDevice() },
    });
    const [a, b] = socketPair();
    void server.serve(a);
    const client = await connect<Desk>(b);
    try {
      const received = await client.give();
      const number = received.fd;
      const handed = Fd.transfer(received);
      expect(() => received.fd).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(await client.check(handed)).toBe(true);
      await eventually(() => !openFds().has(number)); // closed once it left
      const next = openSync('/etc/hostname', 'r'); // the lowest free number: that one
      try {
        expect(next).toBe(number);
        received.close(); // taken: it closes nothing, this file least of all
        expect(fstatSync(next).isFile()).toBe(true);
      } finally {
        closeSync(next);
      }
    } finally {
      await client.$close();
      await server.close({ timeout: 100 });
    }
  });
});

describe('Fd.transfer() of an Fd that owns its descriptor', () => {
  it('moves it: a transfer of a transfer leaves one owner, and the first closes nothing', () => {
    const fd = openNull();
    const first = Fd.transfer(fd);
    const second = Fd.transfer(first);
    expect(() => first.fd).toThrow(expect.objectContaining({ code: 'EBADF' }));
    first.close();
    expect(fstatSync(fd).isCharacterDevice()).toBe(true);
    second.close();
    expect(() => fstatSync(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});

describe('an Fd while messages carrying it wait to leave', () => {
  interface Passing {
    methods: { echo(fd: Fd): Fd; echoLater(fd: Fd): Fd; relayTake(fd: Fd): string; adopt(fd: Fd): number; ping(): number };
    events: { file(fd: Fd, padding?: string): void; bulk(b: Buffer): void };
  }

  /** The inode of the first file a 'file' event brings (its Fd then closed). */
  function firstFile(client: RpcClient<Passing>): Promise<number> {
    return new Promise((resolve) =>
      client.$events.on('file', (fd) => {
        resolve(fstatSync(fd.fd).ino);
        fd.close();
      }),
    );
  }

  /** Runs `test` with a client of a fresh server, then closes them all. */
  async function withClient(test: (c: RpcClient<Passing>) => Promise<void>): Promise<void> {
    const { client, close } = await passing();
    try {
      await test(await client());
    } finally {
      await close();
    }
  }

  async function passing(options: { maxOutboundBytes?: number } = {}) {
    const adopted: UnixSocket[] = [];
    const server: RpcServer<Passing> = createServer<Passing>({
      service: 'passing',
      ...options,
      handlers: {
        // Its argument is closed when it settles, while the answer carrying it waits to leave.
        echo: (_ctx, fd) => fd,
        echoLater: async (_ctx, fd) => {
          await new Promise((resolve) => setTimeout(resolve, 10));
          return fd;
        },
        relayTake: (_ctx, fd): string => {
          server.publish('file', fd);
          try {
            fd.take();
            return 'taken';
          } catch (err) {
            return (err as { code: string }).code;
          }
        },
        // A misuse: a socket adopts the number, which the Fd still owns.
        adopt: (_ctx, fd) => {
          adopted.push(fromFd(fd.fd));
          return 1;
        },
        ping: () => 1,
      },
    });
    const clients: Array<RpcClient<Passing>> = [];
    const client = async () => {
      const [a, b] = socketPair();
      void server.serve(a);
      const c = await connect<Passing>(b);
      clients.push(c);
      return c;
    };
    const close = async () => {
      for (const c of clients) await c.$close().catch(() => {});
      await server.close({ timeout: 0 });
      for (const s of adopted) s.destroy();
    };
    return { server, client, close };
  }

  it('a handler returning the Fd it was given: the caller gets the same file back', () =>
    withClient(async (c) => {
      const file = openSync('/etc/hostname', 'r');
      for (const back of [await c.echo(Fd.from(file)), await c.echoLater(Fd.from(file))]) {
        expect(fstatSync(back.fd).ino).toBe(fstatSync(file).ino);
        back.close();
      }
      closeSync(file);
    }));

  it('take() is EBUSY while an event carrying it waits to leave, and the subscriber gets the file', () =>
    withClient(async (c) => {
      const got = firstFile(c);
      await c.ping();
      const file = openSync('/etc/hostname', 'r');
      expect(await c.relayTake(Fd.from(file))).toBe('EBUSY');
      expect(await got).toBe(fstatSync(file).ino);
      closeSync(file);
    }));

  it('a received Fd whose number a socket adopted without take(): closing it when the handler settles is no error', () =>
    withClient(async (c) => {
      const [x, y] = socketPairFds('stream');
      // (closeFd() refuses the socket's fd with EBUSY: the Fd leaves it to the socket.)
      expect(await c.adopt(Fd.from(x))).toBe(1);
      expect(await c.ping()).toBe(1);
      closeSync(x);
      closeSync(y);
    }));

  it('a transfer published to a subscriber and to one cut off by that message, whose disconnect listener throws: the first still gets the file', async () => {
    const CAP = 200 * 1024;
    const { server, client, close } = await passing({ maxOutboundBytes: CAP });
    let thrown = false;
    // (Run inside the send that cuts the connection off; it used to let the message's fds go twice.)
    server.on('disconnect', () => {
      if (thrown) return;
      thrown = true;
      throw new Error('a disconnect listener that throws');
    });
    const publishErrors: string[] = [];
    server.on('publishError', (err) => publishErrors.push(String((err as Error & { code?: string }).code)));
    try {
      const reading = await client();
      const got = firstFile(reading);
      await reading.ping();
      const stalled = await client();
      stalled.$events.on('file', () => {});
      stalled.$events.on('bulk', () => {});
      await stalled.ping();
      stalled.$connection!.channel.pause();
      const onServer = [...server.connections][1]!;
      const queued = () => onServer.channel.transport.writableLength;
      while (queued() < CAP - 1_500) {
        server.publish('bulk', Buffer.alloc(Math.max(1, Math.min(32 * 1024, CAP - 1_700 - queued()))));
        await new Promise((resolve) => setImmediate(resolve));
      }
      const file = openSync('/etc/hostname', 'r');
      const ino = fstatSync(file).ino;
      expect(server.publish('file', Fd.transfer(file), 'x'.repeat(2_000))).toBe(1);
      expect(thrown).toBe(true);
      expect(publishErrors).toEqual([RpcCode.CONNECTION_CLOSED]);
      // The lowest free number: the transfer's, had it been closed already.
      const other = openSync('/etc/passwd', 'r');
      try {
        expect(await got).toBe(ino);
      } finally {
        closeSync(other);
      }
    } finally {
      await close();
    }
  });
});

describe('a message packed while another is', () => {
  it('a getter that sends a message of its own (a logger) while a call with fds is packed: both arrive whole, nothing stays open', async () => {
    interface Looking {
      methods: { look(...args: unknown[]): number[]; log(note: string): void };
    }
    const logged: string[] = [];
    const server = createServer<Looking>({
      service: 'look',
      handlers: {
        look: (_ctx, ...args) => args.filter((a): a is Fd => a instanceof Fd).map((fd) => fstatSync(fd.fd).ino),
        log: (_ctx, note) => void logged.push(note),
      },
    });
    const [a, b] = socketPair();
    void server.serve(a);
    const client = await connect<Looking>(b);
    try {
      await client.look();
      const before = openFds();
      const hosts = openSync('/etc/hosts', 'r');
      const hostname = openSync('/etc/hostname', 'r');
      const inodes = [fstatSync(hosts).ino, fstatSync(hostname).ino];
      // (The packer reads the getter again while it packs: the nested
      // message used to wipe this one's list of fds.)
      const lazy = {
        get note() {
          client.$notify.log('computing');
          return 1;
        },
      };
      expect(await client.look(Fd.transfer(hosts), lazy, Fd.transfer(hostname))).toEqual(inodes);
      await eventually(() => logged.length > 0);
      await eventually(() => addedSince(before).length === 0);
    } finally {
      await client.$close();
      await server.close({ timeout: 100 });
    }
  });
});

describe('a send that throws after the channel took the message', () => {
  // No real channel is known to do this (it would take a listener that
  // throws from inside send()): a stand-in that runs onSent, then throws.
  const throwingChannel = {
    closed: false,
    send(_bytes: unknown, _fds: unknown, onSent?: (err?: Error) => void) {
      onSent?.();
      throw new Error('a listener threw inside send()');
    },
  } as unknown as FramedChannel;
  const owner = { closed: false, destroy() {}, fdsRefused() {} };

  it("lets the message's Fds go once: a transfer another send still holds stays open", () => {
    const fd = openNull();
    const transfer = Fd.transfer(fd);
    const publishing = holdForSends([transfer]); // as publish() holds it while it sends
    const sender = new MessageSender(throwingChannel, {}, owner, undefined);
    expect(() => sender.sendMessage(Msg.EVENT, -1, 'tick', [transfer])).toThrow('a listener threw inside send()');
    expect(fstatSync(fd).isCharacterDevice()).toBe(true); // still ours, still /dev/null
    sendsDone(publishing);
    expect(() => fstatSync(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
