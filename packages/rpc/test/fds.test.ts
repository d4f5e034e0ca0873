// File descriptors as values: they travel inside the message, by SCM_RIGHTS.
import { once } from 'node:events';
import { closeSync, openSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { closeFd } from '@afunix/transport';
import { describe, expect, it } from 'vitest';
import { type Contract, Fd, type RpcClient, RpcServer, type RpcServerOptions, connect, createServer } from '../src/index.js';
import { addedSince, eventually, openFds } from './helpers.js';
import { useLab } from './lab.js';

const lab = useLab();

let served = 0;
// A server in this process, on its own socket in the lab's directory, and a
// client of it for `use`; both closed after.
async function withServer<C extends Contract>(
  handlers: RpcServerOptions<C>['handlers'],
  use: (client: RpcClient<C>, server: RpcServer<C>) => Promise<void>,
): Promise<void> {
  const server = new RpcServer<C>({ service: 'fds', handlers });
  const path = join(lab.dir, `fds-${++served}.sock`);
  await server.listen(path);
  const client = await connect<C>(path);
  try {
    await use(client, server);
  } finally {
    await client.$close();
    await server.close();
  }
}

function codeOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return (err as { code?: unknown }).code;
  }
  return 'no error';
}

describe('fds as values', () => {
  it('passes an fd as an argument: the other process reads the file through it', async () => {
    const file = join(lab.dir, 'secret.txt');
    writeFileSync(file, 'only through the fd');
    const fd = openSync(file, 'r');
    try {
      expect(await lab.client.readFd(Fd.from(fd))).toBe('only through the fd');
    } finally {
      closeSync(fd);
    }
  });

  it('returns an fd: the caller reads a file the other process opened', async () => {
    const file = join(lab.dir, 'opened-by-server.txt');
    writeFileSync(file, 'opened over there');
    const fd = await lab.client.open(file);
    expect(fd).toBeInstanceOf(Fd);
    expect(fd.owned).toBe(true);
    expect(readFileSync(fd.fd, 'utf8')).toBe('opened over there');
    fd.close();
    expect(fd.owned).toBe(false);
  });

  it('Fd.from() and Fd.transfer() refuse what is no fd number (2 ** 32 + 1 would travel as stdout)', () => {
    for (const bad of [2 ** 32 + 1, 1.5, -1, Number.NaN]) {
      expect(() => Fd.from(bad), String(bad)).toThrow(TypeError);
      expect(codeOf(() => Fd.from(bad)), String(bad)).toBe('ERR_INVALID_ARG_VALUE');
      expect(codeOf(() => Fd.transfer({ fd: bad })), String(bad)).toBe('ERR_INVALID_ARG_VALUE');
    }
  });

  it('an Fd taken or closed is EBADF, also as an argument: that call fails and the connection goes on', async () => {
    const fd = Fd.received(openSync(__filename, 'r'));
    closeFd(fd.take());
    expect(codeOf(() => fd.fd)).toBe('EBADF');
    await expect(lab.client.readFd(fd)).rejects.toMatchObject({ code: 'EBADF', message: 'this Fd was taken or closed' });
    const open = openSync(__filename, 'r');
    try {
      expect(await lab.client.readFd(Fd.from(open))).toContain('an Fd taken or closed');
    } finally {
      closeSync(open);
    }
  });

  it('closes fds that a handler does not take, once it settles', async () => {
    const server = new RpcServer<{ methods: { ignore(fd: Fd): number; keep(fd: Fd): number } }>({
      service: 'fds',
      handlers: {
        ignore: () => 1,
        keep: (_ctx, fd) => fd.take(),
      },
    });
    const path = join(lab.dir, 'fds.sock');
    await server.listen(path);
    const c = await connect<{ methods: { ignore(fd: Fd): number; keep(fd: Fd): number } }>(path);
    const file = openSync(__filename, 'r');
    try {
      await c.ignore(Fd.from(file)); // warm up lazily created handles
      const baseline = openFds();
      for (let i = 0; i < 200; i++) await c.ignore(Fd.from(file));
      await eventually(() => addedSince(baseline).length === 0);
      const kept = await c.keep(Fd.from(file));
      expect(addedSince(baseline)).toEqual([`${kept} ${__filename}`]); // taken: now ours to close
      closeSync(kept);
    } finally {
      closeSync(file);
      await c.$close();
      await server.close();
    }
  });
});

describe('fds in a worker thread', () => {
  it('closes received fds without the warning fs.closeSync() gives there for fds it did not open', async () => {
    // (Node warns "File descriptor N closed but not opened in unmanaged
    // mode" when a worker closes, with fs.closeSync(), an fd it did not open
    // with fs.open: every received one.)
    const file = join(lab.dir, 'for-the-worker.txt');
    writeFileSync(file, 'read in a worker');
    const worker = new Worker(new URL('./fixtures/worker-fds.mjs', import.meta.url), {
      workerData: { labAddress: lab.service.address, dir: lab.dir, file },
    });
    const [report] = (await once(worker, 'message')) as [{ text: string; warnings: string[] }];
    await once(worker, 'exit');
    expect(report.text).toBe('read in a worker');
    expect(report.warnings).toEqual([]);
  });
});

describe('Fd.transfer() in a worker thread', () => {
  it("closes the worker's fd the way fs does: the worker's exit does not close that number again, by then another file", async () => {
    // Node closes, when a worker exits, the fds it opened with fs and did
    // not close with fs. A transferred fd closed behind fs's back was closed
    // a second time then: whatever had the number by then (here, the main
    // thread's file; in a server, a client's connection).
    const file = join(lab.dir, 'transferred-by-a-worker.txt');
    writeFileSync(file, 'sent from a worker');
    const worker = new Worker(new URL('./fixtures/worker-transfer.mjs', import.meta.url), { workerData: { labAddress: lab.service.address, file } });
    const [report] = (await once(worker, 'message')) as [{ fd: number; text: string; warnings: string[] }];
    expect(report).toEqual({ fd: report.fd, text: 'sent from a worker', warnings: [] });
    const mine = openSync(file, 'r'); // the lowest free number: the one the worker had
    try {
      expect(mine).toBe(report.fd);
      worker.postMessage('exit');
      await once(worker, 'exit');
      expect(readFileSync(mine, 'utf8')).toBe('sent from a worker');
    } finally {
      closeSync(mine);
    }
  });
});

describe('received fds in a worker thread that is terminated', () => {
  it('are closed with it, though nobody closed or took them', async () => {
    const file = join(lab.dir, 'kept-by-a-worker.txt');
    writeFileSync(file, 'kept');
    const openOnFile = () => readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === file;
      } catch {
        return false; // (closed meanwhile)
      }
    }).length;
    for (let round = 0; round < 3; round++) {
      const worker = new Worker(new URL('./fixtures/worker-keeps-fd.mjs', import.meta.url), { workerData: { labAddress: lab.service.address, file } });
      await once(worker, 'message');
      expect(openOnFile()).toBe(1);
      await worker.terminate();
      expect(openOnFile()).toBe(0);
    }
  });
});

describe('a received Fd handed over (Fd.transfer(fd)) by a worker terminated before its message left', () => {
  it('is closed with the worker, as a received one is', async () => {
    const file = join(lab.dir, 'handed-over-by-a-worker.txt');
    writeFileSync(file, 'handed over');
    const stalledAddress = join(lab.dir, 'stalled.sock');
    const stalled = createServer<{ methods: { stop(): void; put(value: unknown): void } }>({
      service: 'stalled',
      handlers: { stop: (ctx) => ctx.connection.channel.pause(), put: () => {} },
    });
    await stalled.listen(stalledAddress);
    try {
      const before = openFds();
      const worker = new Worker(new URL('./fixtures/worker-hands-over.mjs', import.meta.url), {
        workerData: { labAddress: lab.service.address, stalledAddress, file },
      });
      await once(worker, 'message');
      expect(addedSince(before).filter((entry) => entry.endsWith(` ${file}`))).toHaveLength(1); // in the worker's queue
      await worker.terminate();
      await eventually(() => addedSince(before).every((entry) => !entry.endsWith(` ${file}`)));
    } finally {
      await stalled.close({ timeout: 0 });
    }
  });
});

// An fd number open nowhere in either process: the kernel refuses a
// sendmsg that carries it (EBADF) before it takes a byte.
const NOT_OPEN = 999_999;

describe('fds the kernel refuses', () => {
  it('a call whose fd is not open fails alone with EBADF; the calls around it and the connection carry on', async () => {
    const disconnects = (await lab.client.troubles()).disconnects.length;
    const around = lab.client.delay(50, 42);
    const bad = lab.client.readFd(Fd.from(NOT_OPEN));
    const transferred = openSync(__filename, 'r');
    const alsoBad = lab.client.echo([Fd.transfer(transferred), Fd.from(NOT_OPEN)]);
    await expect(bad).rejects.toMatchObject({ code: 'EBADF', syscall: 'sendmsg' });
    await expect(alsoBad).rejects.toMatchObject({ code: 'EBADF' });
    // A transferred fd is ours no longer, sent or not: closed here.
    expect(() => readFileSync(transferred)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(await around).toBe(42);
    expect(await lab.client.add(2, 3)).toBe(5);
    expect((await lab.client.troubles()).disconnects).toHaveLength(disconnects);
  });

  it('an answer whose fd is not open reaches the caller as an EBADF error', async () => {
    await expect(lab.client.unsendable()).rejects.toMatchObject({ code: 'EBADF', message: expect.stringContaining('could not be sent') });
    expect(await lab.client.add(1, 1)).toBe(2);
  });

  it('an answer whose fd is refused while the server closes still reaches the caller as EBADF', async () => {
    interface Later {
      methods: { later(): { fd: Fd }; big(): Buffer };
    }
    let started!: () => void;
    const handling = new Promise<void>((resolve) => (started = resolve));
    let answeredBig!: () => void;
    const bigAnswered = new Promise<void>((resolve) => (answeredBig = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    await withServer<Later>(
      {
        later: async () => {
          started();
          await gate;
          return { fd: Fd.from(999_999) }; // open nowhere: the kernel refuses it
        },
        big: () => {
          setImmediate(answeredBig);
          return Buffer.alloc(4 << 20);
        },
      },
      async (c, server) => {
        const call = c.later();
        await handling;
        // A big answer the client does not read yet keeps the server's
        // writes queued: the refusal of the fd comes only once it reads.
        c.$connection!.channel.pause();
        const big = c.big();
        await bigAnswered;
        // Once its last call is answered, a closing server closes the
        // connection: not before that answer's refusal has been told.
        const closing = server.close();
        release();
        setTimeout(() => c.$connection!.channel.resume(), 100);
        expect((await big).length).toBe(4 << 20);
        await expect(call).rejects.toMatchObject({ code: 'EBADF' });
        await closing;
      },
    );
  });

  it('a handler that answered with fds is not aborted while they wait to leave', async () => {
    interface Give {
      methods: { big(): Buffer; give(): { fd: Fd } };
    }
    let aborts = 0;
    let answered = 0;
    const file = openSync(__filename, 'r');
    try {
      await withServer<Give>(
        {
          big: () => Buffer.alloc(4 << 20),
          give: (ctx) => {
            ctx.signal.addEventListener('abort', () => aborts++);
            answered++;
            return { fd: Fd.from(file) };
          },
        },
        async (c) => {
          // The client does not read: the big answer fills the socket, and
          // the answers with fds after it wait in the server's queue.
          const channel = c.$connection!.channel;
          channel.pause();
          const big = c.big();
          big.catch(() => {}); // (awaited below; if the test fails first, $close rejects it)
          const impatient = c.$with({ timeout: 100 });
          const gives = [impatient.give(), impatient.give()];
          // They time out here, and the server hears CANCEL for calls it answered.
          for (const give of gives) await expect(give).rejects.toMatchObject({ code: 'ETIMEDOUT' });
          expect(answered).toBe(2);
          channel.resume();
          expect((await big).length).toBe(4 << 20);
          // Read after those CANCELs: by its answer they were handled.
          (await c.give()).fd.close();
          expect(aborts).toBe(0);
        },
      );
    } finally {
      closeSync(file);
    }
  });

  it('a stream of items with fds goes on after the reader pauses and resumes (back-pressure)', async () => {
    interface Files {
      methods: { files(n: number): AsyncIterable<{ fd: Fd; data: Buffer }> };
    }
    const file = openSync(__filename, 'r');
    try {
      await withServer<Files>(
        {
          async *files(_ctx, n) {
            for (let i = 0; i < n; i++) yield { fd: Fd.from(file), data: Buffer.alloc(100_000, i) };
          },
        },
        async (c) => {
          // Paused, the socket fills: the server's sends return false while
          // items with fds are still waiting to leave.
          const channel = c.$connection!.channel;
          channel.pause();
          setTimeout(() => channel.resume(), 300);
          let received = 0;
          for await (const item of c.files(20)) {
            expect(item.data[99_999]).toBe(received);
            item.fd.close();
            received++;
          }
          expect(received).toBe(20);
        },
      );
    } finally {
      closeSync(file);
    }
  });

  for (const last of [false, true]) {
    it(`a stream item whose fd is not open ends the stream there with EBADF and stops its producer (${last ? 'the last item' : 'items after it'})`, async () => {
      const cancelledBefore = (await lab.client.seen()).streamsCancelled;
      const disconnects = (await lab.client.troubles()).disconnects.length;
      const items: unknown[] = [];
      const reading = (async () => {
        for await (const item of lab.client.unsendableItem(last)) items.push(item);
      })();
      // Nothing after the refused item arrives, and the stream does not end as if complete.
      await expect(reading).rejects.toMatchObject({ code: 'EBADF' });
      expect(items).toEqual([1]);
      await eventually(async () => (await lab.client.seen()).streamsCancelled === cancelledBefore + 1);
      expect((await lab.client.troubles()).disconnects).toHaveLength(disconnects);
    });
  }
});
