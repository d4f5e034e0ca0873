// A worker terminated while its channel holds fds the frame handler has not
// had yet (a frame still arriving, frames held while paused): the fds are
// closed with the thread, not left open in the process for good.
import { once } from 'node:events';
import { mkdtempSync, openSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { type UnixSocket, closeFd, createServer, socketPairFds } from '@afunix/transport';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { encodeHeader } from '../src/index.js';
import { addedSince, fdTarget, openFds, waitFor } from '../../transport/test/helpers.js';

const reader = new URL('./fixtures/worker-reader.mjs', import.meta.url);
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'afunix-framing-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

// Node opens a few descriptors of its own the first time a worker starts.
beforeAll(async () => {
  const w = new Worker('', { eval: true });
  await once(w, 'exit');
});

// A worker whose channel reads from the returned socket's peer; `file` is
// the file whose copies travel to it.
async function workerWithChannel(options: { hold?: Int32Array; pauseAt?: number; adopt?: boolean } = {}) {
  const path = join(dir, 'w.sock');
  const server = createServer();
  await server.listen(path);
  const accepted = once(server, 'connection') as Promise<[UnixSocket]>;
  const worker = new Worker(reader, { workerData: { path, ...options } });
  const messages: unknown[] = [];
  worker.on('message', (m) => messages.push(m));
  const [socket] = await accepted;
  socket.on('error', () => {}); // (EPIPE once the worker is gone)
  await waitFor(() => messages.length > 0, () => 'the worker never said it was ready');
  const file = join(dir, 'passed');
  writeFileSync(file, 'passed to a worker');
  return { worker, socket, server, file, messages };
}

// Copies of `file` open in this process (the worker's included), but `own`.
function copiesOf(file: string, before: Map<number, string>, own: number): string[] {
  return addedSince(before).filter((entry) => entry.endsWith(` ${file}`) && entry !== `${own} ${file}`);
}

// Terminates the worker; then no copy of the file but `own` may be left.
async function terminatedLeavesNoCopies(setup: Awaited<ReturnType<typeof workerWithChannel>>, before: Map<number, string>, own: number) {
  const { worker, socket, server, file } = setup;
  await worker.terminate();
  await waitFor(() => copiesOf(file, before, own).length === 0, () => `left open: ${copiesOf(file, before, own).join(', ')}`);
  closeSync(own);
  socket.destroy();
  await server.close();
}

describe('a worker terminated while its channel holds fds', () => {
  it('closes the fds of a frame still arriving (it spans reads)', async () => {
    const setup = await workerWithChannel();
    const { socket, file } = setup;
    const before = openFds();
    const fd = openSync(file, 'r');
    // The header and the start of a 1 MiB frame, with its 3 fds: the rest never comes.
    socket.send(Buffer.concat([encodeHeader(1 << 20, 3), Buffer.alloc(100)]), [fd, fd, fd]);
    await waitFor(() => copiesOf(file, before, fd).length === 3, () => `the worker's copies: ${copiesOf(file, before, fd).join(', ')}`);
    await terminatedLeavesNoCopies(setup, before, fd);
  });

  it('closes the fds of whole frames held while the channel is paused', async () => {
    // The worker blocks until all four frames are in the kernel. Its first
    // read takes one (a stream reads messages in batches once fds have
    // come), its second the other three, and it pauses at the second frame:
    // two wait in the channel.
    const hold = new Int32Array(new SharedArrayBuffer(4));
    const setup = await workerWithChannel({ hold, pauseAt: 2 });
    const { socket, file, messages } = setup;
    const before = openFds();
    const fd = openSync(file, 'r');
    let inKernel = 0;
    for (let i = 0; i < 4; i++) socket.send(Buffer.concat([encodeHeader(5, 1), Buffer.from('frame')]), [fd], () => inKernel++);
    await waitFor(() => inKernel === 4, () => `${inKernel} of 4 frames sent`);
    Atomics.store(hold, 0, 1);
    Atomics.notify(hold, 0);
    await waitFor(() => messages.length === 3, () => `the worker said ${JSON.stringify(messages)}`);
    expect(messages).toEqual([{ ready: true }, { frame: 1 }, { frame: 1 }]);
    // (The second frame's fd is closed once its handler returns, which may
    // be just after its message left.)
    await waitFor(() => copiesOf(file, before, fd).length === 2, () => `the worker's copies: ${copiesOf(file, before, fd).join(', ')}`);
    await terminatedLeavesNoCopies(setup, before, fd);
  });

  it('leaves alone a number a socket adopted and closed: by then it may be another thread\'s file', async () => {
    // The worker makes a socket of a received fd without taking it; the
    // socket owns it from then on, and its close frees the number, which
    // this thread then opens a file under. The worker's end must not close
    // that number again.
    const { worker, socket, server, file, messages } = await workerWithChannel({ adopt: true });
    const [a, b] = socketPairFds();
    socket.send(Buffer.concat([encodeHeader(1, 1), Buffer.from('x')]), [a]);
    await waitFor(() => messages.length === 2, () => `the worker said ${JSON.stringify(messages)}`);
    const freed = (messages[1] as { closed: number }).closed;
    const opened: number[] = [];
    while (opened.length < 64 && !opened.includes(freed)) opened.push(openSync(file, 'r'));
    for (const fd of opened) if (fd !== freed) closeSync(fd);
    expect(opened).toContain(freed); // this thread's file holds the number now
    await worker.terminate();
    expect(fdTarget(freed)).toBe(file);
    closeSync(freed);
    closeFd(a);
    closeFd(b);
    socket.destroy();
    await server.close();
  });
});
