// A received message's fields, checked as they are read: a field of the
// wrong type is the peer breaking the protocol (docs/PROTOCOL.md 2.1).
import { RpcCode, rpcError } from './errors.js';

export function id(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw rpcError(RpcCode.PROTOCOL_ERROR, 'bad call id');
  return v;
}

export function count(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v > 1 << 20) throw rpcError(RpcCode.PROTOCOL_ERROR, 'bad credit');
  return v;
}

export function str(v: unknown): string {
  if (typeof v !== 'string') throw rpcError(RpcCode.PROTOCOL_ERROR, 'expected a string');
  return v;
}

/** An optional string element: absent (undefined) or a string; anything else, null included, is not. */
export function optionalStr(v: unknown): string | undefined {
  return v === undefined ? undefined : str(v);
}

export function list(v: unknown): unknown[] {
  if (!Array.isArray(v)) throw rpcError(RpcCode.PROTOCOL_ERROR, 'expected an array');
  return v;
}
