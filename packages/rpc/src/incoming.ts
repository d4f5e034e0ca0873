// A call from the peer being handled here, and the context its handler sees.
import type { Credentials } from '@afunix/transport';
import type { RpcConnection } from './connection.js';
import type { Credit } from './stream.js';

// Handlers are user functions of any shape; the contract types constrain them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler = (...args: any[]) => unknown;

/** What a handler gets as its first argument, before the caller's. */
export interface CallContext<Remote = unknown> {
  readonly method: string;
  /**
   * Aborted when the caller cancels, its deadline passes, or it disconnects;
   * the reason's `code` says which: ABORT_ERR, ETIMEDOUT, CANCELLED (it
   * stopped reading the stream), CONNECTION_CLOSED.
   */
  readonly signal: AbortSignal;
  /** The caller's pid/uid/gid (null over a transport that cannot tell). */
  readonly peer: Credentials | null;
  readonly connection: RpcConnection;
  /** The caller's own methods, for calls back (a daemon asking its UI). */
  readonly remote: Remote;
}

export interface CallInfo {
  method: string;
  args: unknown[];
  context: CallContext;
}

/** Wraps every incoming call: log, measure, authorize. Call next() to run it. */
export type Interceptor = (call: CallInfo, next: () => Promise<unknown>) => Promise<unknown>;

export class IncomingCall implements CallContext {
  readonly id: number;
  readonly method: string;
  readonly connection: RpcConnection;
  readonly peer: Credentials | null;
  cancelled = false;
  credit: Credit | null = null;
  onCancel: (() => void) | null = null;
  // Most handlers never look at the signal: make the controller on demand.
  #controller: AbortController | null = null;
  #reason: unknown;

  constructor(id: number, method: string, connection: RpcConnection, peer: Credentials | null) {
    this.id = id;
    this.method = method;
    this.connection = connection;
    this.peer = peer;
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.cancelled) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  get remote(): unknown {
    return this.connection.remote;
  }

  cancel(reason: unknown): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
    this.onCancel?.();
  }
}
