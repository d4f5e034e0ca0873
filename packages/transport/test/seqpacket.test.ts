// SOCK_SEQPACKET: one write is one message, boundaries kept whatever the
// size, fds travel with their message, an oversized message is EMSGSIZE on
// the receiver (and its fds are closed), and empty messages are refused.
import { once } from 'node:events';
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type AfunixError,
  connect,
  createServer,
  fromFd,
  socketPair,
  socketPairFds,
  type UnixServer,
  type UnixSocket,
} from '../src/index.js';
import { destroyAll, pattern, tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let server: UnixServer | undefined;
const sockets: UnixSocket[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  await destroyAll(sockets);
  await server?.close();
  server = undefined;
  dir.remove();
});

/** A connected seqpacket pair through a listening server (client, accepted). */
async function pairViaServer(serverOptions: { maxMessageSize?: number } = {}): Promise<[UnixSocket, UnixSocket]> {
  server = createServer({ type: 'seqpacket', ...serverOptions });
  const accepted = once(server, 'connection') as Promise<[UnixSocket]>;
  await server.listen(join(dir.path, 'sp.sock'));
  const client = await connect(join(dir.path, 'sp.sock'), { type: 'seqpacket' });
  const [peer] = await accepted;
  sockets.push(client, peer);
  return [client, peer];
}

/**
 * An fd to send, one end of a socket pair: `watcherEnded` resolves once
 * every copy of it (ours and any the receiver got) is closed.
 */
function markerFd(): { marker: number; watcherEnded: Promise<unknown> } {
  const [marker, watch] = socketPairFds('stream');
  const watcher = fromFd(watch);
  sockets.push(watcher);
  const watcherEnded = once(watcher, 'end');
  watcher.resume();
  return { marker, watcherEnded };
}

/** Reads a regular file from offset 0 through a descriptor. */
function readThrough(fd: number): string {
  const buf = Buffer.alloc(4096);
  const n = readSync(fd, buf, 0, buf.length, 0);
  return buf.toString('utf8', 0, n);
}

// Sizes around the interesting edges: 1 byte, page and 64 KiB boundaries,
// the 200 KiB the default buffers allow, and some in between.
const SIZES = [1, 2, 3, 7, 100, 1000, 4095, 4096, 4097, 65535, 65536, 65537, 100_000, 200 * 1024, 1, 200 * 1024, 17, 1];

describe('seqpacket message boundaries', () => {
  it('delivers each message exactly as sent, one per data event, through a server', async () => {
    const [client, peer] = await pairViaServer();
    const sent = SIZES.map((n, i) => pattern(n, i + 1));
    const received: Buffer[] = [];
    const all = new Promise<void>((resolve) => {
      peer.on('data', (m: Buffer) => {
        received.push(m);
        if (received.length === sent.length) resolve();
      });
    });
    for (const m of sent) client.write(m);
    await all;
    expect(received.map((m) => m.length)).toEqual(SIZES);
    received.forEach((m, i) => expect(m.equals(sent[i]!), `message ${i} (${SIZES[i]} bytes)`).toBe(true));
  });

  it('keeps boundaries for hundreds of small messages written in one tick and across ticks', async () => {
    const [a, b] = socketPair('seqpacket');
    sockets.push(a, b);
    const sent: Buffer[] = [];
    for (let i = 0; i < 600; i++) sent.push(pattern(1 + ((i * 37) % 300), 1000 + i));
    const received: Buffer[] = [];
    const all = new Promise<void>((resolve) => {
      b.on('data', (m: Buffer) => {
        received.push(m);
        if (received.length === sent.length) resolve();
      });
    });
    // Half in one tick (they leave in one flush), half one per tick.
    for (const m of sent.slice(0, 300)) a.write(m);
    for (const m of sent.slice(300)) {
      a.write(m);
      await new Promise((r) => setImmediate(r));
    }
    await all;
    expect(received.length).toBe(sent.length);
    received.forEach((m, i) => expect(m.equals(sent[i]!), `message ${i}`).toBe(true));
  });
});

describe('seqpacket end of stream', () => {
  it('messages that arrive together with the end are all delivered, then end', async () => {
    const [a, b] = socketPair('seqpacket');
    sockets.push(a, b);
    b.pause();
    const sent = [1, 2, 3, 4, 5].map((i) => pattern(i * 11, i));
    for (const m of sent) a.write(m);
    a.end();
    await once(a, 'finish');
    const received: Buffer[] = [];
    b.on('data', (m: Buffer) => received.push(m));
    b.resume();
    await once(b, 'end');
    expect(received.length).toBe(sent.length);
    received.forEach((m, i) => expect(m.equals(sent[i]!)).toBe(true));
  });
});

describe('seqpacket fd passing', () => {
  it('send() attaches fds to their own message, readable on the other side', async () => {
    const [client, peer] = await pairViaServer();
    const files = [0, 1, 2, 3].map((i) => {
      const p = join(dir.path, `f${i}.txt`);
      writeFileSync(p, `contents of file ${i}`);
      return openSync(p, 'r');
    });
    const got: Array<{ data: string; contents: string[] }> = [];
    const done = new Promise<void>((resolve) => {
      peer.setReceiver((data, fds) => {
        const taken = fds ? fds.take() : [];
        got.push({ data: data.toString(), contents: taken.map(readThrough) });
        for (const fd of taken) closeSync(fd);
        if (got.length === 5) resolve();
      });
    });
    client.send(Buffer.from('one'), [files[0]!]);
    client.write(Buffer.from('no fds here'));
    client.send(Buffer.from('two'), [files[1]!, files[2]!]);
    client.send([Buffer.from('three, '), Buffer.from('gathered')], [files[3]!]);
    client.send(Buffer.from('all four'), files);
    await done;
    for (const fd of files) closeSync(fd);
    expect(got).toEqual([
      { data: 'one', contents: ['contents of file 0'] },
      { data: 'no fds here', contents: [] },
      { data: 'two', contents: ['contents of file 1', 'contents of file 2'] },
      { data: 'three, gathered', contents: ['contents of file 3'] },
      { data: 'all four', contents: [0, 1, 2, 3].map((i) => `contents of file ${i}`) },
    ]);
  });

  it('an empty message that carries fds is delivered (it is not end-of-stream)', async () => {
    const [a, b] = socketPair('seqpacket');
    sockets.push(a, b);
    const p = join(dir.path, 'e.txt');
    writeFileSync(p, 'carried by an empty message');
    const fd = openSync(p, 'r');
    const got = new Promise<{ length: number; contents: string }>((resolve) => {
      b.setReceiver((data, fds) => {
        const [x] = fds!.take();
        const contents = readThrough(x!);
        closeSync(x!);
        resolve({ length: data.length, contents });
      });
    });
    a.send(Buffer.alloc(0), [fd]);
    expect(await got).toEqual({ length: 0, contents: 'carried by an empty message' });
    closeSync(fd);
    expect(b.readableEnded).toBe(false);
  });
});

describe('seqpacket limits', () => {
  it('a message larger than maxMessageSize destroys the receiver with EMSGSIZE and closes its fds', async () => {
    const [client, peer] = await pairViaServer({ maxMessageSize: 1000 });
    // The marker travels with the oversized message.
    const { marker, watcherEnded } = markerFd();

    const messages: number[] = [];
    peer.on('data', (m: Buffer) => messages.push(m.length));
    const failed = once(peer, 'error') as Promise<[AfunixError]>;
    client.write(pattern(1000, 1)); // exactly the limit: fine
    client.send(pattern(1001, 2), [marker]); // one byte too many
    const [err] = await failed;
    expect(err.code).toBe('EMSGSIZE');
    expect(err.syscall).toBe('recvmsg');
    expect(typeof err.errno).toBe('number');
    expect(messages).toEqual([1000]);
    expect(peer.destroyed).toBe(true);
    // Our own copy is the last one standing; once it goes, the watcher ends.
    closeSync(marker);
    await watcherEnded;
  });

  it('fds of messages read in the same batch after an oversized one are closed, not leaked', async () => {
    const [client, peer] = await pairViaServer({ maxMessageSize: 1000 });
    const { marker, watcherEnded } = markerFd();
    peer.pause(); // let all three queue up, so that one read takes them together
    const failed = once(peer, 'error') as Promise<[AfunixError]>;
    client.write(pattern(10, 1));
    client.write(pattern(1001, 2));
    client.send(pattern(10, 3), [marker]);
    await new Promise((r) => setTimeout(r, 50));
    peer.resume();
    expect((await failed)[0].code).toBe('EMSGSIZE');
    closeSync(marker);
    await watcherEnded;
  });

  it('refuses an empty message without fds with ERR_AFUNIX_EMPTY, from send() and from write()', async () => {
    const [a, b] = socketPair('seqpacket');
    sockets.push(a, b);
    let thrown: AfunixError | undefined;
    try {
      a.send(Buffer.alloc(0));
    } catch (e) {
      thrown = e as AfunixError;
    }
    expect(thrown?.code).toBe('ERR_AFUNIX_EMPTY');
    // The socket is still usable after send() refused.
    const first = once(b, 'data') as Promise<[Buffer]>;
    a.write('still here');
    expect((await first)[0].toString()).toBe('still here');

    // write() cannot throw, so it fails the socket instead of letting the
    // peer read an empty message as end-of-stream.
    const failed = once(a, 'error') as Promise<[AfunixError]>;
    const peerEnded = once(b, 'end').then(() => {
      throw new Error('the peer read an empty write as end-of-stream');
    });
    b.resume();
    a.write(Buffer.alloc(0));
    expect((await Promise.race([failed, peerEnded]))[0].code).toBe('ERR_AFUNIX_EMPTY');
    peerEnded.catch(() => {}); // b ends later, once a is destroyed: expected
  });

  it('refuses an empty stream send() with fds (they need a byte), and the socket carries fds afterwards', async () => {
    const [a, b] = socketPair('stream');
    sockets.push(a, b);
    const p = join(dir.path, 's.txt');
    writeFileSync(p, 'after the refusal');
    const fd = openSync(p, 'r');
    expect(() => a.send(Buffer.alloc(0), [fd])).toThrow(expect.objectContaining({ code: 'ERR_AFUNIX_EMPTY' }));
    const got = new Promise<{ data: string; contents: string[] }>((resolve) => {
      b.setReceiver((data, fds) => {
        const taken = fds ? fds.take() : [];
        resolve({ data: data.toString(), contents: taken.map(readThrough) });
        for (const x of taken) closeSync(x);
      });
    });
    a.send(Buffer.from('x'), [fd]);
    expect(await got).toEqual({ data: 'x', contents: ['after the refusal'] });
    closeSync(fd);
  });
});
