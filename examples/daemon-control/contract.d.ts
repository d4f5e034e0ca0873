// The daemon's control API: what ctl.mjs (or `afunix call`) may ask of it.

export interface Config {
  /** Said in every heartbeat log entry. */
  greeting: string;
  /** Milliseconds between heartbeats. */
  heartbeatMs: number;
}

export interface LogEntry {
  /** ISO 8601. */
  time: string;
  level: 'info' | 'warn' | 'debug';
  message: string;
}

export interface Status {
  pid: number;
  uptimeMs: number;
  /** 'systemd' when the socket came from socket activation (listenFds()). */
  startedBy: 'systemd' | 'itself';
  socket: string;
  configFile: string | null;
  config: Config;
  reloads: number;
  /** Connected control clients, this one included. */
  clients: number;
}

export interface Control {
  methods: {
    status(): Status;
    /** Re-reads the config file; E_BAD_CONFIG (and the old config kept) if it is not valid. */
    reload(): { changed: Array<keyof Config> };
    /** Shuts down gracefully once this call has been answered. */
    stop(): 'stopping';
  };
  events: {
    /** Every log entry, as the daemon writes it. */
    log(entry: LogEntry): void;
  };
}
