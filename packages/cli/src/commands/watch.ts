// afunix watch <socket> <event...>: events as JSON lines until SIGINT/SIGTERM.
import { type Contract, MAX_EVENT_NAME, MAX_SUBSCRIPTIONS, RpcCode, type RpcClient } from '@afunix/rpc';
import { MAX_MESSAGE_OPTION, TIMEOUT_OPTION, type Command, maxMessageSizeFrom, parseCommand, printHelp, requirePositionals, timeoutFrom } from '../args.js';
import { cutOff, describeService, dial } from '../dial.js';
import { CliError, Exit, connectionError, oneLine, usageError } from '../errors.js';
import { exitStatusHelp } from '../exit-status.js';
import { printLine } from '../render.js';
import { INTERRUPTED, TIMED_OUT, untilInterrupted } from '../waiting.js';

const help = `Usage: afunix watch <socket> <event>... [--timeout <ms>] [--max-message-size <bytes>]

Subscribes to the named events and prints each one as a JSON line,
{"event": "<name>", "args": [...]}, until SIGINT (Ctrl-C) or SIGTERM; then
it closes the connection (the server drops its subscriptions) and exits 0. Once subscribed it says
so on stderr ("watching ..."): events published after that line are seen.
An event the service does not name (in its $describe answer) gets a
warning; a service that cannot describe itself is watched all the same,
after a warning that the names were not checked.

  <socket>          a path, or @name for a Linux abstract socket
  <event>...        at most 4096 names of at most 256 characters each (what
                    a server takes from one connection)
  --timeout <ms>    give up connecting after this long (default 5000)
  --max-message-size <bytes>
                    the largest event the server may send us, default 16M
                    (K, M, G: KiB, MiB, GiB); the server skips a larger one

${exitStatusHelp([Exit.OK, Exit.USAGE, Exit.CONNECTION, Exit.BROKEN_PIPE, Exit.INTERNAL], {
  [Exit.OK]: 'stopped by SIGINT or SIGTERM (also while connecting)',
  [Exit.CONNECTION]: 'the connection cannot be made, or is lost while watching',
})}`;

const RESERVED_EVENTS = ['newListener', 'removeListener'];

type Ending = { kind: 'signal' } | { kind: 'lost'; reason: Error | null };

/** Resolves on the first of SIGINT, SIGTERM or the connection going away. */
// `signal` is aborted once the watch ends, so that setup still under way
// (the $describe behind the warning) stops with it.
function untilEnd(lifecycle: NodeJS.EventEmitter): { ended: Promise<Ending>; signal: AbortSignal; dispose(): void } {
  let resolveEnded!: (e: Ending) => void;
  const ended = new Promise<Ending>((resolve) => (resolveEnded = resolve));
  const stop = new AbortController();
  const finish = (e: Ending): void => {
    resolveEnded(e);
    stop.abort();
  };
  const onSignal = () => finish({ kind: 'signal' });
  const onLost = (reason: Error | null) => finish({ kind: 'lost', reason });
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  lifecycle.on('disconnect', onLost);
  return {
    ended,
    signal: stop.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      lifecycle.off('disconnect', onLost);
    },
  };
}

function warnAboutUnknown(events: string[], offered: string[], address: string): void {
  if (offered.length === 0) return; // the service names none: anything may come
  for (const name of events.filter((e) => !offered.includes(e))) {
    process.stderr.write(`afunix: warning: ${address} does not name an event ${JSON.stringify(name)} (it names: ${offered.map((e) => oneLine(String(e))).join(', ')})\n`);
  }
}

// What a server takes from one connection (MAX_SUBSCRIPTIONS names of at
// most MAX_EVENT_NAME characters). Past either it closes the connection as
// a protocol error, which the CLI could only report as a lost connection:
// the command line is refused here instead.
/** A usage error for names no server would take (String length: the server counts UTF-16 units too). */
function checkEventLimits(events: string[]): void {
  const long = events.find((e) => e.length > MAX_EVENT_NAME);
  if (long !== undefined) {
    throw usageError(`an event name of ${long.length} characters is longer than a server accepts (at most ${MAX_EVENT_NAME}): ${JSON.stringify(long.slice(0, 32))}…`);
  }
  const count = new Set(events).size;
  if (count > MAX_SUBSCRIPTIONS) throw usageError(`${count} event names are more than one connection may watch (at most ${MAX_SUBSCRIPTIONS})`);
}

/**
 * The events the service names, or null when it cannot say: $describe only
 * serves the unknown-event warning, so a service that refuses it or answers
 * nonsense is still watched (with a warning). A lost connection is not
 * shrugged off: the watch is over.
 */
async function offeredEvents(client: RpcClient<Contract>, address: string, timeout: number | undefined, signal: AbortSignal): Promise<string[] | null> {
  try {
    return (await describeService(client, address, timeout, signal)).events;
  } catch (err) {
    if (signal.aborted) return null; // (the watch is over: nothing to warn about)
    if (!(err instanceof CliError) || err.code === RpcCode.CONNECTION_CLOSED) throw err;
    process.stderr.write(`afunix: warning: the event names are not checked: ${oneLine(err.message)} [${oneLine(err.code)}]\n`);
    return null;
  }
}

export const watch: Command = {
  name: 'watch',
  summary: 'print events as JSON lines until SIGINT/SIGTERM',
  help,
  async run(argv) {
    const { values, positionals, help: wantsHelp } = parseCommand('watch', argv, { ...TIMEOUT_OPTION, ...MAX_MESSAGE_OPTION });
    if (wantsHelp) return printHelp(help);
    const [address, ...events] = requirePositionals('watch', positionals, ['socket', 'event'], true);
    // The CLI listens on an EventEmitter, whose own 'newListener' and
    // 'removeListener' would print our own subscribing as an event.
    const reserved = events.find((e) => RESERVED_EVENTS.includes(e));
    if (reserved !== undefined) {
      throw usageError(`afunix watch cannot watch an event named ${JSON.stringify(reserved)}: the name is reserved by Node's EventEmitter, which the CLI listens on`);
    }
    checkEventLimits(events);
    const timeout = timeoutFrom(values);
    const maxMessageSize = maxMessageSizeFrom(values);
    // (dial() keeps to the timeout itself.) Stopped while connecting: a
    // watch that ends on a signal, as it would a moment later.
    const dialed = await untilInterrupted(() => dial(address!, timeout, maxMessageSize), undefined, (late) => void cutOff(late.client));
    if (dialed === INTERRUPTED || dialed === TIMED_OUT) return Exit.OK;
    const { client } = dialed;
    // Listening before anything else, so SIGINT during setup also ends cleanly.
    const end = untilEnd(client.$lifecycle as unknown as NodeJS.EventEmitter);
    try {
      // Untyped here: the CLI knows event names only from the command line.
      const emitter = client.$events as unknown as NodeJS.EventEmitter;
      for (const name of new Set(events)) emitter.on(name, (...args: unknown[]) => printLine({ event: name, args }));
      // Calls are answered in order, so once $describe answers, the server
      // has taken our subscriptions: the readiness line below is truthful.
      const offered = await offeredEvents(client, address!, timeout, end.signal);
      if (!end.signal.aborted) {
        if (offered) warnAboutUnknown(events, offered, address!);
        process.stderr.write(`afunix: watching ${events.join(', ')} on ${address} (Ctrl-C to stop)\n`);
      }
      const ending = await end.ended;
      if (ending.kind === 'lost') {
        throw connectionError(`the connection to ${address} was lost${ending.reason ? `: ${ending.reason.message}` : ''}`, 'CONNECTION_CLOSED');
      }
      return Exit.OK;
    } finally {
      end.dispose();
      // A watch ends on a signal or a lost connection: either way, at once.
      await cutOff(client);
    }
  },
};
