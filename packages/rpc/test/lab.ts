// The contract of fixtures/lab-service.mjs.
import type { Credentials } from '@afunix/transport';
import type { Fd } from '../src/index.js';

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
    askClient(question: string): boolean;
    whoami(): { peer: Credentials | null; pid: number };
    publish(n: number): number;
    seen(): { aborted: number; produced: number; streamsCancelled: number; recorded: unknown[]; progress: number | null };
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
