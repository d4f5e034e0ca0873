// Validation through Standard Schema (zod here), interceptors, stats,
// introspection and NODE_DEBUG logging.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { type CallInfo, RpcCode, RpcError, RpcServer, connect } from '../src/index.js';
import { type Validator, validateArgs } from '../src/validation.js';
import { fixtures, tempDir } from './helpers.js';

interface Users {
  methods: {
    create(name: string, age: number): { name: string; age: number };
    find(id: number): string;
  };
  events: { created(name: string): void };
}

const tmp = tempDir();
afterAll(() => tmp.cleanup());

async function start(intercept?: (call: CallInfo, next: () => Promise<unknown>) => Promise<unknown>) {
  const server = new RpcServer<Users>({
    service: 'users',
    version: '3.1.0',
    events: ['created'],
    schemas: { create: z.tuple([z.string().min(1), z.number().int().min(0)]) },
    intercept,
    handlers: {
      create: (_ctx, name, age) => ({ name, age }),
      find: (_ctx, id) => {
        if (id === 0) throw new RpcError('no such user', { code: 'E_NO_USER', data: { id } });
        return `user${id}`;
      },
    },
  });
  const path = join(tmp.dir, `users-${Math.random().toString(36).slice(2)}.sock`);
  await server.listen(path);
  return { server, client: await connect<Users>(path) };
}

describe('validation', () => {
  it('an issue whose path holds a symbol is INVALID_ARGUMENTS, the key shown as a string', () => {
    const validator = { '~standard': { version: 1, vendor: 'test', validate: () => ({ issues: [{ message: 'bad', path: [Symbol('s')] }] }) } };
    let thrown: unknown;
    try {
      validateArgs(validator as unknown as Validator, 'add', [1]);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toMatchObject({ code: RpcCode.INVALID_ARGUMENTS, message: expect.stringContaining('Symbol(s)'), data: { issues: [{ path: ['Symbol(s)'] }] } });
  });

  it('rejects bad arguments with INVALID_ARGUMENTS and the issues, before the handler runs', async () => {
    const { server, client } = await start();
    try {
      expect(await client.create('ada', 36)).toEqual({ name: 'ada', age: 36 });
      const err = await client.create('', -1).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: RpcCode.INVALID_ARGUMENTS });
      const issues = (err as RpcError).data as { issues: Array<{ path: unknown[] }> };
      expect(issues.issues.map((i) => i.path)).toEqual([[0], [1]]);
      await expect((client as unknown as { create(a: unknown): Promise<unknown> }).create(42)).rejects.toMatchObject({
        code: RpcCode.INVALID_ARGUMENTS,
      });
    } finally {
      await client.$close();
      await server.close();
    }
  });
});

describe('introspection', () => {
  it('describes the service, streams, events and argument schemas', async () => {
    const { server, client } = await start();
    try {
      const d = await client.$describe();
      expect(d).toMatchObject({ service: 'users', version: '3.1.0', protocol: 1, events: ['created'] });
      const create = d.methods.find((m) => m.name === 'create')!;
      expect(create.stream).toBe(false);
      expect(create.args).toMatchObject({ type: 'array' });
      expect(d.methods.find((m) => m.name === 'find')).toEqual({ name: 'find', stream: false });
    } finally {
      await client.$close();
      await server.close();
    }
  });
});

describe('observability', () => {
  it('runs every call through the interceptor, with its method, arguments and outcome', async () => {
    const log: string[] = [];
    const { server, client } = await start(async (call, next) => {
      try {
        const result = await next();
        log.push(`${call.method}(${JSON.stringify(call.args)}) ok pid=${call.context.peer?.pid}`);
        return result;
      } catch (err) {
        log.push(`${call.method} failed ${(err as RpcError).code}`);
        throw err;
      }
    });
    try {
      await client.find(7);
      await client.find(0).catch(() => {});
      expect(log).toEqual([`find([7]) ok pid=${process.pid}`, 'find failed E_NO_USER']);
      const stats = client.$connection!.stats;
      expect(stats.callsOut).toBe(2);
      expect(stats.inFlightOut).toBe(0);
      expect(stats.framesOut).toBeGreaterThanOrEqual(3); // hello + 2 calls
      expect(stats.bytesIn).toBeGreaterThan(0);
    } finally {
      await client.$close();
      await server.close();
    }
  });

  it('logs through NODE_DEBUG=afunix, like Node core modules', async () => {
    const child = spawn(process.execPath, [join(fixtures, 'debug-probe.mjs'), tmp.dir], {
      env: { ...process.env, NODE_DEBUG: 'afunix' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let debug = '';
    child.stderr!.on('data', (d) => (debug += d));
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(debug).toMatch(/^AFUNIX \d+: /m);
  });
});
