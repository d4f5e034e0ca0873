// Cancellation and deadlines: the caller's promise settles at once, the
// handler sees ctx.signal aborted, and no timer keeps a process alive.
import { spawn } from 'node:child_process';
import { getEventListeners, once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RpcCode } from '../src/index.js';
import { eventually, fixtures } from './helpers.js';
import { useLab } from './lab.js';

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
