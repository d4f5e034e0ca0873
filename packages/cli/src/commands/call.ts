// afunix call <socket> <method> [args...]: one call, its result as JSON.
import { type Contract, RpcCode, type RpcClient, RpcStream } from '@afunix/rpc';
import { MAX_FDS } from '@afunix/transport';
import { MAX_MESSAGE_OPTION, TIMEOUT_OPTION, type Command, maxMessageSizeFrom, nearestName, parseCommand, printHelp, requirePositionals, timeoutFrom } from '../args.js';
import { cutOff, describeService, dial, hangUp } from '../dial.js';
import { CliError, Exit, codeOf, connectionError, messageOf, usageError } from '../errors.js';
import { OpenedFiles, argumentsFromFile, argumentsFromTokens, buildArguments, releaseFifoOpens } from '../input.js';
import { exitStatusHelp } from '../exit-status.js';
import { printLine, printResult, toJson } from '../render.js';
import { INTERRUPTED, TIMED_OUT, abandonStuck, afterMs, untilInterrupted } from '../waiting.js';

const help = `Usage: afunix call <socket> <method> [args... | --args-file <path>|-] [--fd <path>]...
                   [--timeout <ms>] [--max-message-size <bytes>]

Calls a method and prints its result as JSON. A streaming method prints one
JSON line per item as the items arrive.

Arguments are JSON:
  one token that is a JSON array is the whole argument list:  add '[1, 2]'
  otherwise each token is one argument:                       add 1 2
  (a single array argument is therefore '[[1, 2]]'; put -- before a
  negative number: call s neg -- -5)
  {"$base64": "..."} is sent as a Buffer.

  --args-file <path>
                    the argument list from a file instead: one JSON array,
                    checked like command-line arguments; - reads standard
                    input (as grpcurl -d @). For arguments past what a
                    command line holds, or that should not show in ps.

  --fd <path>       open <path> read-only and pass it as an Fd (repeatable,
                    at most 253 times: what one message can carry).
                    The string "$fd0" in the arguments marks where the first
                    one goes, "$fd1" the second...; an --fd without a
                    placeholder is appended after the last argument.
  --timeout <ms>    opening the --fd files (a FIFO waits for a writer),
                    connecting, and then the call (a whole stream
                    included) may each take at most this long. Without it,
                    connecting gives up after 5000 ms and the rest waits as
                    long as it takes.
  --max-message-size <bytes>
                    the largest answer (or stream item) the server may send,
                    default 16M (16 MiB); K, M and G count KiB, MiB, GiB.
                    A larger one fails with MESSAGE_TOO_LARGE (exit 2).

Results that JSON cannot hold: Buffer {"$base64": "..."}, BigInt "123"
(a string), Map an object (string keys) or {"$map": [[k, v], ...]}, Set an
array, Date an ISO string, undefined null, NaN/Infinity strings, a received
Fd {"$fd": "<what it refers to>"} (then closed), an Error {"$error": {...}}.

${exitStatusHelp([Exit.OK, Exit.REMOTE, Exit.USAGE, Exit.CONNECTION, Exit.INTERRUPTED, Exit.BROKEN_PIPE, Exit.INTERNAL], {
  [Exit.REMOTE]: 'the method threw (its name, code and message on stderr), or the server could not send its answer',
  [Exit.USAGE]:
    'usage: a bad command line, a method the service does not have, arguments that cannot be sent, an --fd or --args-file that cannot be read, an answer larger than --max-message-size, output that cannot be written',
  [Exit.INTERRUPTED]: 'interrupted by SIGINT or SIGTERM, while connecting or during the call',
})}`;

/** Ends a call early on --timeout or on SIGINT/SIGTERM, and remembers which. */
class Interruption {
  readonly controller = new AbortController();
  reason: 'timeout' | 'signal' | null = null;
  #timer: { cancel(): void } | undefined;
  #onSignal = () => this.#stop('signal');

  constructor(readonly timeout: number | undefined) {
    if (timeout !== undefined) this.#timer = afterMs(timeout, () => this.#stop('timeout'));
    process.once('SIGINT', this.#onSignal);
    process.once('SIGTERM', this.#onSignal);
  }

  #stop(reason: 'timeout' | 'signal'): void {
    this.reason ??= reason;
    // A TimeoutError, as AbortSignal.timeout() gives: the call is cancelled
    // on the server with ETIMEDOUT, not ABORT_ERR, as --timeout means.
    this.controller.abort(reason === 'timeout' ? new DOMException(`--timeout ${this.timeout} passed`, 'TimeoutError') : new Error(reason));
  }

  dispose(): void {
    this.#timer?.cancel();
    process.off('SIGINT', this.#onSignal);
    process.off('SIGTERM', this.#onSignal);
  }
}

async function printOutcome(result: unknown): Promise<void> {
  if (!(result instanceof RpcStream)) return printResult(result);
  for await (const item of result) printLine(item);
}

function interrupted(method: string): CliError {
  return new CliError(`${method} was interrupted`, 'INTERRUPTED', Exit.INTERRUPTED);
}

function remoteFailure(err: unknown, method: string): CliError {
  const e = err as Error & { data?: unknown };
  const detail = e.data === undefined ? undefined : `  data: ${JSON.stringify(toJson(e.data))}`;
  return new CliError(`${method} threw ${e.name || 'Error'}: ${e.message}`, codeOf(err) || RpcCode.INTERNAL, Exit.REMOTE, detail);
}

/**
 * The answer could not reach us for its size: over our own limit (the
 * CLI's, announced in our hello: say how to raise it), or over the
 * server's (nothing the CLI can raise, and not the method throwing
 * either). The error says whose in `data.limitOf`; a server from before
 * that only words it ("a message of N bytes is more than the peer accepts
 * (L)" for ours, "cannot send a frame of N bytes: maxFrameSize is L" for
 * its own).
 */
function resultTooLarge(err: unknown, method: string, limit: number): CliError | null {
  if (codeOf(err) !== RpcCode.MESSAGE_TOO_LARGE) return null;
  const over = sizeLimit(err);
  if (over?.limitOf === 'receiver' && over.limit <= limit) {
    return new CliError(
      `the answer to ${method} (${over.size} bytes) is larger than the CLI accepts (${over.limit} bytes): raise the limit with --max-message-size ${over.size}`,
      RpcCode.MESSAGE_TOO_LARGE,
      Exit.USAGE,
    );
  }
  if (over?.limitOf === 'sender') {
    return new CliError(`the server cannot send the answer to ${method} (${over.size} bytes): its own limit is ${over.limit} bytes`, RpcCode.MESSAGE_TOO_LARGE, Exit.REMOTE);
  }
  return null; // the method's own failure
}

interface SizeLimit {
  size: number;
  limit: number;
  limitOf: 'receiver' | 'sender';
}

function sizeLimit(err: unknown): SizeLimit | null {
  const data = (err as { data?: Partial<SizeLimit> }).data;
  if (data && typeof data.size === 'number' && typeof data.limit === 'number' && (data.limitOf === 'receiver' || data.limitOf === 'sender')) {
    return { size: data.size, limit: data.limit, limitOf: data.limitOf };
  }
  const message = messageOf(err);
  const ours = /a message of (\d+) bytes is more than the peer accepts \((\d+)\)/.exec(message);
  if (ours) return { size: Number(ours[1]), limit: Number(ours[2]), limitOf: 'receiver' };
  const theirs = /cannot send a frame of (\d+) bytes: maxFrameSize is (\d+)/.exec(message);
  if (theirs) return { size: Number(theirs[1]), limit: Number(theirs[2]), limitOf: 'sender' };
  return null;
}

function explainCallFailure(err: unknown, method: string, address: string, stop: Interruption, client: RpcClient<Contract>, limit: number): CliError {
  if (stop.reason === 'timeout') return connectionError(`${method} did not finish within ${stop.timeout} ms`, RpcCode.TIMEOUT);
  if (stop.reason === 'signal') return interrupted(method);
  const tooLarge = resultTooLarge(err, method, limit);
  if (tooLarge) return tooLarge;
  const code = codeOf(err);
  // A connection that is gone means the error is ours, not the method's.
  if (code === RpcCode.CONNECTION_CLOSED && client.$connection === null) {
    return connectionError(`the connection to ${address} was lost during ${method}: ${messageOf(err)}`, code);
  }
  if (code === 'ERR_AFUNIX_UNSUPPORTED') return connectionError(messageOf(err), code);
  return remoteFailure(err, method);
}

// How long the CLI asks $describe for the names to suggest: a hint is not
// worth a long wait.
const SUGGEST_TIMEOUT = 2_000;
// Up to this many methods are listed when none is near the name given.
const LISTED_METHODS = 12;

/**
 * METHOD_NOT_FOUND: the name on the command line is not one the service
 * has (a usage error), with the nearest name or the list when $describe
 * can tell. Should $describe list the method after all, the error came
 * from inside it (a handler passing on a call of its own) and is its own.
 */
async function missingMethod(err: unknown, client: RpcClient<Contract>, address: string, method: string, signal: AbortSignal): Promise<CliError> {
  const offered = await methodNames(client, address, signal);
  if (offered?.includes(method)) return remoteFailure(err, method);
  return new CliError(`the service at ${address} has no method ${JSON.stringify(method)}${methodHint(offered, method, address)}`, RpcCode.METHOD_NOT_FOUND, Exit.USAGE);
}

/** The service's method names, or null when it cannot say (the hint is only a hint). */
async function methodNames(client: RpcClient<Contract>, address: string, signal: AbortSignal): Promise<string[] | null> {
  try {
    return (await describeService(client, address, SUGGEST_TIMEOUT, signal)).methods.map((m) => m.name);
  } catch {
    return null;
  }
}

function methodHint(offered: string[] | null, method: string, address: string): string {
  if (offered === null) return '';
  const near = nearestName(method, offered);
  if (near !== null) return ` (did you mean ${JSON.stringify(near)}?)`;
  if (offered.length === 0) return ' (it has none)';
  if (offered.length <= LISTED_METHODS) return ` (its methods: ${offered.join(', ')})`;
  return ` (it has ${offered.length}: afunix methods ${address} lists them)`;
}

// Why arguments cannot travel: a usage error, as the README says.
const UNSENDABLE = new Set<string>([RpcCode.ENCODE_ERROR, RpcCode.MESSAGE_TOO_LARGE, 'TOO_MANY_FDS', 'FRAME_TOO_LARGE']);

/**
 * A call that failed before it was sent: whatever went wrong happened here,
 * so it is never worded as the method throwing. Arguments that cannot
 * travel are a usage error; anything else (the connection closing under
 * us) a connection problem.
 */
async function unsent(pending: unknown, method: string, address: string): Promise<never> {
  try {
    await (pending instanceof RpcStream ? pending[Symbol.asyncIterator]().next() : pending);
  } catch (err) {
    const code = codeOf(err);
    if (UNSENDABLE.has(code)) throw new CliError(`arguments cannot be sent: ${messageOf(err)}`, code, Exit.USAGE);
    throw connectionError(`the call to ${method} could not be sent to ${address}: ${messageOf(err)}`, code || 'ESEND');
  }
  throw new Error('a call that was not sent did not fail');
}

/** More --fd files than one message can carry: refused before opening any. */
function checkFdCount(paths: readonly string[]): void {
  if (paths.length > MAX_FDS) throw usageError(`--fd was given ${paths.length} times: at most ${MAX_FDS} fds travel in one message`);
}

interface CallSetting {
  address: string;
  method: string;
  args: unknown[];
  timeout: number | undefined;
  /** --max-message-size: the most the server may send us. */
  maxMessageSize: number;
}

async function callOnce(client: RpcClient<Contract>, { address, method, args, timeout, maxMessageSize }: CallSetting): Promise<void> {
  const conn = client.$connection;
  if (!conn) throw connectionError(`the connection to ${address} closed before the call`, RpcCode.CONNECTION_CLOSED);
  const stop = new Interruption(timeout);
  const sentBefore = conn.stats.callsOut;
  try {
    const pending = conn.call(method, args, { signal: stop.controller.signal });
    // The request never left: what failed is our arguments, not the method.
    if (conn.stats.callsOut === sentBefore) await unsent(pending, method, address);
    await printOutcome(pending instanceof RpcStream ? pending : await pending);
  } catch (err) {
    if (err instanceof CliError) throw err;
    if (!stop.reason && codeOf(err) === RpcCode.METHOD_NOT_FOUND) {
      // (The hint asks the service for its names: --timeout and signals still end it.)
      const missing = await missingMethod(err, client, address, method, stop.controller.signal);
      if (!stop.reason) throw missing;
    }
    throw explainCallFailure(err, method, address, stop, client, maxMessageSize);
  } finally {
    stop.dispose();
    // --timeout and signals end the CLI now: no waiting for a peer that may be the stuck part.
    if (stop.reason) await cutOff(client);
  }
}

/** The JSON argument list: from the command line, or from --args-file (not both). */
async function argumentList(tokens: string[], argsFile: string | undefined): Promise<unknown[]> {
  if (argsFile === undefined) return argumentsFromTokens(tokens);
  if (tokens.length > 0) throw usageError('the arguments go on the command line or in --args-file, not both');
  return argumentsFromFile(argsFile);
}

export const call: Command = {
  name: 'call',
  summary: 'call a method: JSON arguments in, its result (or stream) as JSON out',
  help,
  async run(argv) {
    const { values, positionals, help: wantsHelp } = parseCommand('call', argv, {
      ...TIMEOUT_OPTION,
      ...MAX_MESSAGE_OPTION,
      fd: { type: 'string', multiple: true },
      'args-file': { type: 'string' },
    });
    if (wantsHelp) return printHelp(help);
    const [address, method, ...tokens] = requirePositionals('call', positionals, ['socket', 'method'], true);
    if (!method) throw usageError('the method name is empty');
    const timeout = timeoutFrom(values);
    const maxMessageSize = maxMessageSizeFrom(values);
    const paths = (values.fd as string[] | undefined) ?? [];
    checkFdCount(paths);
    // (A FIFO or a standard input nobody ends waits like an --fd FIFO: bounded the same way.)
    const argsFile = values['args-file'] as string | undefined;
    const list = await untilInterrupted(() => argumentList(tokens, argsFile), timeout, () => {});
    if (typeof list === 'symbol' && argsFile !== undefined && argsFile !== '-' && !releaseFifoOpens([argsFile])) {
      abandonStuck(list === INTERRUPTED ? 'SIGINT' : 'SIGTERM');
    }
    if (list === INTERRUPTED) throw interrupted(method);
    if (list === TIMED_OUT) throw usageError(`cannot read --args-file within ${timeout} ms (a FIFO or standard input waits for its writer to finish)`);
    const abandoned = new AbortController();
    const files = await untilInterrupted(() => OpenedFiles.open(paths, abandoned.signal), timeout, (late) => late.close());
    if (typeof files === 'symbol') {
      abandoned.abort();
      // A FIFO this user may read but not write: its open() cannot be
      // released, and the CLI ends by a signal (SIGINT: interrupted, 130 to
      // the shell; SIGTERM after --timeout).
      if (!releaseFifoOpens(paths)) abandonStuck(files === INTERRUPTED ? 'SIGINT' : 'SIGTERM');
    }
    if (files === INTERRUPTED) throw interrupted(method);
    if (files === TIMED_OUT) throw usageError(`cannot open the --fd files within ${timeout} ms (a FIFO waits for a writer): ${paths.join(', ')}`);
    try {
      const args = buildArguments(list, files.fds);
      // (dial() keeps to the timeout itself.)
      const dialed = await untilInterrupted(() => dial(address!, timeout, maxMessageSize), undefined, (late) => void cutOff(late.client));
      if (dialed === INTERRUPTED || dialed === TIMED_OUT) throw interrupted(method);
      const { client } = dialed;
      try {
        await callOnce(client, { address: address!, method, args, timeout, maxMessageSize });
      } finally {
        await hangUp(client);
      }
      return Exit.OK;
    } finally {
      files.close();
    }
  },
};
