// Interoperability with an independent implementation: a python3 peer that
// uses only the standard library (socket.send_fds / recv_fds, SO_PEERCRED).
// Bytes and fds go both ways, and each side sees the other's credentials.
import { once } from 'node:events';
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connect, type ConnectionType, createServer, type UnixServer, type UnixSocket } from '../src/index.js';
import { type Child, destroyAll, fdTarget, pythonChild, tempDir, waitFor } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let server: UnixServer | undefined;
let child: Child | undefined;
const sockets: UnixSocket[] = [];
const opened: number[] = [];
beforeEach(() => {
  dir = tempDir();
});
afterEach(async () => {
  child?.kill();
  child = undefined;
  await destroyAll(sockets);
  await server?.close();
  server = undefined;
  for (const fd of opened.splice(0)) closeSync(fd);
  dir.remove();
});

function read(fd: number, position: number | null): string {
  const buf = Buffer.alloc(4096);
  return buf.toString('utf8', 0, readSync(fd, buf, 0, buf.length, position));
}

/** Everything python sends, with the fds that came along (taken: ours now). */
function receive(sock: UnixSocket, bytes: number): Promise<{ data: string; fds: number[] }> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const fds: number[] = [];
    let length = 0;
    sock.setReceiver((data, received) => {
      if (received) fds.push(...received.take());
      parts.push(Buffer.from(data));
      length += data.length;
      if (length >= bytes) resolve({ data: Buffer.concat(parts).toString(), fds });
    });
  });
}

async function exchange(type: ConnectionType, sock: UnixSocket, py: Child): Promise<void> {
  const fromPython = receive(sock, 'hello from python'.length);

  // Python's SO_PEERCRED names this process; ours names the python process.
  const creds = await py.next<{ pid: number; peercred: number[] }>();
  expect(creds.pid).toBe(py.pid);
  expect(creds.peercred).toEqual([process.pid, process.getuid!(), process.getgid!()]);
  expect(sock.peerCredentials()).toEqual({ pid: py.pid, uid: process.getuid!(), gid: process.getgid!() });

  // python -> node: the bytes, and a file and a pipe we read through.
  expect(await py.next()).toEqual({ sent: true });
  const got = await fromPython;
  opened.push(...got.fds);
  expect(got.data).toBe('hello from python');
  expect(got.fds.length).toBe(2);
  const [fileFd, pipeFd] = got.fds as [number, number];
  expect(fdTarget(fileFd)).toBe(join(dir.path, 'from-python.txt'));
  expect(read(fileFd, 0)).toBe('file written by python');
  expect(fdTarget(pipeFd)).toMatch(/^pipe:\[\d+\]$/);
  expect(read(pipeFd, null)).toBe('pipe filled by python');

  // node -> python: python reads our files through the fds it received.
  const paths = ['a', 'b'].map((n) => join(dir.path, `from-node-${n}.txt`));
  paths.forEach((p, i) => writeFileSync(p, `node file ${i} over ${type}`));
  const ours = paths.map((p) => openSync(p, 'r'));
  opened.push(...ours);
  sock.send(Buffer.from(`hello from node over ${type}`), ours);
  expect(await py.next()).toEqual({
    received: `hello from node over ${type}`,
    contents: [`node file 0 over ${type}`, `node file 1 over ${type}`],
    targets: paths,
    truncated: false,
  });
  expect(await py.exited).toEqual({ code: 0, signal: null });
}

describe.each(['stream', 'seqpacket'] as const)('python3 peer over %s', (type) => {
  it('python connects to our server: bytes and fds both ways, credentials both ways', async () => {
    server = createServer({ type });
    const path = join(dir.path, 'py.sock');
    await server.listen(path);
    const accepted = once(server, 'connection') as Promise<[UnixSocket]>;
    child = pythonChild('py_peer.py', [type, 'client', path, dir.path]);
    const [sock] = await accepted;
    sockets.push(sock);
    await exchange(type, sock, child);
  });

  it('we connect to a python server: bytes and fds both ways, credentials both ways', async () => {
    const path = join(dir.path, 'pyserver.sock');
    child = pythonChild('py_peer.py', [type, 'server', path, dir.path]);
    expect(await child.next()).toEqual({ listening: true });
    const sock = await connect(path, { type });
    sockets.push(sock);
    expect(sock.type).toBe(type);
    await exchange(type, sock, child);
  });
});

describe('python3 peer over seqpacket, sending an empty message', () => {
  it('is not taken for the end of the stream while the peer is connected: what follows arrives, the end comes when it goes', async () => {
    const path = join(dir.path, 'empty.sock');
    server = createServer({ type: 'seqpacket' });
    await server.listen(path);
    const accepted = once(server, 'connection');
    child = pythonChild('py_empty_message.py', [path], { stdio: ['pipe', 'pipe', 'inherit'] });
    const [sock] = (await accepted) as [UnixSocket];
    sockets.push(sock);
    const messages: string[] = [];
    let ended = false;
    sock.on('data', (m: Buffer) => messages.push(m.toString()));
    sock.on('end', () => (ended = true));
    expect(await child.next()).toEqual({ sent: true });
    await waitFor(() => messages.length === 2, () => JSON.stringify(messages));
    expect(messages).toEqual(['before', 'after']);
    expect(ended).toBe(false);
    child.kill();
    await waitFor(() => ended, () => 'the end after python went');
  });

  it('nor when the peer has already closed when it is read: what follows it still arrives, then the end', async () => {
    const path = join(dir.path, 'empty-closed.sock');
    server = createServer({ type: 'seqpacket' });
    await server.listen(path);
    const accepted = once(server, 'connection');
    child = pythonChild('py_empty_message.py', [path, 'close'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const [sock] = (await accepted) as [UnixSocket];
    sockets.push(sock);
    expect(await child.next()).toEqual({ sent: true }); // all three sent, and the socket closed, before we read
    const messages: string[] = [];
    let ended = false;
    sock.on('data', (m: Buffer) => messages.push(m.toString()));
    sock.on('end', () => (ended = true));
    await waitFor(() => ended, () => JSON.stringify(messages));
    expect(messages).toEqual(['before', 'after']);
  });
});
