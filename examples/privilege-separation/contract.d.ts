// What the broker offers the worker: opening files, by its own rules.
import type { Fd } from '@afunix/rpc';

export interface Broker {
  methods: {
    /** An open, read-only descriptor for a file on the broker's list (E_NOT_ALLOWED otherwise). */
    open(path: string): Fd;
  };
}
