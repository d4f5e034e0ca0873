// Cancellation and deadlines: the caller's promise settles at once, the
// handler sees ctx.signal aborted, and no timer keeps a process alive.
import { spawn } from 'node:child_process';
import { getEventListeners, once } from 'node:events';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Msg, RpcCode, connect, createServer } from '../src/index.js';
import { eventually, fixtures } from './helpers.js';
import { useLab } from './lab.js';
import { helloFrame, messageFrame, rawPeer } from './wire.js';

const lab = useLab();

describe('cancellation', () => {
  it('aborts a call through its AbortSignal; the handler sees its signal aborted', async () => {
    const before = (await lab.client.seen()).aborted;
    const controller = new AbortController();
    const call = lab.client.$with({ signal: controller.signal }).delay(60_000, 1);
    await lab.client.add(0, 0); // the call has reached the server
    controller.abort(new Error('user gave up'));
    await expect(call).rejects.toMatchObject({ name: 'AbortError', code: RpcCode.ABORTED });
    await eventually(async () => (await lab.client.seen()).aborted === before + 1);
  });

  it('rejects at once with an already-aborted signal, sending nothing', async () => {
    const call = lab.client.$with({ signal: AbortSignal.abort() }).add(1, 2);
    await expect(call).rejects.toMatchObject({ code: RpcCode.ABORTED });
  });

  it('refuses a signal that is no AbortSignal with ERR_INVALID_ARG_VALUE, sending nothing; the connection goes on', async () => {
    const disconnects = (await lab.client.troubles()).disconnects.length;
    for (const signal of [{}, 'abort', { aborted: false }] as unknown as AbortSignal[]) {
      const odd = lab.client.$with({ signal });
      await expect(odd.add(1, 2)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      const items: number[] = [];
      const streaming = (async () => {
        for await (const n of odd.count(2)) items.push(n);
      })();
      await expect(streaming).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      expect(items).toEqual([]);
    }
    expect(await lab.client.add(2, 2)).toBe(4);
    expect((await lab.client.troubles()).disconnects).toHaveLength(disconnects);
  });

  it('one signal shared by many calls in flight: one abort listener, no leak warning, and abort fails them all', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on('warning', onWarning);
    try {
      const batch = new AbortController();
      const calls = Array.from({ length: 50 }, () => lab.client.$with({ signal: batch.signal }).delay(60_000, 1));
      expect(getEventListeners(batch.signal, 'abort')).toHaveLength(1);
      batch.abort();
      for (const call of calls) await expect(call).rejects.toMatchObject({ code: RpcCode.ABORTED });
      // Calls that settle give the listener back with the last of them.
      const quick = new AbortController();
      const sums = await Promise.all(Array.from({ length: 20 }, (_, i) => lab.client.$with({ signal: quick.signal }).add(i, 1)));
      expect(sums[19]).toBe(20);
      expect(getEventListeners(quick.signal, 'abort')).toHaveLength(0);
      // A signal per call: aborting one fails that call alone.
      const own = Array.from({ length: 5 }, () => new AbortController());
      const each = own.map((controller, i) => lab.client.$with({ signal: controller.signal }).delay(i === 2 ? 60_000 : 20, i));
      own[2]!.abort();
      const settled = await Promise.allSettled(each);
      expect(settled.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
      for (const controller of own) expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
      await new Promise((resolve) => setImmediate(resolve)); // (warnings are emitted on the next tick)
      expect(warnings).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('fails a call past its deadline with ETIMEDOUT and cancels it on the server', async () => {
    const before = (await lab.client.seen()).aborted;
    await expect(lab.client.$with({ timeout: 50 }).delay(60_000, 1)).rejects.toMatchObject({ code: RpcCode.TIMEOUT });
    await eventually(async () => (await lab.client.seen()).aborted === before + 1);
  });

  it('leaves a call that finishes in time alone', async () => {
    expect(await lab.client.$with({ timeout: 60_000, signal: new AbortController().signal }).add(2, 3)).toBe(5);
  });

  it('never keeps a process alive with its timers', async () => {
    // A client that made calls with long deadlines and closed must exit on its own.
    const child = spawn(process.execPath, [join(fixtures, 'timeout-client.mjs'), lab.service.address], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    const [code] = await once(child, 'exit');
    expect(out.trim()).toBe('3');
    expect(code).toBe(0);
  });
});

describe("why the handler's signal aborted (ctx.signal.reason, across processes)", () => {
  // The reasons the lab service's handlers saw after `from` of them.
  async function reasonsAfter(from: number, count: number) {
    await eventually(async () => (await lab.client.seen()).reasons.length >= from + count);
    return (await lab.client.seen()).reasons.slice(from);
  }
  const seenSoFar = async () => (await lab.client.seen()).reasons.length;

  it("the caller's AbortSignal: ABORT_ERR, the code its call failed with", async () => {
    const from = await seenSoFar();
    const controller = new AbortController();
    const call = lab.client.$with({ signal: controller.signal }).delay(60_000, 1);
    await lab.client.add(0, 0); // the call has reached the server
    controller.abort();
    await expect(call).rejects.toMatchObject({ code: RpcCode.ABORTED });
    expect(await reasonsAfter(from, 1)).toEqual([{ method: 'delay', name: 'AbortError', code: RpcCode.ABORTED, message: 'the caller aborted the call' }]);
  });

  it("the caller's deadline: ETIMEDOUT, the code its call failed with", async () => {
    const from = await seenSoFar();
    await expect(lab.client.$with({ timeout: 50 }).delay(60_000, 1)).rejects.toMatchObject({ code: RpcCode.TIMEOUT });
    expect(await reasonsAfter(from, 1)).toEqual([{ method: 'delay', name: 'AbortError', code: RpcCode.TIMEOUT, message: "the caller's deadline passed" }]);
  });

  it('a signal that is a deadline (AbortSignal.timeout()): ETIMEDOUT, as the call\'s own timeout', async () => {
    const from = await seenSoFar();
    await expect(lab.client.$with({ signal: AbortSignal.timeout(50) }).delay(60_000, 1)).rejects.toMatchObject({ code: RpcCode.TIMEOUT });
    expect(await reasonsAfter(from, 1)).toEqual([{ method: 'delay', name: 'AbortError', code: RpcCode.TIMEOUT, message: "the caller's deadline passed" }]);
    // One that has passed already fails the call before it leaves.
    const passed = AbortSignal.timeout(1);
    await sleep(20);
    await expect(lab.client.$with({ signal: passed }).add(1, 2)).rejects.toMatchObject({ code: RpcCode.TIMEOUT, cause: passed.reason });
  });

  it('a consumer that stopped reading a stream: CANCELLED', async () => {
    const from = await seenSoFar();
    for await (const n of lab.client.count(1_000_000)) if (n === 1) break;
    expect(await reasonsAfter(from, 1)).toEqual([{ method: 'count', name: 'AbortError', code: RpcCode.CANCELLED, message: 'the caller stopped reading the stream' }]);
  });

  it("a stream's deadline and signal: ETIMEDOUT and ABORT_ERR", async () => {
    const from = await seenSoFar();
    const timed = lab.client.$with({ timeout: 100 }).count(1_000_000);
    await timed.next(); // running, then left unread past its deadline
    await sleep(300);
    await expect(timed.next()).rejects.toMatchObject({ code: RpcCode.TIMEOUT });
    const controller = new AbortController();
    const aborted = lab.client.$with({ signal: controller.signal }).count(1_000_000);
    await aborted.next();
    controller.abort();
    await expect(aborted.next()).rejects.toMatchObject({ code: RpcCode.ABORTED });
    const codes = (await reasonsAfter(from, 2)).map((r) => [r.method, r.code]);
    expect(codes).toEqual([['count', RpcCode.TIMEOUT], ['count', RpcCode.ABORTED]]);
  });
});

describe('a CANCEL from a peer that gives no reason, or one that is wrong (PROTOCOL.md 2.9)', () => {
  // A server whose `hang` handler waits until cancelled and reports why.
  async function hangingServer() {
    const reasons: unknown[] = [];
    const closes: Array<string | undefined> = [];
    const server = createServer({
      service: 'hang',
      handlers: {
        hang: (ctx: { signal: AbortSignal }) =>
          new Promise((_, reject) =>
            ctx.signal.addEventListener('abort', () => {
              const r = ctx.signal.reason as { name?: string; code?: string; message?: string };
              reasons.push({ name: r.name, code: r.code, message: r.message });
              reject(r);
            }),
          ),
      },
    });
    server.on('disconnect', (_conn, reason) => closes.push((reason as { code?: string } | null)?.code));
    const address = `@afunix-cancel-reason-${process.pid}-${Math.random().toString(36).slice(2)}`;
    await server.listen(address);
    return { address, reasons, closes, close: () => server.close({ timeout: 0 }) };
  }

  async function cancelWith(address: string, cancel: unknown[]) {
    const peer = await rawPeer(address);
    peer.send(helloFrame());
    expect(await peer.nextMessage()).toMatchObject([Msg.HELLO, { service: 'hang' }]);
    peer.send(messageFrame([Msg.REQUEST, 1, 'hang', []]));
    peer.send(messageFrame([Msg.REQUEST, 2, 'missing', []]));
    await peer.nextMessage(); // (METHOD_NOT_FOUND for 2: the call 1 before it is running)
    peer.send(messageFrame(cancel));
    return peer;
  }

  it("a handler's signal passed on to its own calls carries its caller's deadline: ETIMEDOUT downstream too", async () => {
    const downstream = await hangingServer();
    const far = await connect<{ methods: { hang(): void } }>(downstream.address);
    const relay = createServer<{ methods: { relay(): void } }>({
      service: 'relay',
      handlers: { relay: (ctx) => far.$with({ signal: ctx.signal }).hang() },
    });
    const address = `@afunix-relay-${process.pid}-${Math.random().toString(36).slice(2)}`;
    await relay.listen(address);
    const near = await connect<{ methods: { relay(): void } }>(address);
    try {
      await expect(near.$with({ timeout: 100 }).relay()).rejects.toMatchObject({ code: RpcCode.TIMEOUT });
      await eventually(() => downstream.reasons.length === 1);
      expect(downstream.reasons).toEqual([{ name: 'AbortError', code: RpcCode.TIMEOUT, message: "the caller's deadline passed" }]);
    } finally {
      await near.$close();
      await relay.close({ timeout: 0 });
      await far.$close();
      await downstream.close();
    }
  });

  const generic = { name: 'AbortError', code: RpcCode.ABORTED, message: 'the call was aborted' };

  it('a caller that goes away: CONNECTION_CLOSED, an AbortError as the others are', async () => {
    const s = await hangingServer();
    try {
      const peer = await rawPeer(s.address);
      peer.send(helloFrame());
      await peer.nextMessage();
      peer.send(messageFrame([Msg.REQUEST, 1, 'hang', []]));
      peer.send(messageFrame([Msg.REQUEST, 2, 'missing', []]));
      await peer.nextMessage(); // (call 1 is running)
      peer.destroy();
      await eventually(() => s.reasons.length === 1);
      expect(s.reasons).toEqual([{ name: 'AbortError', code: RpcCode.CONNECTION_CLOSED, message: expect.any(String) }]);
    } finally {
      await s.close();
    }
  });

  it('without a reason it means what it always did: the AbortError ABORT_ERR', async () => {
    const s = await hangingServer();
    try {
      const peer = await cancelWith(s.address, [Msg.CANCEL, 1]);
      await eventually(() => s.reasons.length === 1);
      expect(s.reasons).toEqual([generic]);
      peer.destroy();
    } finally {
      await s.close();
    }
  });

  it('with a reason this side does not know (a newer peer), the same', async () => {
    const s = await hangingServer();
    try {
      const peer = await cancelWith(s.address, [Msg.CANCEL, 1, 'SOME_LATER_REASON']);
      await eventually(() => s.reasons.length === 1);
      expect(s.reasons).toEqual([generic]);
      // (Nor does a name of Object.prototype's count as a reason.)
      peer.send(messageFrame([Msg.REQUEST, 3, 'hang', []]));
      peer.send(messageFrame([Msg.CANCEL, 3, 'constructor']));
      await eventually(() => s.reasons.length === 2);
      expect(s.reasons[1]).toEqual(generic);
      peer.destroy();
    } finally {
      await s.close();
    }
  });

  it('with a reason that is not a string (null too) is a PROTOCOL_ERROR, as any field of the wrong type', async () => {
    const s = await hangingServer();
    try {
      for (const reason of [42, null, ['ETIMEDOUT'], true]) {
        const peer = await cancelWith(s.address, [Msg.CANCEL, 1, reason]);
        expect(await Promise.race([peer.closed.then(() => 'closed'), sleep(5_000).then(() => 'still open')])).toBe('closed');
        peer.destroy();
      }
      await eventually(() => s.closes.length === 4);
      expect(s.closes).toEqual(Array(4).fill(RpcCode.PROTOCOL_ERROR));
      // The handlers were aborted by their connections' end, not by the CANCEL.
      expect(s.reasons).toHaveLength(4);
      for (const r of s.reasons) expect(r).toMatchObject({ code: RpcCode.CONNECTION_CLOSED });
    } finally {
      await s.close();
    }
  });
});
