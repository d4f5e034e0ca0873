// afunix ls [dir]: the sockets in a directory, and which of them answer.
import { type Dirent, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RpcCode } from '@afunix/rpc';
import { JSON_OPTION, TIMEOUT_OPTION, type Command, parseCommand, printHelp, requirePositionals, timeoutFrom } from '../args.js';
import { dial, hangUp } from '../dial.js';
import { CliError, Exit, codeOf, usageError } from '../errors.js';
import { exitStatusHelp } from '../exit-status.js';
import { printResult, table } from '../render.js';

const help = `Usage: afunix ls [dir] [--json] [--timeout <ms>]

Lists the unix sockets in <dir> (default $XDG_RUNTIME_DIR, else /tmp),
and symlinks to sockets (shown as link -> target), and probes each one
with an afunix hello. Like ls, it lists one directory: the sockets in a
subdirectory are listed by naming it (afunix ls <dir>/<sub>).

  alive        it answered: service, version and server pid are shown
  stale        nobody listens (ECONNREFUSED): a leftover socket file
  not-afunix   something listens and answered, but not in afunix (or in
               another afunix protocol version)
  no-answer    something listens but did not answer within --timeout: a
               stopped or overloaded server (a full listen backlog), or
               something that is not afunix and waits for its client
  closing      an afunix server answered that it is shutting down
  hung-up      it took the connection and closed it without a word: a
               server at its limit or shutting down, or not afunix
  denied       we may not connect (EACCES), or the server refused us (ACCESS_DENIED)
  error        anything else (the detail says what)

  ls @              lists listening Linux abstract sockets instead (from /proc/net/unix)
  --json            print [{socket, target?, state, service?, version?, pid?, detail?}]
                    (target: what a symlink points to)
  --timeout <ms>    how long each probe may take (default 1000)

${exitStatusHelp([Exit.OK, Exit.USAGE, Exit.INTERRUPTED, Exit.BROKEN_PIPE, Exit.INTERNAL], {
  [Exit.OK]: "success, whatever the sockets' states",
  [Exit.USAGE]: 'usage: a bad command line, a directory that cannot be read, output that cannot be written',
})}`;

type State = 'alive' | 'stale' | 'not-afunix' | 'no-answer' | 'closing' | 'hung-up' | 'denied' | 'error';

interface Entry {
  socket: string;
  target?: string;
  state: State;
  service?: string;
  version?: string;
  pid?: number;
  detail?: string;
}

const DEFAULT_PROBE_TIMEOUT = 1_000;
const PROBES_AT_ONCE = 8;
// /proc/net/unix: Flags has __SO_ACCEPTCON for listening sockets.
const SO_ACCEPTCON = 0x10000;

interface Found {
  socket: string;
  /** For a symlink: what it points to, as written in the link. */
  target?: string;
}

/**
 * The sockets in `dir`, and symlinks to sockets (as /run often has them),
 * which a connect follows too. One directory, as ls lists one: sockets in
 * subdirectories are for an ls of their own.
 */
function socketsIn(dir: string): Found[] {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    throw usageError(`cannot list ${dir}: ${codeOf(err) || (err as Error).message}`);
  }
  const found: Found[] = [];
  for (const e of entries) {
    const socket = join(dir, e.name);
    if (e.isSocket()) found.push({ socket });
    else if (e.isSymbolicLink()) {
      const target = socketLinkTarget(socket);
      if (target !== null) found.push({ socket, target });
    }
  }
  return found.sort((a, b) => (a.socket < b.socket ? -1 : a.socket > b.socket ? 1 : 0));
}

/**
 * Where a symlink points, if it ends at a socket; null for a dangling or
 * looping link, one to anything else, or one gone since the directory was
 * read (runtime directories change under us).
 */
function socketLinkTarget(path: string): string | null {
  try {
    return statSync(path).isSocket() ? readlinkSync(path) : null;
  } catch {
    return null;
  }
}

/** Listening abstract names from /proc/net/unix (this network namespace only). */
function abstractSockets(): string[] {
  let text: string;
  try {
    text = readFileSync('/proc/net/unix', 'utf8');
  } catch (err) {
    throw usageError(`cannot list abstract sockets (Linux only): ${codeOf(err) || (err as Error).message}`);
  }
  const names = new Set<string>();
  for (const line of text.split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path: the path is the rest
    // of the line, spaces included (an abstract name may have any).
    const fields = /^\s*(?:\S+\s+){3}(\S+)\s+(?:\S+\s+){2}\S+ (.*)$/.exec(line);
    const [flags, path] = [fields?.[1], fields?.[2]];
    if (path?.startsWith('@') && flags && (parseInt(flags, 16) & SO_ACCEPTCON) !== 0) names.add(path);
  }
  return [...names].sort();
}

function classify(err: unknown): { state: State; detail: string } {
  const cause = err instanceof CliError ? err : null;
  const detail = cause ? `${cause.message} [${cause.code}]` : String(err);
  switch (cause?.code) {
    case 'ECONNREFUSED':
      return { state: 'stale', detail };
    case 'EACCES':
    case 'EPERM':
    case RpcCode.ACCESS_DENIED:
      return { state: 'denied', detail };
    case 'NOT_AFUNIX':
    case RpcCode.PROTOCOL_MISMATCH:
      return { state: 'not-afunix', detail };
    case RpcCode.HANDSHAKE_TIMEOUT:
    case 'ETIMEDOUT':
      return { state: 'no-answer', detail };
    case RpcCode.SHUTTING_DOWN:
      return { state: 'closing', detail };
    case 'HUNG_UP':
      return { state: 'hung-up', detail };
    default:
      return { state: 'error', detail };
  }
}

async function probe({ socket, target }: Found, timeout: number): Promise<Entry> {
  const link = target === undefined ? {} : { target };
  try {
    const { client } = await dial(socket, timeout);
    const entry: Entry = { socket, ...link, state: 'alive' };
    if (client.$server.service !== undefined) entry.service = client.$server.service;
    if (client.$server.version !== undefined) entry.version = client.$server.version;
    if (client.$peer) entry.pid = client.$peer.pid;
    await hangUp(client);
    return entry;
  } catch (err) {
    return { socket, ...link, ...classify(err) };
  }
}

/** Probes with a bounded number in flight: a directory may hold hundreds. */
async function probeAll(sockets: Found[], timeout: number): Promise<Entry[]> {
  const entries: Entry[] = new Array(sockets.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < sockets.length; i = next++) entries[i] = await probe(sockets[i]!, timeout);
  };
  await Promise.all(Array.from({ length: Math.min(PROBES_AT_ONCE, sockets.length) }, worker));
  return entries;
}

function render(entries: Entry[], where: string): string {
  if (entries.length === 0) return `(no sockets in ${where})\n`;
  const rows = entries.map((e) => [e.state, e.target === undefined ? e.socket : `${e.socket} -> ${e.target}`, e.service ?? '', e.version ?? '', e.pid === undefined ? '' : String(e.pid)]);
  return table(rows, ['STATE', 'SOCKET', 'SERVICE', 'VERSION', 'PID']);
}

export const ls: Command = {
  name: 'ls',
  summary: 'list the sockets in a directory, and what answers on each',
  help,
  async run(argv) {
    const { values, positionals, help: wantsHelp } = parseCommand('ls', argv, { ...JSON_OPTION, ...TIMEOUT_OPTION });
    if (wantsHelp) return printHelp(help);
    requirePositionals('ls', positionals, [], true);
    if (positionals.length > 1) throw usageError(`afunix ls takes at most one directory, got ${positionals.length} (see afunix ls --help)`);
    const dir = positionals[0] ?? (process.env.XDG_RUNTIME_DIR || '/tmp');
    const sockets = dir === '@' ? abstractSockets().map((socket) => ({ socket })) : socketsIn(dir);
    const entries = await probeAll(sockets, timeoutFrom(values) ?? DEFAULT_PROBE_TIMEOUT);
    if (values.json) printResult(entries);
    else process.stdout.write(render(entries, dir === '@' ? 'the abstract namespace' : dir));
    return Exit.OK;
  },
};
