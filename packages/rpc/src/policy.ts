// Who may connect: checked against the kernel's peer credentials before the
// client's first message is even read (sd-varlink's MYSELF_ONLY / ROOT_ONLY).
import type { Credentials } from '@afunix/transport';
import { RpcCode, type RpcError, rpcError } from './errors.js';

export type PeerPolicy =
  | 'any'
  /** Only processes running as this process's uid. */
  | 'same-user'
  /** Only uid 0. */
  | 'root'
  | { uids?: readonly number[]; gids?: readonly number[] }
  | ((peer: Credentials) => boolean);

function allows(policy: Exclude<PeerPolicy, 'any'>, peer: Credentials): boolean {
  if (policy === 'same-user') return peer.uid === process.getuid?.();
  if (policy === 'root') return peer.uid === 0;
  if (typeof policy === 'function') return policy(peer) === true;
  return Boolean(policy.uids?.includes(peer.uid) || policy.gids?.includes(peer.gid));
}

/** null to let the peer in; otherwise the ACCESS_DENIED error to refuse it with. */
export function checkPeer(policy: PeerPolicy | undefined, peer: Credentials | null): RpcError | null {
  if (policy === undefined || policy === 'any') return null;
  // Fail closed: a transport that cannot name its peer cannot pass a policy.
  if (!peer) return rpcError(RpcCode.ACCESS_DENIED, 'this server admits only known peers, and the transport cannot tell who this is');
  try {
    if (allows(policy, peer)) return null;
  } catch {
    // A throwing policy function refuses.
  }
  return rpcError(RpcCode.ACCESS_DENIED, `access denied for uid ${peer.uid}`);
}
