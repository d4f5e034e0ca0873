// Who may connect, checked against real peer credentials (clients run as
// another uid need root to spawn: CI runs as root), and handshakes with the
// wrong service or with something that is not afunix at all.
import { chmodSync, rmSync } from 'node:fs';
import { type Server as NetServer, type Socket, createServer as createNetServer, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import type { Credentials } from '@afunix/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CallContext, type PeerPolicy, RpcCode, type RpcServer, connect, createServer } from '../src/index.js';
import { startService, tempDir } from './helpers.js';
import type { Lab } from './lab.js';
import { cleanUp, runFixture } from './procs.js';
import { helloFrame, rawPeer } from './wire.js';
import { Msg, PROTOCOL_VERSION } from '../src/protocol.js';

const NOBODY = 65534;
const tmp = tempDir();
const cleanups: Array<() => unknown> = [];

beforeAll(() => {
  // Clients running as nobody must reach the sockets in here.
  chmodSync(tmp.dir, 0o755);
});

afterAll(async () => {
  await cleanUp(cleanups);
  tmp.cleanup();
});

/** These tests spawn clients as another user; without root they fail (not skip). */
function needsRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error('this test needs root: it spawns a client as uid 65534 and checks uid 0 policies (CI runs as root; run it as root)');
  }
}

interface Who {
  methods: { whoami(): { peer: Credentials | null; pid: number } };
}

interface Refusal {
  err: Error & { code?: string };
  peer: Credentials | null;
}

/** An in-process server, reachable by any user, that records refusals and calls. */
async function policyServer(name: string, allow: PeerPolicy | undefined, service = 'lab') {
  const refusals: Refusal[] = [];
  let calls = 0;
  const server: RpcServer<Who> = createServer<Who>({
    service,
    allow,
    handlers: {
      whoami(ctx: CallContext) {
        calls++;
        return { peer: ctx.peer, pid: process.pid };
      },
    },
  });
  server.on('handshakeError', (err, peer) => refusals.push({ err, peer }));
  const address = join(tmp.dir, `${name}.sock`);
  await server.listen(address, { mode: 0o666 });
  cleanups.push(() => server.close({ timeout: 0 }));
  return { server, address, refusals, calls: () => calls };
}

/** Runs lab-client.mjs as nobody: connects, calls whoami, reports. */
async function asNobody(address: string, options: object = {}) {
  const proc = runFixture('lab-client.mjs', [address, 'whoami', JSON.stringify(options)], { uid: NOBODY, gid: NOBODY });
  cleanups.push(() => proc.kill());
  const report = await proc.next<{ ok: boolean; stage?: string; code?: string; message?: string; result?: { peer: Credentials } }>();
  return { report, pid: proc.child.pid };
}

describe('peer policies', () => {
  it("allow: 'root' admits this (root) process and reports its real credentials; nobody is refused", async () => {
    needsRoot();
    const s = await startService(join(tmp.dir, 'root-only.sock'), { allow: 'root', mode: 0o666 });
    cleanups.push(() => s.stop());
    const c = await connect<Lab>(s.address);
    cleanups.push(() => c.$close());
    const { peer, pid } = await c.whoami();
    expect(peer).toEqual({ pid: process.pid, uid: 0, gid: process.getgid!() });
    expect(pid).toBe(s.pid);
    expect(c.$peer).toEqual({ pid: s.pid, uid: 0, gid: process.getgid!() });

    const { report } = await asNobody(s.address);
    expect(report).toMatchObject({ ok: false, stage: 'connect', code: RpcCode.ACCESS_DENIED });
    expect(report.message).toContain(`uid ${NOBODY}`);
  });

  it('refuses a client of another uid with ACCESS_DENIED before any call runs', async () => {
    needsRoot();
    const s = await policyServer('same-user', 'same-user');
    const { report, pid } = await asNobody(s.address);
    expect(report).toMatchObject({ ok: false, stage: 'connect', code: RpcCode.ACCESS_DENIED });
    expect(s.refusals).toHaveLength(1);
    expect(s.refusals[0]!.err).toMatchObject({ code: RpcCode.ACCESS_DENIED });
    expect(s.refusals[0]!.peer).toEqual({ pid, uid: NOBODY, gid: NOBODY });
    expect(s.calls()).toBe(0);
    expect(s.server.connections.size).toBe(0);
    // The same server admits its own user.
    const c = await connect<Who>(s.address);
    cleanups.push(() => c.$close());
    expect((await c.whoami()).peer?.uid).toBe(process.getuid!());
  });

  it('allow: { uids: [65534] } admits nobody, and refuses root', async () => {
    needsRoot();
    const s = await policyServer('uids', { uids: [NOBODY] });
    const { report, pid } = await asNobody(s.address);
    expect(report).toMatchObject({ ok: true, result: { peer: { pid, uid: NOBODY, gid: NOBODY } } });
    expect(s.calls()).toBe(1);
    await expect(connect<Who>(s.address)).rejects.toMatchObject({ code: RpcCode.ACCESS_DENIED });
    expect(s.refusals.map((r) => r.peer?.uid)).toEqual([0]);
    expect(s.calls()).toBe(1);
  });

  it('refuses when the policy function throws', async () => {
    const seen: Credentials[] = [];
    const s = await policyServer('throws', (peer) => {
      seen.push(peer);
      throw new Error('policy bug');
    });
    await expect(connect<Who>(s.address)).rejects.toMatchObject({ code: RpcCode.ACCESS_DENIED });
    expect(seen).toEqual([{ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() }]);
    expect(s.refusals.map((r) => r.err.code)).toEqual([RpcCode.ACCESS_DENIED]);
    expect(s.calls()).toBe(0);
  });

  it('fails closed over a transport that cannot name its peer (TCP)', async () => {
    const strict = createServer<Who>({ service: 'lab', allow: 'same-user', handlers: { whoami: () => ({ peer: null, pid: 0 }) } });
    const refusals: string[] = [];
    strict.on('handshakeError', (err: Error & { code?: string }) => refusals.push(err.code!));
    const tcp: NetServer = createNetServer((socket) => void strict.serve(socket).catch(() => {}));
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => tcp.close(resolve)));
    const port = (tcp.address() as { port: number }).port;
    const socket: Socket = netConnect(port, '127.0.0.1');
    await expect(connect<Who>(socket)).rejects.toMatchObject({ code: RpcCode.ACCESS_DENIED, message: expect.stringContaining('cannot tell') });
    expect(refusals).toEqual([RpcCode.ACCESS_DENIED]);
  });
});

describe('handshake', () => {
  it('a client expecting another service gets SERVICE_MISMATCH, and so does the server', async () => {
    const s = await policyServer('mismatch', undefined, 'lab');
    const err = await connect<Who>(s.address, { service: 'billing' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: RpcCode.SERVICE_MISMATCH });
    expect((err as Error).message).toMatch(/lab.*billing/);
    expect(s.refusals.map((r) => r.err.code)).toEqual([RpcCode.SERVICE_MISMATCH]);
    expect(s.server.connections.size).toBe(0);
    // Asking for the right one (or none) works.
    const c = await connect<Who>(s.address, { service: 'lab' });
    cleanups.push(() => c.$close());
    expect((await c.whoami()).pid).toBe(process.pid);
  });

  async function notAfunix(name: string, onConnection: (socket: Socket) => void): Promise<string> {
    const address = join(tmp.dir, `${name}.sock`);
    rmSync(address, { force: true });
    const server = createNetServer(onConnection);
    await new Promise<void>((resolve) => server.listen(address, resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    return address;
  }

  it('a peer that answers with something else (HTTP) is a PROTOCOL_ERROR that says so', async () => {
    // (resume: read what the client sends, so that its close is seen and the server can close.)
    const address = await notAfunix('http', (socket) => socket.resume().end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    const err = await connect(address).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: RpcCode.PROTOCOL_ERROR });
    expect((err as Error).message).toMatch(/does not speak afunix/);
  });

  it('a peer that never answers is a HANDSHAKE_TIMEOUT, not a hang', async () => {
    const held: Socket[] = [];
    const address = await notAfunix('silent', (socket) => void held.push(socket));
    cleanups.push(() => held.forEach((s) => s.destroy()));
    const err = await connect(address, { timeout: 200 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: RpcCode.HANDSHAKE_TIMEOUT, message: 'no hello within 200 ms' });
  });

  it('a handshakeError listener that throws does not take the server down', async () => {
    let seen = 0;
    const server = createServer<Who>({ service: 'lab', allow: () => ++seen > 1, handlers: { whoami: () => ({ peer: null, pid: 2 }) } });
    server.on('handshakeError', () => {
      throw new Error('a bug in the listener');
    });
    const reported: string[] = [];
    server.on('error', (err: Error) => reported.push(err.message));
    const address = join(tmp.dir, 'throwing-listener.sock');
    await server.listen(address);
    cleanups.push(() => server.close({ timeout: 0 }));
    // Refused while the listener throws: the refusal still reaches the client.
    await expect(connect<Who>(address)).rejects.toMatchObject({ code: RpcCode.ACCESS_DENIED });
    expect(reported).toEqual(['a bug in the listener']);
    const c = await connect<Who>(address);
    cleanups.push(() => c.$close());
    expect((await c.whoami()).pid).toBe(2);
  });

  it('a server whose client never says hello drops it with HANDSHAKE_TIMEOUT and keeps serving', async () => {
    const refusals: string[] = [];
    const server = createServer<Who>({ service: 'lab', handshakeTimeout: 200, handlers: { whoami: () => ({ peer: null, pid: 1 }) } });
    server.on('handshakeError', (err: Error & { code?: string }) => refusals.push(err.code!));
    const address = join(tmp.dir, 'mute-client.sock');
    await server.listen(address);
    cleanups.push(() => server.close({ timeout: 0 }));
    const mute = netConnect(address);
    mute.on('error', () => {});
    await new Promise((resolve) => mute.once('end', resolve).resume());
    mute.destroy();
    expect(refusals).toEqual([RpcCode.HANDSHAKE_TIMEOUT]);
    const c = await connect<Who>(address);
    cleanups.push(() => c.$close());
    expect((await c.whoami()).pid).toBe(1);
  });
});

describe('handshake failures with a throwing handshakeError listener', () => {
  function throwingServer(name: string, options: { handshakeTimeout?: number } = {}) {
    const server = createServer<Who>({ service: 'lab', ...options, handlers: { whoami: () => ({ peer: null, pid: 3 }) } });
    const reported: string[] = [];
    server.on('handshakeError', (err: Error & { code?: string }) => {
      throw new Error(`listener bug (${err.code})`);
    });
    server.on('error', (err: Error) => reported.push(err.message));
    const address = join(tmp.dir, `${name}.sock`);
    cleanups.push(() => server.close({ timeout: 0 }));
    return { server, address, reported };
  }

  it('a timeout: the listener error reaches the server error listeners, and the server goes on', async () => {
    const { server, address, reported } = throwingServer('throwing-timeout', { handshakeTimeout: 100 });
    await server.listen(address);
    const mute = netConnect(address);
    mute.on('error', () => {});
    await new Promise((resolve) => mute.once('end', resolve).resume());
    mute.destroy();
    expect(reported).toEqual(['listener bug (HANDSHAKE_TIMEOUT)']);
    const c = await connect<Who>(address);
    cleanups.push(() => c.$close());
    expect((await c.whoami()).pid).toBe(3);
  });

  it('a service mismatch: the client still gets SERVICE_MISMATCH', async () => {
    const { server, address, reported } = throwingServer('throwing-mismatch');
    await server.listen(address);
    await expect(connect<Who>(address, { service: 'other' })).rejects.toMatchObject({ code: RpcCode.SERVICE_MISMATCH });
    expect(reported).toEqual(['listener bug (SERVICE_MISMATCH)']);
  });

  it('a peer told of a mismatch that keeps its end open is cut off after a grace period', async () => {
    const server = createServer<Who>({ service: 'lab', handlers: { whoami: () => ({ peer: null, pid: 4 }) } });
    const address = join(tmp.dir, 'stubborn.sock');
    const listener = await server.listen(address);
    cleanups.push(() => server.close({ timeout: 0 }));
    const peer = await rawPeer(address);
    cleanups.push(() => peer.destroy());
    peer.send(helloFrame({ protocol: PROTOCOL_VERSION, service: 'other', streams: [] }));
    const [kind, reply] = await peer.nextMessage();
    expect(kind).toBe(Msg.HELLO);
    expect((reply as { error?: { code?: string } }).error).toMatchObject({ code: RpcCode.SERVICE_MISMATCH });
    // The raw peer never ends its side; the server does not wait for it forever.
    expect(listener.connections).toBe(1);
    const deadline = Date.now() + 6_000;
    while (listener.connections > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(listener.connections).toBe(0);
  }, 10_000);

  it('a bad maxMessageSize is refused when the server is made, not on every connection', () => {
    expect(() => createServer<Who>({ service: 'lab', maxMessageSize: 1.5, handlers: { whoami: () => ({ peer: null, pid: 5 }) } })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
  });
});
