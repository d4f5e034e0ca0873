// The "Exit status:" section of every help text, from one table, so that
// the commands cannot drift apart (nor from the README's table, which a
// test holds to this one).
import { Exit } from './errors.js';

type Status = (typeof Exit)[keyof typeof Exit];

/** What each status means in general; a command may say it more exactly. */
const MEANING: Record<Status, string> = {
  [Exit.OK]: 'success',
  [Exit.REMOTE]: 'the remote method threw (its name, code and message on stderr)',
  [Exit.USAGE]: 'usage: a bad command line, or a local file, directory or output that cannot be used',
  [Exit.CONNECTION]:
    'connection problems: no socket, a stale one, permission denied, not afunix, no answer, refused by the server, timed out, connection lost',
  [Exit.INTERRUPTED]: 'interrupted by SIGINT (Ctrl-C)',
  [Exit.BROKEN_PIPE]: 'the reader of the output went away (a closed pipe, as in afunix ... | head)',
  [Exit.INTERNAL]: 'an unexpected failure in afunix itself (a bug: please report it)',
};

/** The order statuses are listed in: by how often they are met. */
const ORDER: Status[] = [Exit.OK, Exit.REMOTE, Exit.USAGE, Exit.CONNECTION, Exit.INTERRUPTED, Exit.BROKEN_PIPE, Exit.INTERNAL];

/** Every status the CLI has: for the overview. */
export const ALL_STATUSES: readonly Status[] = ORDER;

const WIDTH = 76;

/**
 * "Exit status:" and one line per status a command can return (wrapped),
 * in the shared order, each with the shared meaning unless `exactly` words
 * it for this command.
 */
export function exitStatusHelp(statuses: readonly Status[], exactly: Partial<Record<Status, string>> = {}): string {
  const lines = ORDER.filter((s) => statuses.includes(s)).map((s) => wrap(`  ${String(s).padEnd(4)} `, exactly[s] ?? MEANING[s]));
  return `Exit status:\n${lines.join('\n')}\n`;
}

/** `text` after `lead`, in lines of at most WIDTH, continued under its start. */
function wrap(lead: string, text: string): string {
  const indent = ' '.repeat(lead.length);
  const lines: string[] = [];
  let current = lead;
  for (const word of text.split(' ')) {
    if (current.length > lead.length && current.length + word.length > WIDTH) {
      lines.push(current.trimEnd());
      current = indent;
    }
    current += `${word} `;
  }
  lines.push(current.trimEnd());
  return lines.join('\n');
}
