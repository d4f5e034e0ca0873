// Command-line parsing on node:util parseArgs: every command gets --help,
// and any parse failure becomes a usage error (exit 2) that names the command.
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { Exit, usageError } from './errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

export interface Command {
  name: string;
  /** One line for the command list in `afunix --help`. */
  summary: string;
  help: string;
  run(argv: string[]): Promise<number>;
}

export interface Parsed {
  values: Values;
  positionals: string[];
  /** --help was given: print the help and do nothing else. */
  help: boolean;
}

export const TIMEOUT_OPTION = { timeout: { type: 'string' } } as const satisfies Options;
export const JSON_OPTION = { json: { type: 'boolean' } } as const satisfies Options;
export const MAX_MESSAGE_OPTION = { 'max-message-size': { type: 'string' } } as const satisfies Options;

/** The largest message the CLI takes from a server unless told otherwise (rpc's own default). */
export const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024;
// What the option may be: rpc's floor (MIN_MAX_MESSAGE_SIZE, so that an
// error can always answer) and the frame format's ceiling (a 32-bit length).
const MIN_MESSAGE_SIZE = 4096;
const MAX_MESSAGE_SIZE = 0xffff_ffff;
const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

export function parseCommand(command: string, argv: string[], options: Options): Parsed {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError(`${parseArgsProblem(err as Error)} (see afunix ${command} --help)`);
  }
  const values = parsed.values as Values;
  return { values, positionals: parsed.positionals, help: values.help === true };
}

/** Exactly the positionals a command needs, or a usage error that says which are missing. */
export function requirePositionals(command: string, positionals: string[], names: string[], allowMore = false): string[] {
  if (positionals.length < names.length) {
    throw usageError(`afunix ${command} needs ${names.slice(positionals.length).map((n) => `<${n}>`).join(' ')} (see afunix ${command} --help)`);
  }
  if (!allowMore && positionals.length > names.length) {
    throw usageError(`afunix ${command} takes ${names.length} argument(s), got ${positionals.length} (see afunix ${command} --help)`);
  }
  return positionals;
}

/** --timeout <ms>: a positive whole number of milliseconds. */
export function timeoutFrom(values: Values): number | undefined {
  const raw = values.timeout;
  if (raw === undefined) return undefined;
  const ms = Number(raw);
  if (typeof raw !== 'string' || !/^\d+$/.test(raw) || !Number.isSafeInteger(ms) || ms <= 0) {
    throw usageError(`--timeout needs a positive number of milliseconds, got ${JSON.stringify(raw)}`);
  }
  return ms;
}

/** --max-message-size <bytes>: a whole number of bytes, or of KiB, MiB, GiB with K, M, G (as curl's --max-filesize). */
export function maxMessageSizeFrom(values: Values): number {
  const raw = values['max-message-size'];
  if (raw === undefined) return DEFAULT_MAX_MESSAGE_SIZE;
  const match = typeof raw === 'string' ? /^(\d+)([KMG]?)$/i.exec(raw) : null;
  const bytes = match ? Number(match[1]) * SIZE_UNITS[match[2]!.toUpperCase()]! : NaN;
  if (!(bytes >= MIN_MESSAGE_SIZE && bytes <= MAX_MESSAGE_SIZE)) {
    throw usageError(`--max-message-size needs a whole number of bytes from ${MIN_MESSAGE_SIZE} to ${MAX_MESSAGE_SIZE} (or with K, M or G: 64M), got ${JSON.stringify(raw)}`);
  }
  return bytes;
}

/** Prints a command's help to stdout; --help always succeeds. */
export function printHelp(text: string): number {
  process.stdout.write(text);
  return Exit.OK;
}

// node:util's parseArgs explains on several lines (the hint in the last),
// and its unknown-option hint leaves a quote open: one line of our own.
function parseArgsProblem(err: Error & { code?: string }): string {
  const unknown = /^Unknown option '([^']+)'/.exec(err.message);
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
    return `unknown option ${unknown[1]} (an argument that starts with '-' goes after --, as in -- ${unknown[1]})`;
  }
  return err.message.split('\n').join(' ');
}
