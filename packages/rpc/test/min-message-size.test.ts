// A peer must accept messages of at least MIN_MAX_MESSAGE_SIZE bytes: below
// that not even an error could answer its calls, so the handshake refuses
// it, on either side, with a code that says why. At the minimum, every call
// gets an answer.
import { FramedChannel } from '@afunix/framing';
import { socketPair } from '@afunix/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { RpcCode, connect, createServer } from '../src/index.js';
import { encodeToBuffer } from '../src/codec.js';
import { MIN_MAX_MESSAGE_SIZE, Msg, PROTOCOL_VERSION } from '../src/protocol.js';
import { framedPeer } from './wire.js';

// A hang shows up as this test timing out: a liveness bound, not speed.
const HANG = 5_000;

interface Big {
  methods: {
    big(): string;
    unsendableUnderLongKey(): unknown;
    ping(): number;
  };
}

const server = createServer<Big>({
  service: 'big',
  handlers: {
    big: () => 'x'.repeat(10 * MIN_MAX_MESSAGE_SIZE),
    // The ENCODE_ERROR names the path, and the path is longer than the peer accepts.
    unsendableUnderLongKey: () => new Map([['k'.repeat(10 * MIN_MAX_MESSAGE_SIZE), () => 1]]),
    ping: () => 1,
  },
});
afterAll(() => server.close({ timeout: 100 }));

function pair(): FramedChannel {
  const [a, b] = socketPair();
  server.serve(a).catch(() => {}); // refused: what the peer hears is the point
  return new FramedChannel(b);
}

describe('the smallest maxMessageSize a peer may announce', () => {
  it.each([60, 90, MIN_MAX_MESSAGE_SIZE - 1])('a client announcing %i bytes is refused with MESSAGE_SIZE_TOO_SMALL', async (max) => {
    const channel = pair();
    try {
      const { hello } = await framedPeer(channel, { protocol: PROTOCOL_VERSION, streams: [], maxMessageSize: max });
      expect(hello[0]).toBe(Msg.HELLO);
      expect((hello[1] as { error?: unknown }).error).toMatchObject({
        code: RpcCode.MESSAGE_SIZE_TOO_SMALL,
        message: expect.stringContaining(String(MIN_MAX_MESSAGE_SIZE)),
      });
    } finally {
      channel.destroy();
    }
  });

  it('a server announcing less is refused by the client with MESSAGE_SIZE_TOO_SMALL', async () => {
    const [a, b] = socketPair();
    const fake = new FramedChannel(a);
    fake.on('error', () => {});
    fake.on('frame', () => {
      fake.send(encodeToBuffer([Msg.HELLO, { protocol: PROTOCOL_VERSION, service: 'tiny', streams: [], maxMessageSize: 90 }]));
    });
    try {
      await expect(connect(b)).rejects.toMatchObject({ code: RpcCode.MESSAGE_SIZE_TOO_SMALL });
    } finally {
      fake.destroy();
    }
  });

  it('an option below the minimum is refused where it is given, with ERR_INVALID_ARG_VALUE', async () => {
    const small = { maxMessageSize: MIN_MAX_MESSAGE_SIZE - 1 };
    expect(() => createServer<Big>({ service: 'big', handlers: { big: () => '', unsendableUnderLongKey: () => 1, ping: () => 1 }, ...small })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
    const [a, b] = socketPair();
    try {
      await expect(connect<Big>(b, small)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  describe('a client accepting exactly the minimum', () => {
    const client = (async () => {
      const [a, b] = socketPair();
      void server.serve(a);
      return connect<Big>(b, { maxMessageSize: MIN_MAX_MESSAGE_SIZE });
    })();
    afterAll(async () => (await client).$close());

    it('is answered MESSAGE_TOO_LARGE for a result too large for it', { timeout: HANG }, async () => {
      await expect((await client).big()).rejects.toMatchObject({ code: RpcCode.MESSAGE_TOO_LARGE });
    });

    it('is answered ENCODE_ERROR even when the error naming the path is too large for it', { timeout: HANG }, async () => {
      await expect((await client).unsendableUnderLongKey()).rejects.toMatchObject({ code: RpcCode.ENCODE_ERROR });
      expect(await (await client).ping()).toBe(1);
    });
  });
});
