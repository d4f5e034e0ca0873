// Connecting to a service, and turning every way that can fail into one
// readable line: a missing socket, a stale one, permissions, a peer that is
// not afunix, a server that refuses us, a deadline.
import { lstatSync } from 'node:fs';
import { basename } from 'node:path';
import { type Contract, DESCRIBE, RpcCode, type RpcClient, type ServiceDescription, connect } from '@afunix/rpc';
import { type ConnectionType, SUN_PATH_SIZE, features, isAbstract } from '@afunix/transport';
import { descriptionProblem } from './description.js';
import { CliError, codeOf, connectionError, messageOf, usageError } from './errors.js';

export interface Dialed {
  client: RpcClient<Contract>;
  address: string;
  type: ConnectionType;
}

/** Milliseconds for connect + hello when --timeout is not given. */
export const DEFAULT_CONNECT_TIMEOUT = 5_000;

async function connectAs(address: string, type: ConnectionType, timeout: number, maxMessageSize: number | undefined): Promise<RpcClient<Contract>> {
  return connect<Contract>(address, { type, timeout, maxMessageSize });
}

/**
 * Whether a failed stream connect may mean a seqpacket listener: a path
 * answers EPROTOTYPE, but the kernel looks abstract names up per socket
 * type, so there a seqpacket listener looks like nobody (ECONNREFUSED).
 */
function maybeSeqpacket(err: unknown, address: string): boolean {
  const code = codeOf(err);
  return features.seqpacket && (code === 'EPROTOTYPE' || (code === 'ECONNREFUSED' && isAbstract(address)));
}

/**
 * Connects and says hello, as stream and then, where the answer suggests
 * it, as seqpacket: users should not have to know which kind a service
 * listens on. `maxMessageSize` is the most the server may send us (our
 * hello announces it; rpc's default is 16 MiB).
 */
export async function dial(address: string, timeout = DEFAULT_CONNECT_TIMEOUT, maxMessageSize?: number): Promise<Dialed> {
  if (!address) throw usageError('a socket address is needed (a path, or @name for an abstract socket)');
  try {
    return { client: await connectAs(address, 'stream', timeout, maxMessageSize), address, type: 'stream' };
  } catch (err) {
    if (!maybeSeqpacket(err, address)) throw explainConnectFailure(err, address, timeout);
  }
  try {
    return { client: await connectAs(address, 'seqpacket', timeout, maxMessageSize), address, type: 'seqpacket' };
  } catch (err) {
    throw explainConnectFailure(err, address, timeout);
  }
}

function isNonSocketFile(address: string): boolean {
  if (isAbstract(address)) return false;
  try {
    return !lstatSync(address).isSocket();
  } catch {
    return false;
  }
}

/**
 * Why an address does not fit sun_path, and what to do. The kernel has no
 * room for more (SUN_PATH_SIZE counts the final NUL of a path), so the CLI
 * cannot reach such a path as written; a relative one from nearer by can.
 */
function tooLong(address: string): string {
  const room = `sun_path holds ${SUN_PATH_SIZE} bytes on ${platformName()}`;
  if (isAbstract(address)) {
    const bytes = Buffer.byteLength(address) - 1;
    return `the abstract name ${address} is too long: ${bytes} bytes, and a name may have at most ${SUN_PATH_SIZE - 1} (${room}, with the leading NUL)`;
  }
  const bytes = Buffer.byteLength(address);
  const name = basename(address);
  const hint =
    Buffer.byteLength(name) + 2 < SUN_PATH_SIZE
      ? `use a relative path from nearer by (cd to its directory, then ./${name}), or a socket in a shorter directory`
      : 'use a socket with a shorter name';
  return `the socket path ${address} is too long: ${bytes} bytes, and a path may have at most ${SUN_PATH_SIZE - 1} (${room}, with the final NUL); ${hint}`;
}

function platformName(): string {
  return process.platform === 'linux' ? 'Linux' : process.platform === 'darwin' ? 'macOS' : process.platform;
}

/** The CliError (exit 3, or 2 for a malformed address) for a failed connect or hello. */
export function explainConnectFailure(err: unknown, address: string, timeout: number): CliError {
  const code = codeOf(err);
  const message = messageOf(err);
  switch (code) {
    case 'ENOENT':
      return connectionError(`no socket at ${address}`, code);
    case 'EACCES':
    case 'EPERM':
      return connectionError(`permission denied connecting to ${address} (the socket file's mode or a directory on its path)`, code);
    case 'ECONNREFUSED':
      if (isNonSocketFile(address)) return connectionError(`${address} is not a socket`, 'ENOTSOCK');
      return connectionError(
        isAbstract(address) ? `nothing is listening on ${address}` : `nothing is listening at ${address} (a stale socket file)`,
        code,
      );
    case 'EPROTOTYPE':
      return connectionError(`${address} is a datagram socket, not an afunix server`, 'NOT_AFUNIX');
    case 'ENAMETOOLONG':
      return usageError(tooLong(address));
    case 'ERR_INVALID_ARG_VALUE':
      return usageError(`cannot use ${JSON.stringify(address)} as a socket address: ${message}`);
    case RpcCode.ACCESS_DENIED:
      return connectionError(`the server at ${address} refused this client: ${message}`, code);
    // Silence proves nothing about what listens: a stopped or overloaded
    // afunix server is as silent as something that is not afunix.
    case 'ETIMEDOUT':
      return connectionError(`${address} did not take the connection within ${timeout} ms (its listen backlog stayed full: a stopped or overloaded server)`, code);
    case RpcCode.HANDSHAKE_TIMEOUT:
      return connectionError(`${address} did not answer an afunix hello within ${timeout} ms (a stopped or overloaded server, or not afunix)`, code);
    // Only bytes that are not afunix prove a peer is not afunix.
    case RpcCode.PROTOCOL_ERROR:
      return connectionError(`${address} is not an afunix server (${message})`, 'NOT_AFUNIX');
    // Closing without a word is what a server at its connection limit or
    // shutting down does too.
    case RpcCode.CONNECTION_CLOSED:
    case 'EPIPE':
    case 'ECONNRESET':
      return connectionError(`${address} closed the connection without answering the afunix hello (a server at its limit or shutting down, or not afunix): ${message}`, 'HUNG_UP');
    case RpcCode.PROTOCOL_MISMATCH:
      return connectionError(`${address} speaks another afunix protocol: ${message}`, code);
    default:
      return connectionError(`cannot connect to ${address}: ${message}`, code || 'ECONNECT');
  }
}

// How long a finished command waits for the peer to close its side. The
// rpc client's $close() waits up to 2 s by default, and a stopped or
// wedged server never closes: the CLI would end 2 s late, for a courtesy
// nobody needs once the answer is in.
const HANGUP_GRACE_MS = 200;

/**
 * Closes the client: an orderly close (what was queued is sent) that waits
 * at most HANGUP_GRACE_MS for the peer, then a cut. A failing close does
 * not hide the real outcome.
 */
export async function hangUp(client: RpcClient<Contract>): Promise<void> {
  await closeWithin(client, HANGUP_GRACE_MS);
}

/**
 * Tears the connection down at once, waiting for nothing from the peer:
 * for --timeout and signals, which must end the CLI now, when the peer may
 * be the very thing that is stuck. The server sees the connection end, and
 * that aborts what it was doing for us.
 */
export async function cutOff(client: RpcClient<Contract>): Promise<void> {
  await closeWithin(client, 0);
}

async function closeWithin(client: RpcClient<Contract>, timeout: number): Promise<void> {
  try {
    await client.$close({ timeout });
  } catch {
    // The connection is gone either way.
  }
}

/**
 * What the service offers ($describe), within the timeout. Every failure is
 * the peer's (exit 3): no answer in time (TIMEOUT), the connection gone
 * (CONNECTION_CLOSED), a refusal (DESCRIBE_FAILED, the server's own code in
 * the message), or an answer that is not a description (BAD_DESCRIPTION).
 */
export async function describeService(client: RpcClient<Contract>, address: string, timeout = DEFAULT_CONNECT_TIMEOUT, signal?: AbortSignal): Promise<ServiceDescription> {
  const conn = client.$connection;
  if (!conn) throw connectionError(`the connection to ${address} closed`, RpcCode.CONNECTION_CLOSED);
  let answer: unknown;
  try {
    answer = await conn.call(DESCRIBE, [], { timeout, signal });
  } catch (err) {
    const code = codeOf(err);
    if (code === RpcCode.TIMEOUT) throw connectionError(`${address} did not describe itself within ${timeout} ms`, code);
    if (code === RpcCode.CONNECTION_CLOSED) throw connectionError(`the connection to ${address} was lost while it described itself: ${messageOf(err)}`, code);
    throw connectionError(`${address} refused to describe itself: ${messageOf(err)}${code ? ` (${code})` : ''}`, 'DESCRIBE_FAILED');
  }
  const problem = descriptionProblem(answer);
  if (problem) throw connectionError(`${address} answered $describe with something that is not a service description: ${problem}`, 'BAD_DESCRIPTION');
  return answer as ServiceDescription;
}
