// Every failure the CLI reports is a CliError: one readable line, a stable
// code in brackets, and an exit status that scripts can branch on.

/** Exit statuses (documented in the README and in `afunix --help`). */
export const Exit = {
  OK: 0,
  /** The remote method threw (the error came back over the connection). */
  REMOTE: 1,
  /** Bad command line, or local input that cannot be used (a --fd file, a directory). */
  USAGE: 2,
  /** No answer: missing socket, refused, not afunix, denied, timed out, connection lost. */
  CONNECTION: 3,
  /** Interrupted by SIGINT/SIGTERM during a call (128 + SIGINT). */
  INTERRUPTED: 130,
  /** stdout's reader went away (EPIPE): 128 + SIGPIPE, what \`yes | head\` gives. */
  BROKEN_PIPE: 141,
  /** Something the CLI did not foresee: a bug worth reporting (sysexits' EX_SOFTWARE). */
  INTERNAL: 70,
} as const;

export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;
  /** A second line (e.g. a remote error's data), printed as is. */
  readonly detail: string | undefined;

  constructor(message: string, code: string, exitCode: number, detail?: string) {
    super(message);
    this.name = 'CliError';
    this.code = code;
    this.exitCode = exitCode;
    this.detail = detail;
  }
}

export function usageError(message: string): CliError {
  return new CliError(message, 'USAGE', Exit.USAGE);
}

export function connectionError(message: string, code: string): CliError {
  return new CliError(message, code, Exit.CONNECTION);
}

/** The `code` of anything thrown, as a string ('' when there is none). */
export function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' || typeof code === 'number' ? String(code) : '';
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// What a peer's text (a remote error, a service name, a version) must not
// bring to a terminal: control characters (C0, DEL, C1: an ESC sequence can
// clear the screen or recolour what follows), line and paragraph separators
// (a forged extra row in a table), and bidirectional overrides (text shown
// in another order than it is).
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** Text on one line and safe for a terminal: \\n, \\r and \\t as such, other control and layout characters as \\uXXXX. */
export function oneLine(text: string): string {
  return text.replace(UNSAFE, (c) => NAMED[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The line printed for a failure: never a stack trace. */
export function formatFailure(err: unknown): string {
  if (err instanceof CliError) {
    const line = `afunix: ${oneLine(err.message)} [${oneLine(err.code)}]`;
    return err.detail ? `${line}\n${oneLine(err.detail)}` : line;
  }
  // Something we did not foresee: still one line, with whatever code it has.
  const code = codeOf(err);
  return `afunix: ${oneLine(messageOf(err))}${code ? ` [${oneLine(code)}]` : ''}`;
}
