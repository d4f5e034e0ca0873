// Fd.transfer() gives a descriptor away: it is closed exactly once, whether
// the message carrying it leaves or not.
import { openSync } from 'node:fs';
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { Fd, RpcCode, type RpcClient, connect, createServer } from '../src/index.js';
import { eventually, openFdCount } from './helpers.js';

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
      const before = openFdCount();
      const signal = AbortSignal.abort();
      for (let i = 0; i < 5; i++) {
        await expect(client.$with({ signal }).ping(Fd.transfer(openNull()))).rejects.toMatchObject({ code: RpcCode.ABORTED });
      }
      expect(openFdCount()).toBe(before);
    } finally {
      await close();
    }
  });

  it('on a closed connection: the call fails and the fd is closed', async () => {
    const { client, close } = await broker();
    try {
      const connection = client.$connection!;
      connection.close();
      const before = openFdCount();
      for (let i = 0; i < 5; i++) {
        await expect(connection.call('ping', [new Map([['fd', Fd.transfer(openNull())]])])).rejects.toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
      }
      expect(openFdCount()).toBe(before);
    } finally {
      await close();
    }
  });

  it('with arguments that cannot travel: the call fails and the fd is closed', async () => {
    const { client, close } = await broker();
    try {
      const before = openFdCount();
      for (let i = 0; i < 5; i++) {
        await expect(client.ping(() => 1, Fd.transfer(openNull()))).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
      }
      expect(openFdCount()).toBe(before);
    } finally {
      await close();
    }
  });
});
