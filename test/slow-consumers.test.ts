// Clients that stop reading while the server streams to them, publishes
// events or answers their calls. The server's memory stays bounded: a stream
// by its credit window, everything else by the per-connection outbound cap
// (maxOutboundBytes), past which the stuck client is cut off with
// SLOW_CONSUMER. Other clients see every event and keep their latency.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Msg, STREAM_WINDOW, type RpcClient, connect } from '../packages/rpc/src/index.js';
import {
  type RawPeer, type Target, type TargetContract, delta, eventually, helloFrame, messageFrame, rawPeer, report, startTarget, tempDir, within,
} from './helpers.js';

const MiB = 1024 * 1024;
const CAP = 8 * MiB;
const tmp = tempDir();
let t: Target;
const stuck: RawPeer[] = [];

beforeAll(async () => {
  t = await startTarget(join(tmp.dir, 'slow.sock'), { maxOutboundBytes: CAP });
});

afterAll(async () => {
  stuck.forEach((p) => p.destroy());
  await t?.kill();
  tmp.cleanup();
});

/** A client that says hello, asks for something, and never reads again. */
async function stuckPeer(...requests: unknown[][]): Promise<RawPeer> {
  const peer = await rawPeer(t.address);
  peer.send(helloFrame());
  await eventually(() => peer.received().length > 0, 5_000, 'the server hello');
  peer.socket.pauseReading(); // the kernel buffers fill, then the server's queue
  for (const r of requests) peer.send(messageFrame(r));
  stuck.push(peer);
  return peer;
}

describe('a client that stops reading', () => {
  it('a stream to it stops at the credit window: the producer waits, memory does not grow', async () => {
    const before = await t.stats();
    await stuckPeer([Msg.REQUEST, 1, 'feed', [1_000_000, 64 * 1024]]);
    await new Promise((r) => setTimeout(r, 1_500));
    const mid = await t.stats();
    await new Promise((r) => setTimeout(r, 1_500));
    const after = await t.stats();
    const produced = after.counts.streamed - before.counts.streamed;
    // 32 items without credit, and not one more while nobody reads.
    expect(produced).toBeLessThanOrEqual(STREAM_WINDOW + 1);
    expect(after.counts.streamed).toBe(mid.counts.streamed);
    report('stream to a client that stopped reading', { itemsProduced: produced, itemBytes: 64 * 1024, rssGrowthMiB: Math.round((after.rss - before.rss) / MiB) });
  });

  it('events and answers to stuck clients: each is cut off with SLOW_CONSUMER at the cap; a healthy subscriber gets everything', async () => {
    const healthy = await connect<TargetContract>(t.address);
    let received = 0;
    healthy.$events.on('tick', () => received++);
    await healthy.add(0, 0); // the subscription has arrived
    const before = await t.stats();
    // Five stuck subscribers, and one that asks for big answers and does not read them.
    for (let i = 0; i < 5; i++) await stuckPeer([Msg.SUBSCRIBE, ['tick']]);
    await stuckPeer(...Array.from({ length: 64 }, (_, i) => [Msg.REQUEST, i + 1, 'echo', [Buffer.alloc(256 * 1024, i)]]));
    await eventually(async () => (await t.stats()).connections === before.connections + 6, 5_000, 'six stuck clients connected');

    let published = 0;
    let peakRss = before.rss;
    let slowest = 0;
    // 64 KiB events until the stuck ones are cut off (64 MiB each at most).
    for (let round = 0; round < 1024; round++) {
      published += 8;
      const started = performance.now();
      await healthy.publish(8, 64 * 1024);
      await within(eventually(() => received === published, 10_000, 'the healthy subscriber keeping up'), 11_000, 'events');
      slowest = Math.max(slowest, performance.now() - started);
      const s = await t.stats();
      peakRss = Math.max(peakRss, s.rss);
      if (s.connections === before.connections) break;
    }
    const after = await t.stats();
    const cutOff = delta(after.counts.disconnects, before.counts.disconnects);
    expect(cutOff).toEqual({ SLOW_CONSUMER: 6 });
    expect(after.connections).toBe(before.connections);
    expect(received).toBe(published);
    // Six stuck clients, each bounded by the 8 MiB cap (plus the event in
    // flight and the kernel's socket buffer): nowhere near the 6 x 64 MiB
    // of events published at each of them.
    const growth = (peakRss - before.rss) / MiB;
    expect(growth).toBeLessThan(6 * (CAP / MiB) * 2 + 64);
    await eventually(async () => (await t.stats()).fds === before.fds + 0, 10_000, 'the stuck clients fds released');
    report('six stuck clients, events and answers', {
      capMiB: CAP / MiB, eventsPublished: published, eventBytes: 64 * 1024, healthyReceived: received, cutOff,
      peakRssGrowthMiB: Math.round(growth), healthySlowestRoundMs: Math.round(slowest),
    });
    await healthy.$close();
  });
});
