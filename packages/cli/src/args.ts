// Command-line parsing on node:util parseArgs: every command gets --help,
// and any parse failure becomes a usage error (exit 2) that names the command.
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { DEFAULT_MAX_MESSAGE_SIZE, MIN_MAX_MESSAGE_SIZE } from '@afunix/rpc';
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

// What --max-message-size may be: rpc's floor (so that an error can always
// answer) and the frame format's ceiling (a 32-bit length). Left out, it is
// rpc's own default (DEFAULT_MAX_MESSAGE_SIZE).
const MAX_SIZE_OPTION = 0xffff_ffff;
const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

export function parseCommand(command: string, argv: string[], options: Options): Parsed {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError(`${parseArgsProblem(err as Error, [...Object.keys(options), 'help'])} (see afunix ${command} --help)`);
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

/**
 * --timeout <ms>: a whole number of milliseconds, at least 1. Past
 * setTimeout's 2^31 - 1 the CLI waits in steps, so the ceiling is only what
 * a number holds exactly.
 */
export function timeoutFrom(values: Values): number | undefined {
  const raw = values.timeout;
  if (raw === undefined) return undefined;
  const ms = Number(raw);
  if (typeof raw !== 'string' || !/^\d+$/.test(raw) || !Number.isSafeInteger(ms) || ms <= 0) {
    throw usageError(`--timeout needs a whole number of milliseconds from 1 to ${Number.MAX_SAFE_INTEGER}, got ${JSON.stringify(raw)}`);
  }
  return ms;
}

/** --max-message-size <bytes>: a whole number of bytes, or of KiB, MiB, GiB with K, M, G (as curl's --max-filesize). */
export function maxMessageSizeFrom(values: Values): number {
  const raw = values['max-message-size'];
  if (raw === undefined) return DEFAULT_MAX_MESSAGE_SIZE;
  const match = typeof raw === 'string' ? /^(\d+)([KMG]?)$/i.exec(raw) : null;
  const bytes = match ? Number(match[1]) * SIZE_UNITS[match[2]!.toUpperCase()]! : NaN;
  if (!(bytes >= MIN_MAX_MESSAGE_SIZE && bytes <= MAX_SIZE_OPTION)) {
    throw usageError(`--max-message-size needs a whole number of bytes from ${MIN_MAX_MESSAGE_SIZE} to ${MAX_SIZE_OPTION} (or with K, M or G: 64M), got ${JSON.stringify(raw)}`);
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
function parseArgsProblem(err: Error & { code?: string }, known: string[]): string {
  const unknown = /^Unknown option '([^']+)'/.exec(err.message);
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
    const option = unknown[1]!;
    // A typo of an option (--jsn) is likelier than a value that starts with '-'.
    const near = nearestOption(option, known);
    if (near) return `unknown option ${option} (did you mean --${near}?)`;
    return `unknown option ${option} (an argument that starts with '-' goes after --, as in -- ${option})`;
  }
  return err.message.split('\n').join(' ');
}

/** The known option `given` (--jsn) most likely misspells, without its dashes, or null if none is close. */
function nearestOption(given: string, known: readonly string[]): string | null {
  return nearestName(given.replace(/^-+/, ''), known);
}

/** The known name `given` most likely misspells (as git's "did you mean"), or null if none is close. */
export function nearestName(given: string, known: readonly string[]): string | null {
  const typed = given.toLowerCase();
  if (typed === '') return null;
  // Up to one edit in a short name, two in a longer one: --jsn, --timout;
  // a start that only one name has: --max-message.
  const allowed = typed.length <= 4 ? 1 : 2;
  let best: { name: string; distance: number } | null = null;
  for (const name of known) {
    const distance = editDistance(typed, name.toLowerCase());
    if (distance <= allowed && (!best || distance < best.distance)) best = { name, distance };
  }
  if (best) return best.name;
  const starting = known.filter((name) => typed.length >= 3 && name.toLowerCase().startsWith(typed));
  return starting.length === 1 ? starting[0]! : null;
}

/** Levenshtein distance, with a swap of two neighbours as one edit (--jsno). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}
