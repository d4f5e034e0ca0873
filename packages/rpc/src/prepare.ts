// prepare(): what a value must go through before msgpackr packs it. It
// refuses what cannot travel (with the path to it), boxes Maps so that they
// take their extension, and marks large Buffers to be spliced in rather
// than copied (splice.ts). It never mutates the caller's data.
import { RpcCode, rpcError } from './errors.js';
import { Fd } from './fd.js';
import { SPLICE_MIN, spliced } from './splice.js';

/** How deep a value may nest; deeper (or a cycle) fails on the sender. */
export const MAX_DEPTH = 128;

// msgpackr writes a Map as a plain msgpack map, indistinguishable from an
// object; prepare() boxes Maps so that they take the extension instead.
export class MapBox {
  constructor(readonly flat: unknown[]) {}
}

// Inside a Map, Set or Error the value is packed into an extension's
// payload (a nested pack), where a Buffer cannot be spliced: none there.
let noSplice = 0;

/** prepareValue() for a value packed on its own, inside an extension's payload: nothing spliced. */
export function prepareNested(value: unknown, name: string): unknown {
  noSplice++;
  try {
    return prepareValue(value, name);
  } finally {
    noSplice--;
  }
}

function encodeError(path: string, what: string) {
  return rpcError(RpcCode.ENCODE_ERROR, `cannot send ${what} at ${path}`, { path });
}

// Something that cannot travel, found somewhere inside a value. The walk
// builds no path on the way down (that was a string per nested object of
// every call); the keys are collected as this passes back up, and the
// path is made only then.
class Unsendable {
  readonly keys: Array<string | number | MapKey> = [];
  constructor(readonly what: string) {}
}

// A Map entry's key, shown in a path as `.${String(key)}`.
class MapKey {
  constructor(readonly key: unknown) {}
}

function within(err: unknown, key: string | number | MapKey): unknown {
  if (err instanceof Unsendable) err.keys.push(key);
  return err;
}

function prepareArray(arr: readonly unknown[], depth: number): unknown[] {
  let out: unknown[] | null = null;
  for (let i = 0; i < arr.length; i++) {
    const v = arr[i];
    let p: unknown;
    try {
      p = prepare(v, depth);
    } catch (err) {
      throw within(err, i);
    }
    if (p !== v && !out) out = arr.slice(0, i);
    if (out) out.push(p);
  }
  return out ?? (arr as unknown[]);
}

// for-in rather than Object.keys(): it walks the object's cached key list
// where Object.keys() copies it into a new array, every object of every
// call (86 bytes a call in W2). The own-key check keeps to what
// Object.keys() gives, and msgpackr packs: inherited keys are not sent.
function prepareObject(obj: Record<string, unknown>, depth: number): Record<string, unknown> {
  let out: Record<string, unknown> | null = null;
  for (const key in obj) {
    if (!Object.hasOwn(obj, key)) continue;
    const v = obj[key];
    let p: unknown;
    try {
      p = prepare(v, depth);
    } catch (err) {
      throw within(err, key);
    }
    if (p !== v && !out) out = { ...obj };
    if (out) out[key] = p;
  }
  return out ?? obj;
}

/**
 * Checks that a value can travel and boxes what msgpackr would misencode.
 * Returns the value itself unless something inside had to change; never
 * mutates the caller's data. Throws Unsendable for what cannot travel.
 */
function prepare(value: unknown, depth: number): unknown {
  const t = typeof value;
  if (t !== 'object') {
    if (t === 'function') throw new Unsendable('a function');
    if (t === 'symbol') throw new Unsendable('a symbol');
    return value;
  }
  if (value === null) return value;
  if (ArrayBuffer.isView(value)) return value.byteLength >= SPLICE_MIN && noSplice === 0 && Buffer.isBuffer(value) ? spliced(value) : value;
  if (value instanceof Date || value instanceof Fd) return value;
  if (depth >= MAX_DEPTH) throw new Unsendable(`a value nested deeper than ${MAX_DEPTH} levels (a cycle?)`);
  if (Array.isArray(value)) return prepareArray(value, depth + 1);
  if (value instanceof Map) return prepareMap(value, depth);
  if (value instanceof Set) {
    const items = [...value];
    noSplice++;
    try {
      const prepared = prepareArray(items, depth + 1);
      return prepared === items ? value : new Set(prepared);
    } finally {
      noSplice--;
    }
  }
  if (value instanceof Error || value instanceof ArrayBuffer) return value;
  // (A receiver refuses one: compiling a peer's pattern costs what it will.)
  if (value instanceof RegExp) throw new Unsendable('a RegExp (send its source and flags)');
  return prepareObject(value as Record<string, unknown>, depth + 1);
}

function prepareMap(value: Map<unknown, unknown>, depth: number): MapBox {
  noSplice++;
  try {
    const flat: unknown[] = [];
    for (const [k, v] of value) {
      let pk: unknown;
      let pv: unknown;
      try {
        pk = prepare(k, depth + 1);
      } catch (err) {
        throw within(err, 'key');
      }
      try {
        pv = prepare(v, depth + 1);
      } catch (err) {
        throw within(err, new MapKey(k));
      }
      flat.push(pk, pv);
    }
    return new MapBox(flat);
  } finally {
    noSplice--;
  }
}

// A Map key as it appears in a path; String() throws for some objects
// (null prototype, a throwing toString), which must not crash the sender.
function keyLabel(k: unknown): string {
  try {
    return String(k);
  } catch {
    return `<${typeof k} key>`;
  }
}

/**
 * Prepares one field of a message (e.g. the arguments) for encoding. Fails
 * with ENCODE_ERROR and the path of the offending field, e.g. `.args[0].user.save`.
 */
export function prepareValue(value: unknown, name: string): unknown {
  try {
    return prepare(value, 0);
  } catch (err) {
    if (!(err instanceof Unsendable)) throw err;
    let path = `.${name}`;
    for (let i = err.keys.length - 1; i >= 0; i--) {
      const k = err.keys[i]!;
      path += typeof k === 'number' ? `[${k}]` : k instanceof MapKey ? `.${keyLabel(k.key)}` : `.${k}`;
    }
    throw encodeError(path, err.what);
  }
}

