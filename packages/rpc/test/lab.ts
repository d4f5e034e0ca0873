// The contract of fixtures/lab-service.mjs, and a fixture that runs it.
import { join } from 'node:path';
import type { Credentials } from '@afunix/transport';
import { afterAll, beforeAll } from 'vitest';
import { type Fd, type RpcClient, connect } from '../src/index.js';
import { type Service, startService, tempDir } from './helpers.js';

export interface Trouble {
  code: string | null;
  message: string;
}

export interface Lab {
  methods: {
    add(a: number, b: number): number;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    echo(v: any): any; // (generic methods lose their type parameter: see RemoteMethod)
    record(v: unknown): void;
    delay(ms: number, value: number): number;
    fail(kind: 'rpc' | 'type' | 'string'): never;
    count(to: number): AsyncIterable<number>;
    readFd(fd: Fd): string;
    open(path: string): Fd;
    /** Answers with an fd that is not open (the kernel refuses it). */
    unsendable(): { fd: Fd };
    /** Streams 1, then an item with an fd that is not open, then (unless `last`) 3. */
    unsendableItem(last: boolean): AsyncIterable<unknown>;
    askClient(question: string): boolean;
    whoami(): { peer: Credentials | null; pid: number };
    /** Its argument (optional), and the caller's uid from its context. */
    uidFor(id?: number): { id?: number; uid: number | null };
    publish(n: number): number;
    seen(): {
      aborted: number;
      produced: number;
      streamsCancelled: number;
      recorded: unknown[];
      progress: number | null;
      progressFrom: number | null;
      /** Why handlers' signals were aborted (delay, count), in order. */
      reasons: Array<{ method: string; name: string; code: string | null; message: string }>;
    };
    big(size: number): Buffer;
    /** `({}).polluted` and Object.prototype's own keys now and before any client spoke. */
    pollution(): { polluted: unknown; protoKeys: string[]; baseline: string[] };
    /** Why connections failed the handshake, and why established ones closed, in order. */
    troubles(): { handshakeErrors: Trouble[]; disconnects: Array<Trouble | null> };
  };
  events: { tick(n: number): void };
  clientMethods: { confirm(question: string): boolean };
  clientEvents: { progress(p: number): void };
}

/**
 * Runs lab-service.mjs in its own process for the test file and connects a
 * client to it: `const lab = useLab();` then `lab.client`, `lab.service`.
 */
export function useLab(): { readonly client: RpcClient<Lab>; readonly service: Service; readonly dir: string } {
  const tmp = tempDir();
  let service: Service | undefined;
  let client: RpcClient<Lab> | undefined;
  beforeAll(async () => {
    service = await startService(join(tmp.dir, 'lab.sock'));
    client = await connect<Lab>(service.address);
  });
  afterAll(async () => {
    await client?.$close();
    await service?.stop();
    tmp.cleanup();
  });
  return {
    get client() {
      return client!;
    },
    get service() {
      return service!;
    },
    dir: tmp.dir,
  };
}
