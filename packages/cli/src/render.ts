// How values that JSON cannot hold are printed. The rule (also in the README):
//
//   Buffer / Uint8Array / ArrayBuffer  {"$base64": "..."}
//   other typed arrays                 arrays of numbers (BigInt elements as strings)
//   BigInt                             its decimal digits as a string: "12345678901234567890"
//   NaN, Infinity, -Infinity           the strings "NaN", "Infinity", "-Infinity"
//   Date                               ISO 8601 string (null for an invalid date)
//   Map with only string keys          a plain object
//   any other Map                      {"$map": [[key, value], ...]}
//   Set                                an array
//   undefined                          null (a void method prints null)
//   Fd                                 {"$fd": "<what it refers to>"}; the CLI then closes it
//   Error                              {"$error": {"name", "message", "code"?, "data"?}}
import { readlinkSync } from 'node:fs';
import { Fd } from '@afunix/rpc';
import { oneLine } from './errors.js';

const MAX_DEPTH = 256;

function numberToJson(n: number): number | string {
  return Number.isFinite(n) ? n : String(n);
}

function typedArrayToJson(view: ArrayBufferView): unknown {
  if (view instanceof Uint8Array) return { $base64: Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64') };
  if (view instanceof DataView) return { $base64: Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64') };
  const items = Array.from(view as unknown as ArrayLike<number | bigint>);
  return items.map((x) => (typeof x === 'bigint' ? x.toString() : numberToJson(x)));
}

/** What an fd refers to (a path, "socket:[123]", "pipe:[45]"), then closes it. */
function fdToJson(fd: Fd): unknown {
  let target = 'unknown';
  try {
    target = readlinkSync(`/proc/self/fd/${fd.fd}`);
  } catch {
    // Not Linux, or already gone: the marker still says an fd arrived.
  }
  fd.close();
  return { $fd: target };
}

/**
 * out[key] = value, as an own property even for "__proto__" (an assignment
 * would set the prototype, and the key would vanish from the output).
 */
export function setOwn(out: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
}

function errorToJson(err: Error, depth: number): unknown {
  const e = err as Error & { code?: unknown; data?: unknown };
  const out: Record<string, unknown> = { name: e.name, message: e.message };
  if (e.code !== undefined) out.code = e.code;
  if (e.data !== undefined) out.data = toJson(e.data, depth + 1);
  return { $error: out };
}

function mapToJson(map: Map<unknown, unknown>, depth: number): unknown {
  const keys = [...map.keys()];
  if (keys.every((k) => typeof k === 'string')) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of map) setOwn(out, k as string, toJson(v, depth + 1));
    return out;
  }
  return { $map: [...map].map(([k, v]) => [toJson(k, depth + 1), toJson(v, depth + 1)]) };
}

function objectToJson(obj: object, depth: number): unknown {
  if (obj instanceof Fd) return fdToJson(obj);
  if (obj instanceof Date) return Number.isNaN(obj.getTime()) ? null : obj.toISOString();
  if (obj instanceof Error) return errorToJson(obj, depth);
  if (obj instanceof Map) return mapToJson(obj, depth);
  if (obj instanceof Set) return [...obj].map((v) => toJson(v, depth + 1));
  if (obj instanceof ArrayBuffer) return { $base64: Buffer.from(obj).toString('base64') };
  if (ArrayBuffer.isView(obj)) return typedArrayToJson(obj);
  if (Array.isArray(obj)) return obj.map((v) => toJson(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) setOwn(out, k, toJson(v, depth + 1));
  return out;
}

/** A JSON-safe copy of a decoded value, by the rule above. */
export function toJson(value: unknown, depth = 0): unknown {
  if (depth > MAX_DEPTH) return '…';
  switch (typeof value) {
    case 'undefined':
      return null;
    case 'bigint':
      return value.toString();
    case 'number':
      return numberToJson(value);
    case 'object':
      return value === null ? null : objectToJson(value, depth);
    case 'function':
    case 'symbol':
      return String(value);
    default:
      return value;
  }
}

// JSON escapes C0 control characters itself; these it leaves raw, and a
// terminal may act on them (C1 controls, separators, bidi overrides).
// Escaped, the JSON means the same.
const RAW_IN_JSON = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function json(value: unknown, indent?: number): string {
  return JSON.stringify(toJson(value), null, indent).replace(RAW_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A whole result: indented, for people and for jq alike. */
export function printResult(value: unknown): void {
  process.stdout.write(`${json(value, 2)}\n`);
}

/** One stream item or event: exactly one line, so that output is JSON Lines. */
export function printLine(value: unknown): void {
  process.stdout.write(`${json(value)}\n`);
}

/** A plain text table: columns padded to their widest cell, no trailing spaces. */
/** Columns padded to line up; every cell through oneLine(), as cells may come from the peer. */
export function table(rows: string[][], header?: string[]): string {
  const all = (header ? [header, ...rows] : rows).map((r) => r.map(oneLine));
  const columns = Math.max(0, ...all.map((r) => r.length));
  const widths = Array.from({ length: columns }, (_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd();
  return `${all.map(line).join('\n')}\n`;
}
