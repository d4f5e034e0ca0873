// FramedChannel over plain Node Duplexes: net.Socket (no fd passing) and an
// in-memory pair that records how writes reach the stream.
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FramedChannel, HEADER_SIZE } from '../src/index.js';
import { codeOf, frameBytes } from './helpers.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'afunix-framing-duplex-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

async function netPair(): Promise<[net.Socket, net.Socket]> {
  const path = join(dir, `s${cleanup.length}-${Date.now()}.sock`);
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = once(server, 'connection');
  const client = net.createConnection({ path, allowHalfOpen: true });
  const [serverSide] = (await accepted) as [net.Socket];
  server.close();
  cleanup.push(() => {
    client.destroy();
    serverSide.destroy();
  });
  return [client, serverSide];
}

/** Two in-memory Duplexes wired to each other; `writes` records each _write/_writev call's chunk count. */
function memoryPair(): { a: Duplex; b: Duplex; writes: number[] } {
  const writes: number[] = [];
  const make = (): Duplex =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        writes.push(1);
        peerOf(this).push(chunk);
        cb();
      },
      writev(chunks, cb) {
        writes.push(chunks.length);
        for (const { chunk } of chunks) peerOf(this).push(chunk);
        cb();
      },
      final(cb) {
        peerOf(this).push(null);
        cb();
      },
    });
  const a = make();
  const b = make();
  const peers = new Map([
    [a, b],
    [b, a],
  ]);
  const peerOf = (d: Duplex): Duplex => peers.get(d)!;
  return { a, b, writes };
}

describe('over net.Socket', () => {
  it('carries small and large frames; fdPassing is false', async () => {
    const [c, s] = await netPair();
    const a = new FramedChannel(c);
    const b = new FramedChannel(s);
    expect(a.fdPassing).toBe(false);
    const sizes: number[] = [];
    b.onFrame = (p) => sizes.push(p.length);
    const big = Buffer.alloc(3 * 1024 * 1024, 5);
    a.send(Buffer.from('hello'));
    a.send(big);
    a.send([Buffer.alloc(10), Buffer.alloc(0), Buffer.alloc(20)]);
    a.end();
    await once(b, 'end');
    expect(sizes).toEqual([5, big.length, 30]);
  });

  it('fds over a plain Duplex are ERR_AFUNIX_UNSUPPORTED, nothing sent', async () => {
    const [c] = await netPair();
    const a = new FramedChannel(c);
    expect(codeOf(() => a.send(Buffer.from('x'), [0]))).toBe('ERR_AFUNIX_UNSUPPORTED');
    expect(a.stats.framesOut).toBe(0);
  });

  it('a frame cut off by the peer ending is TRUNCATED_FRAME', async () => {
    const [c, s] = await netPair();
    const b = new FramedChannel(s);
    const error = once(b, 'error').catch((err: unknown) => err);
    c.end(frameBytes(Buffer.alloc(100)).subarray(0, 60));
    expect(((await error) as [{ code: string }])[0].code).toBe('TRUNCATED_FRAME');
  });

  it('a header declaring fds is a PROTOCOL_ERROR where fds cannot travel', async () => {
    const [c, s] = await netPair();
    const b = new FramedChannel(s);
    const error = once(b, 'error');
    c.write(frameBytes(Buffer.from('x'), 1));
    expect(((await error) as [{ code: string }])[0].code).toBe('PROTOCOL_ERROR');
  });
});

describe('write path over any Duplex', () => {
  it('frames written in one tick reach the stream in one writev', async () => {
    const { a, b, writes } = memoryPair();
    const ca = new FramedChannel(a);
    const cb = new FramedChannel(b);
    const got: number[] = [];
    cb.onFrame = (p) => got.push(p.length);
    for (let i = 0; i < 100; i++) ca.send(Buffer.alloc(64));
    ca.send(Buffer.alloc(100_000)); // large: header and payload as separate pieces
    await delay(5);
    // One _writev call: small frames packed into a few slabs, then the large frame's header and payload.
    expect(writes).toHaveLength(1);
    expect(writes[0]).toBeLessThan(10);
    expect(got).toEqual([...Array(100).fill(64), 100_000]);
  });

  it('never copies a large payload: the payload object itself is written', async () => {
    const { a } = memoryPair();
    const seen: unknown[] = [];
    const original = a.write.bind(a);
    a.write = ((chunk: unknown, ...rest: never[]) => {
      seen.push(chunk);
      return original(chunk as Buffer, ...rest);
    }) as typeof a.write;
    const ca = new FramedChannel(a);
    const payload = Buffer.alloc(64 * 1024);
    ca.send(payload);
    expect(seen).toHaveLength(2);
    expect((seen[0] as Buffer).length).toBe(HEADER_SIZE);
    expect(seen[1]).toBe(payload);
  });

  it('passes backpressure through: false from send(), then drain', async () => {
    const slow = new Duplex({
      highWaterMark: 1024,
      read() {},
      write(_chunk, _enc, cb) {
        setTimeout(cb, 1);
      },
    });
    const ch = new FramedChannel(slow);
    let ok = true;
    let n = 0;
    while (ok && n < 1000) {
      ok = ch.send(Buffer.alloc(512));
      n++;
    }
    expect(ok).toBe(false);
    expect(n).toBeLessThan(10);
    await ch.drained();
    expect(slow.writableNeedDrain).toBe(false);
    ch.destroy();
  });
});
