// Optional runtime validation of arguments through Standard Schema, so zod,
// valibot and arktype validators all work without adapters.
import type { StandardSchemaV1 } from '@standard-schema/spec';
import { RpcCode, RpcError } from './errors.js';

/** A Standard Schema for a method's argument list (a tuple). */
export type Validator = StandardSchemaV1;

type Outcome = StandardSchemaV1.Result<unknown>;

function invalid(method: string, issues: ReadonlyArray<StandardSchemaV1.Issue>): RpcError {
  const data = issues.map((i) => ({
    message: i.message,
    // A key may be a symbol (Standard Schema allows it), which neither a
    // message nor msgpack can hold as such: it travels as its String().
    path: (i.path ?? []).map((p) => pathKey(typeof p === 'object' && p !== null ? (p as StandardSchemaV1.PathSegment).key : p)),
  }));
  const first = data[0];
  const where = first && first.path.length ? ` at ${first.path.join('.')}` : '';
  return new RpcError(`invalid arguments for ${method}${where}: ${first?.message ?? 'rejected'}`, {
    code: RpcCode.INVALID_ARGUMENTS,
    data: { issues: data },
  });
}

function pathKey(key: PropertyKey): string | number {
  return typeof key === 'symbol' ? String(key) : key;
}

function accept(method: string, outcome: Outcome): unknown[] {
  if (outcome.issues) throw invalid(method, outcome.issues);
  if (!Array.isArray(outcome.value)) throw new RpcError(`the validator of ${method} must produce an argument list`, { code: RpcCode.INTERNAL });
  return outcome.value;
}

/** The validated (possibly transformed) arguments; throws INVALID_ARGUMENTS. */
export function validateArgs(validator: Validator, method: string, args: unknown[]): unknown[] | Promise<unknown[]> {
  const outcome = validator['~standard'].validate(args);
  if (outcome instanceof Promise) return outcome.then((o) => accept(method, o));
  return accept(method, outcome);
}
