// Two processes over real sockets: a framed echo server in a child (the
// built dist), this process as well-behaved and misbehaving clients. fds
// cross the process boundary both ways; every bad peer gets its own error
// code while the good connection goes on and the server leaks no fds.
import { type ChildProcess, fork } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type UnixSocket, connect } from '@afunix/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FramedChannel } from '../src/index.js';
import { frameBytes, rawHeader } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/echo-server.mjs', import.meta.url));
const MiB = 1024 * 1024;
const LIMITS = { maxFds: 4, maxFrameSize: 4 * MiB };

interface ServerEvent {
  event: string;
  code?: string;
  count?: number;
  connections?: number;
}

class ServerProcess {
  readonly events: ServerEvent[] = [];
  #waiters: Array<{ match: (e: ServerEvent) => boolean; resolve: (e: ServerEvent) => void }> = [];
  readonly child: ChildProcess;

  constructor(type: string, path: string) {
    this.child = fork(fixture, [type, path, JSON.stringify(LIMITS)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: ServerEvent) => {
      this.events.push(m);
      const i = this.#waiters.findIndex((w) => w.match(m));
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(m);
    });
  }

  next(event: string, timeoutMs = 5000): Promise<ServerEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no '${event}' from the server in ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({
        match: (e) => e.event === event,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }

  async fdCensus(): Promise<ServerEvent> {
    const answer = this.next('fds');
    this.child.send('fds');
    return answer;
  }

  stop(): void {
    if (this.child.connected) this.child.send('exit');
    setTimeout(() => this.child.kill('SIGKILL'), 2000).unref();
  }
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Waits for the raw peer to see its connection closed by the server. */
function serverHangsUp(raw: UnixSocket): Promise<void> {
  return within(
    new Promise<void>((resolve) => {
      raw.on('error', () => resolve());
      raw.on('end', () => resolve());
      raw.on('close', () => resolve());
      raw.resume();
    }),
    5000,
    'server hang-up',
  );
}

let dir: string;
let file: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'afunix-framing-proc-'));
  file = join(dir, 'shared.txt');
  writeFileSync(file, 'crossed a process boundary');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function contentOf(fd: number): string {
  const buf = Buffer.alloc(64);
  return buf.subarray(0, readSync(fd, buf, 0, 64, 0)).toString();
}

for (const type of ['stream', 'seqpacket'] as const) {
  describe(`two processes over ${type}`, () => {
    let server: ServerProcess;
    let path: string;
    let good: FramedChannel;
    let replies: Array<{ payload: Buffer; contents: string[] }>;
    let cleanCensus: ServerEvent;

    beforeAll(async () => {
      path = join(dir, `${type}.sock`);
      server = new ServerProcess(type, path);
      await server.next('ready', 10_000);
      const socket = await connect(path, { type, maxMessageSize: 2 * MiB, sendBufferSize: 4 * MiB });
      good = new FramedChannel(socket, LIMITS);
      replies = [];
      good.onFrame = (payload, fds) => {
        const contents = fds
          ? fds.take().map((fd) => {
              const text = contentOf(fd);
              closeSync(fd);
              return text;
            })
          : [];
        replies.push({ payload: Buffer.from(payload), contents });
      };
      await roundTrip(Buffer.from('warm up'));
      cleanCensus = await server.fdCensus(); // before any bad peer: the listener + the good connection
    });

    afterAll(() => {
      good?.destroy();
      server?.stop();
    });

    async function roundTrip(payload: Buffer, fds: number[] = []): Promise<{ payload: Buffer; contents: string[] }> {
      const before = replies.length;
      good.send(payload, fds);
      await within(
        (async () => {
          while (replies.length === before) await delay(2);
        })(),
        5000,
        'echo',
      );
      return replies[before]!;
    }

    it('echoes frames with fds across the process boundary', async () => {
      const fd = openSync(file, 'r');
      try {
        const small = await roundTrip(Buffer.from('ping'), [fd, fd]);
        expect(small.payload.toString()).toBe('ping');
        expect(small.contents).toEqual(['crossed a process boundary', 'crossed a process boundary']);
        const big = Buffer.alloc(MiB);
        for (let i = 0; i < big.length; i += 4096) big[i] = i >> 12;
        const echoed = await roundTrip(big, [fd]);
        expect(echoed.payload.equals(big)).toBe(true);
        expect(echoed.contents).toEqual(['crossed a process boundary']);
        const empty = await roundTrip(Buffer.alloc(0));
        expect(empty.payload.length).toBe(0);
      } finally {
        closeSync(fd);
      }
    });

    it('many frames in flight come back whole and in order', async () => {
      const before = replies.length;
      for (let i = 0; i < 2000; i++) good.send(Buffer.from(`frame ${i} `.repeat((i % 7) + 1)));
      await within(
        (async () => {
          while (replies.length < before + 2000) await delay(5);
        })(),
        10_000,
        '2000 echoes',
      );
      const got = replies.slice(before).map((r) => r.payload.toString());
      expect(got).toEqual(Array.from({ length: 2000 }, (_, i) => `frame ${i} `.repeat((i % 7) + 1)));
    });

    it('under load, every fd comes back with its own frame', async () => {
      // Frames of mixed sizes (some spanning many reads), every third with
      // an fd to one of three files, so a misplaced fd shows as wrong content.
      const files = [0, 1, 2].map((i) => {
        const path = join(dir, `file-${i}.txt`);
        writeFileSync(path, `file number ${i}`);
        return openSync(path, 'r');
      });
      try {
        const before = replies.length;
        const count = 600;
        const sizeOf = (i: number): number => [10, 3000, 70_000, 0, 200_000][i % 5]!;
        for (let i = 0; i < count; i++) {
          const payload = Buffer.alloc(sizeOf(i), i & 0xff);
          if (!good.send(payload, i % 3 === 0 ? [files[i % 9 === 0 ? 0 : i % 2 === 0 ? 1 : 2]!] : null)) await good.drained();
        }
        await within(
          (async () => {
            while (replies.length < before + count) await delay(5);
          })(),
          20_000,
          `${count} echoes`,
        );
        const got = replies.slice(before);
        for (let i = 0; i < count; i++) {
          expect(got[i]!.payload.length).toBe(sizeOf(i));
          if (sizeOf(i) > 0) expect(got[i]!.payload[0]).toBe(i & 0xff);
          const expected = i % 3 === 0 ? [`file number ${i % 9 === 0 ? 0 : i % 2 === 0 ? 1 : 2}`] : [];
          expect(got[i]!.contents).toEqual(expected);
        }
      } finally {
        // Every echo is back, so every fd we sent has long left.
        for (const fd of files) closeSync(fd);
      }
    });

    const badPeers: Array<[string, string, (raw: UnixSocket, fd: number) => Promise<void>]> = [
      ['an oversized header', 'FRAME_TOO_LARGE', async (raw) => {
        raw.write(type === 'stream' ? rawHeader({ length: 0xffffffff }) : Buffer.concat([rawHeader({ length: 5 * MiB }), Buffer.alloc(8)]));
      }],
      ['garbage', 'PROTOCOL_ERROR', async (raw) => {
        raw.write(Buffer.from('\x00\x01garbage, not a frame'));
      }],
      ['too many fds', 'TOO_MANY_FDS', async (raw, fd) => {
        raw.send(frameBytes(Buffer.from('x'), 5), [fd, fd, fd, fd, fd]);
      }],
      ['fds the header does not declare', 'PROTOCOL_ERROR', async (raw, fd) => {
        raw.send(frameBytes(Buffer.from('x')), [fd]);
      }],
    ];
    if (type === 'stream') {
      badPeers.push(
        ['fds in the middle of a frame', 'PROTOCOL_ERROR', async (raw, fd) => {
          const frame = frameBytes(Buffer.alloc(200, 1));
          raw.write(frame.subarray(0, 100));
          await delay(20);
          raw.send(frame.subarray(100), [fd]);
        }],
        ['a frame cut off by end of stream, with its fd', 'TRUNCATED_FRAME', async (raw, fd) => {
          raw.send(frameBytes(Buffer.alloc(200), 1).subarray(0, 120), [fd]);
          await delay(20);
          raw.end();
        }],
      );
    } else {
      badPeers.push(['a packet longer than its frame', 'PROTOCOL_ERROR', async (raw, fd) => {
        raw.send(Buffer.concat([frameBytes(Buffer.from('abc'), 1), Buffer.from('extra')]), [fd]);
      }]);
    }

    for (const [what, code, misbehave] of badPeers) {
      it(`a peer sending ${what} gets ${code}; the server goes on serving`, async () => {
        const raw = await connect(path, { type });
        const fd = openSync(file, 'r');
        try {
          const reported = server.next('error');
          const hungUp = serverHangsUp(raw);
          await misbehave(raw, fd);
          expect((await reported).code).toBe(code);
          await hungUp;
        } finally {
          raw.destroy();
          closeSync(fd);
        }
        const still = await roundTrip(Buffer.from(`after ${what}`));
        expect(still.payload.toString()).toBe(`after ${what}`);
      });
    }

    it('the server holds no fds from the bad peers afterwards', async () => {
      // Only the good connection is left; its census must settle at the
      // listening socket + one connection, whatever the bad peers sent.
      let census = await server.fdCensus();
      for (let i = 0; i < 50 && census.connections !== 1; i++) {
        await delay(20);
        census = await server.fdCensus();
      }
      expect(census.connections).toBe(1);
      const baseline = census.count!;
      expect(baseline, 'fds the server held after the bad peers, vs before them').toBe(cleanCensus.count);
      // One more good connection that passes fds and leaves: back to baseline.
      const extra = new FramedChannel(await connect(path, { type }), LIMITS);
      const fd = openSync(file, 'r');
      const echoed = new Promise<void>((resolve) => {
        extra.onFrame = () => resolve();
      });
      extra.send(Buffer.from('x'), [fd]);
      await within(echoed, 5000, 'extra echo');
      closeSync(fd);
      extra.destroy();
      for (let i = 0; i < 50; i++) {
        census = await server.fdCensus();
        if (census.count === baseline && census.connections === 1) break;
        await delay(20);
      }
      expect(census.count).toBe(baseline);
      expect(server.events.filter((e) => e.event === 'send-error')).toEqual([]);
    });
  });
}
