// Arguments for `afunix call`, from the command line to values. The rule
// (also in the README):
//
//   - One token that is a JSON array is the whole argument list:
//       afunix call s add '[1, 2]'   → add(1, 2)
//   - Otherwise every token is one JSON argument:
//       afunix call s add 1 2        → add(1, 2)
//       afunix call s echo '[1, 2]' '"x"'  → echo([1, 2], 'x')
//     (so a single array argument is written '[[1, 2]]').
//   - The string "$fdN" anywhere in the arguments becomes the N-th --fd file
//     (counting from 0); --fd files no placeholder names are appended, in
//     order, after the last argument.
//   - {"$base64": "..."} becomes a Buffer, the same marker results use.
import { closeSync, constants, open, openSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Fd } from '@afunix/rpc';
import { codeOf, usageError } from './errors.js';
import { kindOf } from './description.js';
import { setOwn } from './render.js';

const FD_PLACEHOLDER = /^\$fd(\d+)$/;
// Levels of nesting an argument may have: what @afunix/rpc sends (its
// MAX_DEPTH, 128, counts the argument list too). Deeper input is refused
// here, before the recursion below runs out of stack.
const MAX_NESTING = 127;
const BASE64 = /^(?:[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*)$/;

/** JSON.parse turns 12345678901234567890 into 12345678901234567000 and 1e400 into Infinity: refuse both. */
function checkNumbers(text: string, where: string): void {
  for (const literal of numberLiterals(text)) {
    const n = Number(literal);
    if (!Number.isFinite(n)) throw usageError(`${where}: ${literal} is beyond what a number can hold`);
    // (An integer written with a zero fraction, 9007199254740993.0, is one
    // too; an exponent says a float is meant, as 1e300 is.)
    if (/^-?\d+(?:\.0+)?$/.test(literal) && !Number.isSafeInteger(n)) {
      throw usageError(`${where}: ${literal} is beyond Number.MAX_SAFE_INTEGER, where a number no longer holds every integer exactly (it would be sent as ${n}; the CLI cannot send a BigInt; pass it as a string if the method takes one)`);
    }
  }
}

// The number literals of valid JSON text, strings skipped. A scan rather
// than a regular expression: a regex's alternation inside a string's
// repetition ran out of stack on a string of 10 million characters.
function* numberLiterals(text: string): Generator<string> {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x2d || isDigit(c)) {
      const start = i;
      while (i + 1 < text.length && isNumberChar(text.charCodeAt(i + 1))) i++;
      yield text.slice(start, i + 1);
    }
  }
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

// Digits, sign, point and exponent: after a literal's first character, in
// valid JSON, only these belong to it.
function isNumberChar(c: number): boolean {
  return isDigit(c) || c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2b || c === 0x2d;
}

function parseToken(token: string, position: number): unknown {
  let value: unknown;
  try {
    value = JSON.parse(token);
  } catch {
    const hint = /^[\w.-]+$/.test(token) ? ` (a string needs JSON quotes: '"${token}"')` : '';
    throw usageError(`argument ${position} is not JSON: ${token}${hint}`);
  }
  checkNumbers(token, `argument ${position}`);
  return value;
}

/** The argument list from command-line tokens, as JSON values (see the rule above). */
export function argumentsFromTokens(tokens: readonly string[]): unknown[] {
  const parsed = tokens.map((t, i) => parseToken(t, i + 1));
  return parsed.length === 1 && Array.isArray(parsed[0]) ? parsed[0] : parsed;
}

/**
 * The argument list from --args-file: its whole text is one JSON array, as
 * grpcurl's -d @ reads a request. For arguments past what a command line
 * holds (ARG_MAX), or that should not show in ps.
 */
export async function argumentsFromFile(path: string): Promise<unknown[]> {
  const where = path === '-' ? '--args-file - (standard input)' : `--args-file ${path}`;
  // (A leading byte-order mark, as some Windows editors write one, is not JSON.)
  const text = (await readArgsText(path, where)).replace(/^\uFEFF/, '');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw usageError(`${where} is not JSON: ${text.trim() === '' ? 'it is empty' : (err as Error).message}`);
  }
  if (!Array.isArray(value)) throw usageError(`${where} must hold a JSON array, the argument list (as in [1, "two"]), not ${kindOf(value)}`);
  checkNumbers(text, where);
  return value;
}

async function readArgsText(path: string, where: string): Promise<string> {
  try {
    if (path !== '-') return await readFile(path, 'utf8');
    // A terminal gives no end of input by itself: say how to give one, as
    // `cat` users know it, rather than wait in silence.
    if (process.stdin.isTTY) process.stderr.write('afunix: reading the argument list (a JSON array) from the terminal; end it with Ctrl-D\n');
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  } catch (err) {
    throw usageError(`cannot read ${where}: ${codeOf(err) || (err as Error).message}`);
  }
}

function isBase64Marker(value: object): value is { $base64: string } {
  const keys = Object.keys(value);
  return keys.length === 1 && keys[0] === '$base64' && typeof (value as { $base64: unknown }).$base64 === 'string';
}

/** Buffer.from() skips what is not base64 (and gives an empty Buffer for "!!!"): refuse it instead. */
function base64(text: string): Buffer {
  if (!BASE64.test(text) || text.replace(/=+$/, '').length % 4 === 1) throw usageError(`{"$base64": ${JSON.stringify(text)}} is not valid base64`);
  return Buffer.from(text, 'base64');
}

class Reviver {
  readonly used = new Set<number>();
  constructor(private readonly fds: readonly Fd[]) {}

  revive(value: unknown, depth = 0): unknown {
    if (typeof value === 'string') return this.#placeholder(value);
    if (value === null || typeof value !== 'object') return value;
    if (depth >= MAX_NESTING) throw usageError(`the arguments nest deeper than ${MAX_NESTING} levels, more than can be sent`);
    if (Array.isArray(value)) return value.map((v) => this.revive(v, depth + 1));
    if (isBase64Marker(value)) return base64(value.$base64);
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) setOwn(out, k, this.revive(v, depth + 1));
    return out;
  }

  #placeholder(text: string): unknown {
    const match = FD_PLACEHOLDER.exec(text);
    if (!match) return text;
    const index = Number(match[1]);
    const fd = this.fds[index];
    if (!fd) throw usageError(`${text} names --fd number ${index}, but ${this.fds.length} --fd option(s) were given`);
    this.used.add(index);
    return fd;
  }
}

/** The argument list for a call (JSON values), with markers made Buffers and --fd files put in place. */
export function buildArguments(list: readonly unknown[], fds: readonly Fd[]): unknown[] {
  const reviver = new Reviver(fds);
  const args = list.map((v) => reviver.revive(v));
  fds.forEach((fd, i) => {
    if (!reviver.used.has(i)) args.push(fd);
  });
  return args;
}

/** Files opened for --fd; close() releases them all. */
export class OpenedFiles {
  readonly fds: Fd[] = [];
  #raw: number[] = [];

  /**
   * Opens each path read-only; a path that cannot be opened is a usage
   * error. Off the main thread: a FIFO waits for a writer, as open(2) does,
   * and the CLI must still hear SIGINT and --timeout meanwhile.
   */
  static async open(paths: readonly string[], abandoned?: AbortSignal): Promise<OpenedFiles> {
    const files = new OpenedFiles();
    try {
      for (const path of paths) {
        files.#add(await openReadOnly(path));
        abandoned?.throwIfAborted();
      }
    } catch (err) {
      files.close();
      throw err;
    }
    return files;
  }

  #add(fd: number): void {
    this.#raw.push(fd);
    this.fds.push(Fd.from(fd));
  }

  close(): void {
    for (const fd of this.#raw.splice(0)) closeSync(fd);
  }
}

function openReadOnly(path: string): Promise<number> {
  return new Promise((resolve, reject) =>
    open(path, 'r', (err, fd) => (err ? reject(usageError(`cannot open ${path} for --fd: ${codeOf(err) || err.message}`)) : resolve(fd))),
  );
}

/**
 * Lets an open() of a FIFO that was given up on return: it waits for a
 * writer on a libuv thread, and a process cannot exit while one of those is
 * stuck (exit joins them). Opening the writing end, without waiting, is
 * that writer; closed at once, it writes nothing. Returns false if a FIFO
 * could not be opened for writing (this user may read it, not write it):
 * its open() stays stuck.
 */
export function releaseFifoOpens(paths: readonly string[]): boolean {
  let released = true;
  for (const path of paths) {
    try {
      if (statSync(path).isFIFO()) closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch (err) {
      // ENXIO: no reader waits there (nothing of ours is stuck on it).
      if (codeOf(err) !== 'ENXIO' && codeOf(err) !== 'ENOENT') released = false;
    }
  }
  return released;
}
