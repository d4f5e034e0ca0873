#!/usr/bin/env node
// afunix: inspect, call and watch afunix services from the shell.
import { readFileSync } from 'node:fs';
import { type Command, nearestName, printHelp } from './args.js';
import { call } from './commands/call.js';
import { info } from './commands/info.js';
import { ls } from './commands/ls.js';
import { methods } from './commands/methods.js';
import { watch } from './commands/watch.js';
import { CliError, Exit, codeOf, formatFailure, messageOf, usageError } from './errors.js';
import { ALL_STATUSES, exitStatusHelp } from './exit-status.js';
import { abandonedAny, endIfStuck } from './waiting.js';

const commands: readonly Command[] = [info, methods, call, watch, ls];

// A finished command whose process somehow stays alive (a handle we did not
// foresee) must still end: the CLI never hangs after it has answered.
const EXIT_GRACE_MS = 2_000;

function overview(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const list = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n');
  return `Usage: afunix <command> [options]

${list}

Sockets are paths, or @name for Linux abstract sockets.
Run afunix <command> --help for a command's options.

${exitStatusHelp(ALL_STATUSES, { [Exit.INTERRUPTED]: 'interrupted by SIGINT (Ctrl-C; call also by SIGTERM)' })}`;
}

/** afunix help [command], as git help commit: that command's help; a topic there is none for is a usage error. */
function help(topics: string[]): number {
  const [topic, ...extra] = topics;
  if (extra.length > 0) throw usageError(`afunix help takes at most one command, got ${topics.length}`);
  // (help help, help --help: the overview, which says what help does.)
  if (topic === undefined || topic === 'help' || topic === '--help' || topic === '-h') return printHelp(overview());
  const asked = commands.find((c) => c.name === topic);
  if (!asked) throw usageError(`no help for ${JSON.stringify(topic)}: it is not a command${commandHint(topic)}`);
  return printHelp(asked.help);
}

// "did you mean call?" for a near name, else the list.
function commandHint(given: string): string {
  const names = commands.map((c) => c.name);
  const near = nearestName(given, names);
  return near ? ` (did you mean ${near}?)` : ` (commands: ${names.join(', ')})`;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return `afunix ${pkg.version}\n`;
}

async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  // No command at all is a usage error (the overview on stderr, exit 2):
  // a script that lost its arguments must not look as if it succeeded.
  if (name === undefined) {
    process.stderr.write(overview());
    return Exit.USAGE;
  }
  if (name === '--help' || name === '-h' || name === 'help') return help(rest);
  if (name === '--version' || name === '-V') return printHelp(version());
  const command = commands.find((c) => c.name === name);
  if (!command) throw usageError(`unknown command ${JSON.stringify(name)}${commandHint(name)}`);
  return command.run(rest);
}

/**
 * stdout that cannot be written. A reader that went away (\`afunix call s
 * count 100000 | head -2\`) is how pipelines end: stop at once, quietly, with
 * the status a process killed by SIGPIPE has (141), as \`yes | head\` does.
 * Anything else (ENOSPC on a full disk, EIO) is one line on stderr and
 * status 2, like any local file that cannot be used. Exiting here abandons
 * whatever runs: a call or a stream ends as the connection closes.
 */
function onStdoutError(err: Error): void {
  if (codeOf(err) === 'EPIPE') process.exit(Exit.BROKEN_PIPE);
  process.stderr.write(`${formatFailure(new CliError(`cannot write the output: ${messageOf(err)}`, codeOf(err) || 'EIO', Exit.USAGE))}\n`);
  process.exit(Exit.USAGE);
}

async function main(): Promise<void> {
  process.stdout.on('error', onStdoutError);
  let status: number;
  try {
    status = await run(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${formatFailure(err)}\n`);
    status = err instanceof CliError ? err.exitCode : Exit.INTERNAL;
  }
  process.exitCode = status;
  // (stderr is written synchronously: the failure line is out by now.)
  if (endIfStuck()) return;
  if (abandonedAny()) process.exit(status);
  setTimeout(() => process.exit(status), EXIT_GRACE_MS).unref();
}

await main();
