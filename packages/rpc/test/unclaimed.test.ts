// Answers nobody waits for any more (the caller gave up on the id) are
// dropped, and every fd in them is closed, wherever in the value it sits:
// PROTOCOL.md 2.1.
import { closeSync, openSync } from 'node:fs';
import { FramedChannel } from '@afunix/framing';
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { Fd, RpcError, createServer } from '../src/index.js';
import { encode, prepareValue } from '../src/codec.js';
import { Msg } from '../src/protocol.js';
import { addedSince, openFds } from './helpers.js';
import { framedPeer } from './wire.js';

const server = createServer<{ methods: { ping(): number } }>({ service: 'unclaimed', handlers: { ping: () => 1 } });
const [ours, theirs] = socketPair();
void server.serve(ours);
const peer = await framedPeer(new FramedChannel(theirs));
afterAll(async () => {
  peer.channel.destroy();
  await server.close({ timeout: 100 });
});

const UNKNOWN = 999;
const answers: Array<[string, (fd: Fd) => unknown[]]> = [
  ['RESULT with a bare Fd', (fd) => [Msg.RESULT, UNKNOWN, fd]],
  ['RESULT with an Fd in a Map', (fd) => [Msg.RESULT, UNKNOWN, new Map([['k', fd]])]],
  ['RESULT with an Fd as a Map key', (fd) => [Msg.RESULT, UNKNOWN, new Map([[fd, 'v']])]],
  ['RESULT with an Fd in a Set', (fd) => [Msg.RESULT, UNKNOWN, new Set([fd])]],
  ['RESULT with an Fd in a Map in an array', (fd) => [Msg.RESULT, UNKNOWN, [new Map([['k', fd]])]]],
  ['ERROR with an Fd in its data', (fd) => [Msg.ERROR, UNKNOWN, new RpcError('late', { code: 'E_LATE', data: { fd } })]],
  ['ERROR with an Fd in its cause', (fd) => [Msg.ERROR, UNKNOWN, new RpcError('late', { cause: new RpcError('inner', { data: [fd] }) })]],
  ['STREAM_ITEM with an Fd in a Map', (fd) => [Msg.STREAM_ITEM, UNKNOWN, new Map([['k', fd]])]],
];

describe('answers for unknown ids', () => {
  it.each(answers)('%s: its fds are closed', async (_what, answer) => {
    const file = openSync('/dev/null', 'r');
    try {
      await peer.call([Msg.REQUEST, 1, 'ping', []]); // warm up
      const before = openFds();
      for (let i = 0; i < 5; i++) {
        const { bytes, fds } = encode(prepareValue(answer(Fd.from(file)), 'answer') as unknown[]);
        peer.channel.send(bytes, fds);
      }
      // Answered in order: by the time ping's answer is here, the server has
      // handled (and dropped) the five before it.
      await peer.call([Msg.REQUEST, 2, 'ping', []]);
      expect(addedSince(before)).toEqual([]);
    } finally {
      closeSync(file);
    }
  });
});
