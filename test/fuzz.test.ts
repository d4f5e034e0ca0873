// Property-based fuzzing of every decoder a peer's bytes reach, in process:
// the frame header, the msgpack payload (with afunix's extensions), the RPC
// message dispatcher and the handshake, both sides. (The frame decoder's
// own reassembly and fd accounting are fuzzed in
// packages/framing/test/decoder.property.test.ts.)
//
// Short by default; FUZZ_RUNS=20000 (what `pnpm fuzz` does) for a long run,
// FUZZ_SEED=<n> to replay or vary (FUZZ_SEED=random: a new one, printed). A failure prints the seed and the
// shrunk counterexample (fast-check's report), so it can be replayed with
// FUZZ_SEED and fast-check's `path`.
import fc from 'fast-check';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { FramedChannel, HEADER_SIZE, encodeHeader } from '../packages/framing/dist/index.js';
import { FramingError as SrcFramingError } from '../packages/framing/src/errors.js';
import { checkHeader, checkHeaderPrefix, resolveLimits } from '../packages/framing/src/header.js';
import { ReceivedFds, socketPair } from '../packages/transport/dist/index.js';
import { decode, encode, encodeToBuffer, prepareValue } from '../packages/rpc/src/codec.js';
import { RpcConnection } from '../packages/rpc/src/connection.js';
import { clientHandshake, serverHandshake } from '../packages/rpc/src/handshake.js';
import { Fd, Msg, PROTOCOL_VERSION, RpcCode, RpcError } from '../packages/rpc/src/index.js';
import type { Hello } from '../packages/rpc/src/protocol.js';
import { report } from './helpers.js';

// A received fd wrapped in an Fd is closed by Fd.close(), through the
// transport's closeFd(), when a message fails to decode after it: those
// closes are counted here too.
const { closedByFd } = vi.hoisted(() => ({ closedByFd: [] as number[] }));
vi.mock('../packages/transport/dist/index.js', async (importOriginal) => {
  const transport = await importOriginal<typeof import('../packages/transport/dist/index.js')>();
  const closeFd = (fd: number) => (fd >= 1_000_000 ? void closedByFd.push(fd) : transport.closeFd(fd));
  return { ...transport, closeFd };
});

const SEED = process.env.FUZZ_SEED === 'random' ? Date.now() % 2 ** 31 : Number(process.env.FUZZ_SEED ?? 20_251_125);
const RUNS = Number(process.env.FUZZ_RUNS ?? 200);
// Long runs (pnpm fuzz) need more than vitest's 30 s per test.
const TIMEOUT = 30_000 + RUNS * 25;
// fd numbers no process here has open: closing one is a harmless EBADF.
const FAKE_FD = 1_000_000;
const protoBaseline = Object.getOwnPropertyNames(Object.prototype).sort().join();

function unpolluted(): void {
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.getOwnPropertyNames(Object.prototype).sort().join()).toBe(protoBaseline);
}

const figures: Record<string, number> = {};
function run<T>(name: string, arb: fc.Arbitrary<T>, check: (value: T) => void, runs = RUNS): void {
  figures[name] = runs;
  fc.assert(fc.property(arb, check), { seed: SEED, numRuns: runs });
}
async function runAsync<T>(name: string, arb: fc.Arbitrary<T>, check: (value: T) => Promise<void>, runs = RUNS): Promise<void> {
  figures[name] = runs;
  await fc.assert(fc.asyncProperty(arb, check), { seed: SEED, numRuns: runs });
}

afterAll(() => report('fuzz runs', { seed: SEED, ...figures }));

// Values as afunix carries them: msgpack's own types plus Map, Set, Error,
// Date, BigInt, bytes and undefined. `hostile` adds prototype keys and
// null-prototype objects, which do not come back the same (a __proto__ key
// arrives as __proto_, by design).
function values(hostile: boolean): fc.Arbitrary<unknown> {
  const leaf = fc.oneof(
    fc.integer(), fc.double().filter((d) => !Object.is(d, -0)), fc.string(), fc.boolean(), fc.constant(null), fc.constant(undefined),
    fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }), fc.date({ noInvalidDate: true }),
    fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
    fc.constantFrom('__proto__', 'constructor', 'prototype', '$describe'),
  );
  const key = hostile ? fc.oneof(fc.string(), fc.constantFrom('__proto__', 'constructor', 'prototype')) : fc.string().filter((k) => k !== '__proto__');
  return fc.letrec<{ v: unknown }>((tie) => ({
    v: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      leaf,
      fc.array(tie('v'), { maxLength: 5 }),
      fc.dictionary(key, tie('v'), { maxKeys: 5, noNullPrototype: !hostile }),
      fc.array(fc.tuple(tie('v'), tie('v')), { maxLength: 4 }).map((pairs) => new Map(pairs)),
      fc.array(tie('v'), { maxLength: 4 }).map((items) => new Set(items)),
      fc.tuple(fc.string(), fc.option(fc.string()), tie('v')).map(([message, code, data]) => new RpcError(message, { code: code ?? undefined, data })),
    ),
  })).v;
}
const value = values(true);

// A valid encoding, then damaged: bytes flipped, cut short, spliced.
const mutated = fc
  .tuple(value, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 }), fc.constantFrom('flip', 'cut', 'insert', 'delete')), { minLength: 1, maxLength: 4 }))
  .map(([v, edits]) => {
    let bytes = Buffer.from(encodeToBuffer([Msg.RESULT, 1, prepareValue(v, 'result')]));
    for (const [at, byte, how] of edits) {
      const i = bytes.length ? at % bytes.length : 0;
      if (how === 'flip') bytes[i] = byte;
      else if (how === 'cut') bytes = bytes.subarray(0, i);
      else if (how === 'insert') bytes = Buffer.concat([bytes.subarray(0, i), Buffer.from([byte]), bytes.subarray(i)]);
      else bytes = Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + 1)]);
    }
    return bytes;
  });

// Bytes that start with msgpack's container and extension markers more
// often than chance would have them.
const msgpackish = fc
  .array(fc.oneof(fc.nat({ max: 255 }), fc.constantFrom(0x90, 0x91, 0x94, 0x80, 0x81, 0xc7, 0xc8, 0xd4, 0xd5, 0xd6, 0x01, 0x02, 0x03, 0x04, 0xdc, 0xdd, 0xde, 0xdf, 0xc9)), { maxLength: 300 })
  .map((b) => Buffer.from(b));

const payloads = fc.oneof(fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)), msgpackish, mutated);

describe(`frame header (seed ${SEED})`, () => {
  it('any 0..16 bytes: only FramingErrors, and an accepted header is within the limits', () => {
    const limits = fc.record({ maxFrameSize: fc.nat({ max: 5000 }), maxFds: fc.nat({ max: 253 }) });
    run('frame header', fc.tuple(fc.uint8Array({ maxLength: 16 }), limits), ([bytes, l]) => {
      const resolved = resolveLimits(l);
      try {
        checkHeaderPrefix(bytes, 0, bytes.length);
        if (bytes.length >= HEADER_SIZE) {
          const length = checkHeader(bytes, 0, resolved);
          expect(length).toBeLessThanOrEqual(resolved.maxFrameSize);
          expect(bytes[3]).toBeLessThanOrEqual(resolved.maxFds);
          expect(encodeHeader(length, bytes[3]).equals(Buffer.from(bytes.subarray(0, HEADER_SIZE)))).toBe(true);
        }
      } catch (err) {
        expect(err).toBeInstanceOf(SrcFramingError);
      }
    }, RUNS * 5);
  }, TIMEOUT);
});

describe(`msgpack payload (seed ${SEED})`, () => {
  it('any bytes, with any fds: a message or a PROTOCOL_ERROR; every fd wrapped or closed, once', () => {
    run('msgpack payload', fc.tuple(payloads, fc.nat({ max: 4 })), ([bytes, fdCount]) => {
      const fds = Array.from({ length: fdCount }, (_, i) => FAKE_FD + i);
      const closed: number[] = [];
      let wrapped: number[] = [];
      try {
        const decoded = decode(bytes, fds.slice(), (fd) => closed.push(fd));
        wrapped = (decoded.fds ?? []).map((fd: Fd) => fd.take());
      } catch (err) {
        expect(err).toBeInstanceOf(RpcError);
        expect((err as RpcError).code).toBe(RpcCode.PROTOCOL_ERROR);
      }
      expect([...closed, ...closedByFd.splice(0), ...wrapped].sort()).toEqual(fds);
      unpolluted();
    }, RUNS * 5);
  }, TIMEOUT);

  it("msgpackr's extension types with any payload: a value of the type, or PROTOCOL_ERROR; no Invalid Date made up", () => {
    // Timestamp, undefined, BigInt, typed arrays, RegExp, and msgpackr's
    // Error, Set and bundled strings, in every ext form, with 0..20 bytes,
    // and for the types msgpackr reads after, a value after it.
    const types = fc.constantFrom(0xff, 0x00, 0x42, 0x74, 0x78, 0x65, 0x73, 0x62);
    const form = fc.tuple(types, fc.uint8Array({ maxLength: 20 }), fc.boolean(), fc.constantFrom(0x05, 0xc0, 0x90, 0x92)).map(([type, payload, fixed, after]) => {
      const fixedHead = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[payload.length];
      const head = fixed && fixedHead ? [fixedHead, type] : [0xc7, payload.length, type];
      return Buffer.from([0x94, Msg.RESULT, 0x01, ...head, ...payload, after]);
    });
    const kinds: Record<number, (v: unknown) => boolean> = {
      0xff: (v) => v instanceof Date,
      0x00: (v) => v === undefined,
      0x42: (v) => typeof v === 'bigint',
      0x74: (v) => ArrayBuffer.isView(v) || v instanceof ArrayBuffer,
      0x78: (v) => v instanceof RegExp,
    };
    run("msgpackr's extension types", form, (bytes) => {
      const type = bytes[bytes[3] === 0xc7 ? 5 : 4]!;
      let value: unknown;
      try {
        value = (decode(bytes, null, () => {}).message as unknown[])[2];
      } catch (err) {
        expect(err).toBeInstanceOf(RpcError);
        expect((err as RpcError).code).toBe(RpcCode.PROTOCOL_ERROR);
        return;
      }
      expect(kinds[type]?.(value) ?? false).toBe(true);
      // Only msgpackr's own marker (a payload of one byte, 0xff) stands for an invalid Date.
      const marker = (bytes[3] === 0xd4 && bytes[5] === 0xff) || (bytes[3] === 0xc7 && bytes[4] === 1 && bytes[6] === 0xff);
      if (value instanceof Date && Number.isNaN(value.getTime())) expect(marker).toBe(true);
    }, RUNS * 5);
  }, TIMEOUT);

  it('valid values survive the trip exactly', () => {
    run('msgpack round trip', values(false), (v) => {
      const { message } = decode(encodeToBuffer([Msg.RESULT, 1, prepareValue(v, 'result')]), null, () => {});
      expect((message as unknown[])[2]).toEqual(v);
      unpolluted();
    });
  }, TIMEOUT);
});

// ------------------------------------------------------- RPC dispatch

interface Rig {
  conn: RpcConnection;
  closeReasons: Array<string | undefined>;
  handled: string[];
  dispose(): void;
}

function rig(): Rig {
  const [ours, theirs] = socketPair();
  const channel = new FramedChannel(ours);
  const peer = new FramedChannel(theirs);
  peer.on('frame', () => {}); // read and drop what the connection answers
  peer.on('error', () => {});
  const handled: string[] = [];
  const handlers = new Map<string, (...args: unknown[]) => unknown>([
    ['add', (_ctx, a, b) => (handled.push('add'), (a as number) + (b as number))],
    ['echo', (_ctx, v) => (handled.push('echo'), v)],
    ['slow', () => (handled.push('slow'), new Promise((r) => setTimeout(r, 5)))],
    ['fail', () => { handled.push('fail'); throw new RpcError('no', { code: 'E_NO' }); }],
    ['count', async function* (_ctx: unknown, n: unknown) { handled.push('count'); for (let i = 0; i < Math.min(Number(n) || 0, 40); i++) yield i; }],
  ]);
  const conn = new RpcConnection(
    channel,
    { handlers, maxInFlight: 8, filterEvents: true, onEvent: () => handled.push('event') },
    { credentials: null, streams: ['count'] },
  );
  const closeReasons: Array<string | undefined> = [];
  conn.on('close', (reason) => closeReasons.push((reason as { code?: string } | null)?.code));
  return { conn, closeReasons, handled, dispose: () => { conn.destroy(); peer.destroy(); } };
}

const id = fc.oneof(fc.nat({ max: 5 }), fc.integer(), fc.double(), fc.string(), fc.constant(null));
const method = fc.oneof(fc.constantFrom('add', 'echo', 'slow', 'fail', 'count', '$describe', '__proto__', 'constructor', 'toString'), fc.string());
const args = fc.oneof(fc.array(value, { maxLength: 3 }), value);
const message: fc.Arbitrary<unknown> = fc.oneof(
  fc.tuple(fc.constant(Msg.REQUEST), id, method, args),
  fc.tuple(fc.constant(Msg.NOTIFY), method, args),
  fc.tuple(fc.constantFrom(Msg.RESULT, Msg.ERROR, Msg.STREAM_ITEM), id, value),
  fc.tuple(fc.constantFrom(Msg.CANCEL, Msg.STREAM_END), id),
  fc.tuple(fc.constant(Msg.CANCEL), id, fc.oneof(fc.constantFrom(RpcCode.TIMEOUT, RpcCode.ABORTED, RpcCode.CANCELLED, 'constructor'), fc.string(), value)),
  fc.tuple(fc.constant(Msg.CREDIT), id, fc.oneof(fc.integer(), value)),
  fc.tuple(fc.constant(Msg.EVENT), method, args),
  fc.tuple(fc.constantFrom(Msg.SUBSCRIBE, Msg.UNSUBSCRIBE), fc.oneof(fc.array(fc.string(), { maxLength: 3 }), value)),
  fc.tuple(fc.constantFrom(Msg.HELLO, Msg.GOODBYE, 13, -1, 1.5), value),
  value,
);
const frameOf = fc.oneof(
  { weight: 4, arbitrary: message.map((m) => Buffer.from(encodeToBuffer(m as unknown[]))) },
  { weight: 1, arbitrary: payloads },
);

describe(`RPC messages (seed ${SEED})`, () => {
  it('any sequence of messages: the connection answers or closes with PROTOCOL_ERROR, and never throws', async () => {
    await runAsync('rpc messages', fc.array(fc.tuple(frameOf, fc.nat({ max: 2 })), { minLength: 1, maxLength: 12 }), async (frames) => {
      const r = rig();
      try {
        let next = FAKE_FD;
        for (const [payload, fdCount] of frames) {
          if (r.conn.closed) break;
          const fds = fdCount ? new ReceivedFds(Array.from({ length: fdCount }, () => next++)) : null;
          // What the channel does for every frame; it must not throw.
          expect(() => r.conn.channel.onFrame!(payload, fds)).not.toThrow();
        }
        await new Promise((resolve) => setTimeout(resolve, 1));
        for (const code of r.closeReasons) expect(code).toBe(RpcCode.PROTOCOL_ERROR);
        unpolluted();
      } finally {
        r.dispose();
      }
    });
  }, TIMEOUT);
});

// ------------------------------------------------------------- handshake

const helloish: fc.Arbitrary<unknown> = fc.oneof(
  fc.record(
    {
      protocol: fc.oneof(fc.constant(PROTOCOL_VERSION), value),
      service: fc.oneof(fc.constantFrom('fuzz', 'other'), value),
      version: value,
      streams: fc.oneof(fc.array(fc.oneof(fc.string(), value), { maxLength: 3 }), value),
      maxMessageSize: fc.oneof(fc.nat(), value),
      error: value,
    },
    { requiredKeys: [] },
  ),
  value,
);
const firstFrame = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(fc.oneof(fc.constant(Msg.HELLO), value), helloish).map((m) => Buffer.from(encodeToBuffer(m))) },
  { weight: 1, arbitrary: payloads },
);

function handshakeRig(side: 'server' | 'client', frame: Buffer): { outcome: Array<{ ok: true; hello: Hello } | { ok: false; code: string | undefined }>; dispose(): void } {
  const [ours, theirs] = socketPair();
  const channel = new FramedChannel(ours);
  const peer = new FramedChannel(theirs);
  peer.on('frame', () => {});
  peer.on('error', () => {});
  const outcome: Array<{ ok: true; hello: Hello } | { ok: false; code: string | undefined }> = [];
  const ready = (hello: Hello) => outcome.push({ ok: true, hello });
  const fail = (err: Error) => outcome.push({ ok: false, code: (err as { code?: string }).code });
  if (side === 'server') serverHandshake(channel, { service: 'fuzz', streams: [] }, null, ready, fail);
  else clientHandshake(channel, { service: 'fuzz', streams: [], maxMessageSize: 1 << 20 }, ready, fail);
  expect(() => channel.onFrame!(frame, null)).not.toThrow();
  return { outcome, dispose: () => { channel.destroy(); peer.destroy(); } };
}

describe(`handshake (seed ${SEED})`, () => {
  it.each(['server', 'client'] as const)('%s side: any first frame settles the handshake once, with a sane hello or a code', async (side) => {
    await runAsync(`handshake (${side})`, firstFrame, async (frame) => {
      const { outcome, dispose } = handshakeRig(side, frame);
      try {
        expect(outcome).toHaveLength(1);
        const o = outcome[0]!;
        if (o.ok) {
          expect(o.hello.protocol).toBe(PROTOCOL_VERSION);
          expect(Array.isArray(o.hello.streams)).toBe(true);
          for (const s of o.hello.streams!) expect(typeof s).toBe('string');
          if (side === 'server') expect([undefined, 'fuzz']).toContain(o.hello.service);
        } else if (side === 'server') {
          expect([RpcCode.PROTOCOL_ERROR, RpcCode.PROTOCOL_MISMATCH, RpcCode.SERVICE_MISMATCH, RpcCode.MESSAGE_SIZE_TOO_SMALL]).toContain(o.code);
        } else {
          // A server's refusal carries the server's own error, code and all.
          expect(typeof o.code === 'string' || o.code === undefined).toBe(true);
        }
        unpolluted();
      } finally {
        dispose();
        // Sockets close on the event loop: let it turn, or the fds pile up.
        await new Promise((resolve) => setImmediate(resolve));
      }
    });
  }, TIMEOUT);
});
