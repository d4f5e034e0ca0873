// What a read batch from the native side turns into: its bytes as a Buffer
// (small ones as views of a shared pool), and the fds and credentials that
// came with each chunk.
import { createRequire } from 'node:module';
import { ReceivedFds } from './fds.js';

export interface Credentials {
  pid: number;
  uid: number;
  gid: number;
}

// Buffer's own constructor for views (what Buffer.from(arrayBuffer) ends in),
// reached through Buffer[Symbol.species] without Buffer.from's checks.
type ViewConstructor = new (buffer: ArrayBuffer, byteOffset: number, length: number) => Buffer;
const species = (Buffer as unknown as { [Symbol.species]?: unknown })[Symbol.species];
const FastBuffer: ViewConstructor =
  typeof species === 'function' && species !== Buffer
    ? (species as ViewConstructor)
    : (class {
        constructor(buffer: ArrayBuffer, byteOffset: number, length: number) {
          return Buffer.from(buffer, byteOffset, length);
        }
      } as unknown as ViewConstructor);
let lastPool: ArrayBuffer | null = null;
let copyingFromPool = false;
let markAsUntransferable: ((object: object) => void) | null = null;

/**
 * The batch's bytes: a Buffer of their own, or (offset given) a view of the
 * read pool, or of the buffer the receiver named with readInto().
 */
export function batchBytes(bytes: Buffer | ArrayBuffer | Uint8Array, offset: number | undefined, length: number | undefined): Buffer {
  if (offset === undefined) return bytes as Buffer;
  if (bytes instanceof ArrayBuffer) return poolView(bytes, offset, length!);
  return new FastBuffer(bytes.buffer as ArrayBuffer, bytes.byteOffset + offset, length!);
}

// Small reads share a pool, as Buffer.allocUnsafe's results do: a Buffer
// handed out is a view of it. Like Node's own pool it may not be transferred
// to another thread, which would take the memory from every other view.
// The environment's first pool is never handed out: its bytes are copied
// into Buffers of Node's own pool. Marking a pool loads worker_threads
// (2-3 ms), which a process that reads a few small messages, a CLI asking
// its daemon one thing, would pay for nothing.
function poolView(pool: ArrayBuffer, offset: number, length: number): Buffer {
  if (pool !== lastPool) {
    copyingFromPool = lastPool === null;
    lastPool = pool;
    // worker_threads is loaded when first needed, not with this module.
    // Loaded at startup it tipped how the heap is laid out so that bulk
    // receivers nearly always got their 120 KiB batch buffers as fresh,
    // page-faulting memory (19k instead of 12k faults per 128 MiB, ~40% more
    // receiver CPU; 10 of 10 runs, against 2 to 6 of 10 before the pool).
    if (!copyingFromPool) {
      markAsUntransferable ??= (createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads')).markAsUntransferable;
      markAsUntransferable(pool);
    }
  }
  if (!copyingFromPool) return new FastBuffer(pool, offset, length);
  const copy = Buffer.allocUnsafe(length);
  copy.set(new Uint8Array(pool, offset, length));
  return copy;
}

// A batch with metadata comes with chunks = [len, fds, addr, cred, ...].

export function chunkLength(chunks: unknown[], i: number): number {
  return chunks[i] as number;
}

export function chunkFds(chunks: unknown[], i: number): ReceivedFds | null {
  return chunks[i + 1] ? new ReceivedFds(chunks[i + 1] as number[]) : null;
}

export function chunkCredentials(chunks: unknown[], i: number): Credentials | null {
  const raw = chunks[i + 3];
  if (!Array.isArray(raw)) return null;
  return { pid: raw[0] as number, uid: raw[1] as number, gid: raw[2] as number };
}

/** Closes the fds of every chunk from index `from` on: nobody will take them. */
export function closeChunkFds(chunks: unknown[], from: number): void {
  for (let i = from; i < chunks.length; i += 4) {
    const fds = chunks[i + 1];
    if (Array.isArray(fds)) new ReceivedFds(fds as number[]).close();
  }
}
