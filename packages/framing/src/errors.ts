// Every way a peer (or a caller) can break the framing rules has one stable
// code, so that callers can branch on err.code rather than on messages.

export type FramingErrorCode =
  | 'PROTOCOL_ERROR'
  | 'UNSUPPORTED_VERSION'
  | 'FRAME_TOO_LARGE'
  | 'TOO_MANY_FDS'
  | 'BUFFER_LIMIT'
  | 'TRUNCATED_FRAME'
  | 'CONNECTION_CLOSED';

export class FramingError extends Error {
  readonly code: FramingErrorCode;

  constructor(code: FramingErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FramingError';
    this.code = code;
  }
}

/** An argument error shaped like the transport's (and Node's) own. */
export function invalidArg(name: string, message: string): Error & { code: string } {
  const err = new TypeError(`The argument '${name}' ${message}`) as TypeError & { code: string };
  err.code = 'ERR_INVALID_ARG_VALUE';
  return err;
}

export function unsupported(message: string): Error & { code: string } {
  const err = new Error(message) as Error & { code: string };
  err.code = 'ERR_AFUNIX_UNSUPPORTED';
  return err;
}
