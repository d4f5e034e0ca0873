// A server's options and publish() arguments are checked where they are
// given: a wrong one would otherwise show later and elsewhere (every
// handshake refused, a limit silently gone, every call failing).
import { fstatSync } from 'node:fs';
import { closeFd, socketPairFds } from '@afunix/transport';
import { describe, expect, it } from 'vitest';
import { Fd, RpcServer, connect, createServer } from '../src/index.js';
import { tempDir } from './helpers.js';

const base = { service: 'opts', handlers: { add: (_ctx: unknown, a: number, b: number) => a + b } };

describe('server options', () => {
  it('refuses each option that cannot work with ERR_INVALID_ARG_VALUE, naming it', () => {
    const bad: Array<[string, Record<string, unknown>]> = [
      ['service', { service: '' }],
      ['version', { version: 3 }],
      ['handlers', { handlers: null }],
      ['handlers.$x', { handlers: { $x: () => 1 } }],
      ['schemas.add', { schemas: { add: 42 } }],
      ['allow', { allow: 'same_user' }],
      ['allow', { allow: null }],
      ['allow', { allow: { uids: 1000 } }],
      ['exposeStack', { exposeStack: 'yes' }],
      ['maxInFlight', { maxInFlight: 'x' }],
      ['maxInFlight', { maxInFlight: Number.NaN }],
      ['maxOutboundBytes', { maxOutboundBytes: '64mb' }],
      ['maxOutboundBytes', { maxOutboundBytes: -1 }],
      ['intercept', { intercept: 'x' }],
      ['handshakeTimeout', { handshakeTimeout: 'abc' }],
      ['handshakeTimeout', { handshakeTimeout: -5 }],
      ['events', { events: 'tick' }],
    ];
    for (const [name, options] of bad) {
      expect(() => new RpcServer({ ...base, ...options } as never), JSON.stringify(options)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining(`'${name}'`) }),
      );
    }
    expect(() => new RpcServer({ ...base, allow: { uids: [0] }, maxOutboundBytes: Infinity, handshakeTimeout: Infinity })).not.toThrow();
    // What worked before stays: data fields beside the handlers (reached
    // through \`this\`), no limit, and null for an option left out.
    const unset = null as unknown as undefined;
    const handlers = { count: 0, inc(this: { count: number }) { return ++this.count; } };
    expect(() => new RpcServer({ service: 'opts', handlers, maxInFlight: Infinity, version: unset, exposeStack: unset, intercept: unset, schemas: { inc: unset } })).not.toThrow();
    expect(() => new RpcServer({ ...base, version: 3 } as never)).toThrow(/received 3$/);
    // maxMessageSize is checked as itself (it was reported as 'maxFrameSize').
    for (const maxMessageSize of ['5000', 5000.5, 2 ** 40, Infinity]) {
      expect(() => new RpcServer({ ...base, maxMessageSize } as never), String(maxMessageSize)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining("'maxMessageSize'") }),
      );
    }
    expect(() => new RpcServer({ ...base, intercept: 'x' } as never)).toThrow(/received a string$/);
  });

  it('refuses a class instance whose methods are all on its prototype (handlers, a client\'s expose); own methods of one still serve', async () => {
    class Impl {
      factor = 2;
      add(_ctx: unknown, a: number, b: number) {
        return (a + b) * this.factor;
      }
    }
    class Child extends Impl {}
    for (const handlers of [new Impl(), new Child()]) {
      expect(() => new RpcServer({ service: 'opts', handlers } as never)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/'handlers'.*Impl\.prototype\.add.*add: impl\.add\.bind\(impl\)/) }),
      );
    }
    // A client's expose is checked at connect(), before any socket (it hung: the throw came after the handshake).
    await expect(connect('/nonexistent/x.sock', { expose: new Impl() } as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining("'expose'") });
    // Methods as own properties (arrow fields, or listed) are served, `this`
    // being the object; helpers on the prototype are left alone.
    class Fields {
      factor = 3;
      add = (_ctx: unknown, a: number, b: number) => this.scale(a + b);
      private scale(n: number) {
        return n * this.factor;
      }
    }
    const impl = new Impl();
    const dir = tempDir();
    const servers = [new RpcServer({ service: 'a', handlers: new Fields() }), new RpcServer({ service: 'b', handlers: { add: impl.add.bind(impl) } })];
    try {
      const answers = [];
      for (const [i, server] of servers.entries()) {
        await server.listen(`${dir.dir}/${i}.sock`);
        const client = await connect<{ methods: { add(a: number, b: number): number; scale(n: number): number } }>(`${dir.dir}/${i}.sock`);
        answers.push(await client.add(1, 2));
        await expect(client.scale(1)).rejects.toMatchObject({ code: 'METHOD_NOT_FOUND' });
        await client.$close();
      }
      expect(answers).toEqual([9, 6]);
    } finally {
      for (const server of servers) await server.close();
      dir.cleanup();
    }
  });

  it('null options are left out, also in the hello (version: null broke every handshake)', async () => {
    const dir = tempDir();
    const unset = null as unknown as undefined;
    const server = new RpcServer({ ...base, version: unset, maxMessageSize: unset, maxInFlight: unset, handshakeTimeout: unset });
    try {
      await server.listen(`${dir.dir}/null.sock`);
      const client = await connect(`${dir.dir}/null.sock`, { service: unset, timeout: unset, maxOutboundBytes: unset, reconnect: unset });
      expect(client.$server).toMatchObject({ service: base.service });
      expect(client.$server).not.toHaveProperty('version');
      await client.$close();
      // Options inherited by the object given count, as they did.
      await expect(connect(`${dir.dir}/null.sock`, Object.create({ service: 'another' }))).rejects.toMatchObject({ code: 'SERVICE_MISMATCH' });
    } finally {
      await server.close();
      dir.cleanup();
    }
  });

  it("connect() refuses each of its options that cannot work with ERR_INVALID_ARG_VALUE, naming it, before dialling", async () => {
    const bad: Array<[string, unknown]> = [
      ['options', 'fast'],
      ['service', { service: 5 }],
      ['service', { service: '' }],
      ['expose', { expose: 'x' }],
      ['maxMessageSize', { maxMessageSize: '5000' }],
      ['maxOutboundBytes', { maxOutboundBytes: 'x' }],
      ['maxOutboundBytes', { maxOutboundBytes: 0 }],
      ['maxInFlight', { maxInFlight: 0 }],
      ['exposeStack', { exposeStack: 'yes' }],
      ['intercept', { intercept: 1 }],
    ];
    for (const [name, options] of bad) {
      // (No server at that path: a check made after dialling would fail with ENOENT.)
      await expect(connect('/nonexistent/afunix.sock', options as never), JSON.stringify(options)).rejects.toMatchObject({
        code: 'ERR_INVALID_ARG_VALUE',
        message: expect.stringContaining(`'${name}'`),
      });
    }
  });

  it('close({ timeout }): a bad one is refused; Infinity waits for the calls in flight however long', async () => {
    const dir = tempDir();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const server = createServer<{ methods: { slow(): number } }>({ service: 'slow', handlers: { slow: async () => (await gate, 7) } });
    try {
      const path = `${dir.dir}/slow.sock`;
      await server.listen(path);
      const c = await connect<{ methods: { slow(): number } }>(path);
      await expect(server.close({ timeout: -1 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      const call = c.slow();
      await new Promise((resolve) => setTimeout(resolve, 50)); // (the call reaches the handler)
      const closing = server.close({ timeout: Infinity });
      setTimeout(release, 300); // past setTimeout's 1 ms for an out-of-range delay
      expect(await call).toBe(7);
      await closing;
      await c.$close();
    } finally {
      release();
      await server.close();
      dir.cleanup();
    }
  });

  it('publish(): a name that is not a string throws; sent to nobody, its transferred fds are closed', () => {
    const server = new RpcServer<{ events: { tick(n: unknown): void } }>({ service: 'pub', handlers: {} });
    expect(() => server.publish(7 as never, 1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(server.publish('tick', 1)).toBe(0);
    // Given away, and sent to nobody: closed all the same.
    const [mine, other] = socketPairFds();
    expect(server.publish('tick', { fd: Fd.transfer(mine) })).toBe(0);
    expect(() => fstatSync(mine)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    closeFd(other);
  });
});
