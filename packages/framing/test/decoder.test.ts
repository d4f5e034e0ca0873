import { describe, expect, it } from 'vitest';
import { FRAME_VERSION, FrameDecoder, FramingError, HEADER_SIZE, encodeHeader, resolveLimits } from '../src/index.js';
import { codeOf, frameBytes, rawHeader, recordingDecoder } from './helpers.js';

describe('encodeHeader', () => {
  it('lays out magic, version, flags, fd count and a little-endian length', () => {
    expect([...encodeHeader(0x01020304, 7)]).toEqual([0xaf, 1, 0, 7, 4, 3, 2, 1]);
    expect([...encodeHeader(0xffffffff)]).toEqual([0xaf, 1, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    expect(HEADER_SIZE).toBe(8);
    expect(FRAME_VERSION).toBe(1);
  });

  it('refuses lengths and fd counts the header cannot express', () => {
    expect(codeOf(() => encodeHeader(-1))).toBe('ERR_INVALID_ARG_VALUE');
    expect(codeOf(() => encodeHeader(2 ** 32))).toBe('ERR_INVALID_ARG_VALUE');
    expect(codeOf(() => encodeHeader(1.5))).toBe('ERR_INVALID_ARG_VALUE');
    expect(codeOf(() => encodeHeader(0, 254))).toBe('ERR_INVALID_ARG_VALUE');
  });
});

describe('FrameDecoder limits', () => {
  it('validates its options', () => {
    expect(codeOf(() => new FrameDecoder(() => {}, { maxFds: 254 }))).toBe('ERR_INVALID_ARG_VALUE');
    expect(codeOf(() => new FrameDecoder(() => {}, { maxFrameSize: -1 }))).toBe('ERR_INVALID_ARG_VALUE');
    for (const bad of [5, 'x', true]) expect(codeOf(() => resolveLimits(bad as never)), String(bad)).toBe('ERR_INVALID_ARG_VALUE');
    expect(resolveLimits(null)).toEqual(resolveLimits());
    expect(new FrameDecoder(() => {}, null as never).limits).toEqual(resolveLimits());
    expect(new FrameDecoder(() => {}).limits).toEqual({ maxFrameSize: 16 * 1024 * 1024, maxFds: 253, maxBuffered: 16 * 1024 * 1024 + 8 });
  });

  it('setLimits() applies from the next header on, and limits resolved once stay one shared object', () => {
    const frames: number[] = [];
    const decoder = new FrameDecoder((payload) => void frames.push(payload.length));
    const shared = decoder.limits;
    decoder.setLimits({ maxFrameSize: 4 });
    expect(resolveLimits(shared)).toBe(shared); // (resolving others in between)
    decoder.push(Buffer.concat([encodeHeader(4), Buffer.alloc(4)]));
    expect(codeOf(() => decoder.push(encodeHeader(5)))).toBe('FRAME_TOO_LARGE');
    const again = new FrameDecoder(() => {});
    again.setLimits({ maxFrameSize: 4 });
    again.setLimits(shared);
    expect(again.limits).toBe(shared);
    again.push(Buffer.concat([encodeHeader(5), Buffer.alloc(5)]));
    expect(frames).toEqual([4]);
  });
});

describe('FrameDecoder fast paths', () => {
  it('calls onFrame with thisArg as this, or the decoder without one', () => {
    const owner = { frames: [] as string[] };
    function record(this: typeof owner, payload: Buffer): void {
      this.frames.push(payload.toString());
    }
    new FrameDecoder(record as never, {}, owner).push(frameBytes(Buffer.from('x')));
    expect(owner.frames).toEqual(['x']);
    let self: unknown;
    const plain = new FrameDecoder(function (this: unknown) {
      self = this;
    });
    plain.push(frameBytes(Buffer.from('y')));
    expect(self).toBe(plain);
  });

  it('hands out a frame that lies in one chunk as a view of that chunk', () => {
    const chunk = Buffer.concat([frameBytes(Buffer.from('abc')), frameBytes(Buffer.from('defg'))]);
    const seen: Buffer[] = [];
    new FrameDecoder((p) => seen.push(p)).push(chunk);
    expect(seen.map(String)).toEqual(['abc', 'defg']);
    expect(seen[0]!.buffer).toBe(chunk.buffer);
    expect(seen[1]!.byteOffset).toBe(chunk.byteOffset + 8 + 3 + 8);
  });

  it('assembles a frame split across reads into one buffer of its exact size', () => {
    const payload = Buffer.alloc(10_000, 9);
    const bytes = frameBytes(payload);
    const seen: Buffer[] = [];
    const d = new FrameDecoder((p) => seen.push(p));
    d.push(bytes.subarray(0, 3));
    expect(d.buffered).toBe(3);
    d.push(bytes.subarray(3, 5000));
    expect(d.buffered).toBe(5000);
    d.push(bytes.subarray(5000));
    expect(d.buffered).toBe(0);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.equals(payload)).toBe(true);
    expect(seen[0]!.length).toBe(10_000);
    expect(seen[0]!.byteLength).toBe(10_000);
  });

  it('takes the rest of a frame read into its own buffer (partialBody) as it is, with no copy', () => {
    const payload = Buffer.alloc(10_000);
    for (let i = 0; i < payload.length; i++) payload[i] = i & 255;
    const bytes = frameBytes(payload);
    const seen: Buffer[] = [];
    const d = new FrameDecoder((p) => seen.push(p));
    d.push(bytes.subarray(0, 1000));
    const body = d.partialBody!;
    const filled = d.partialFill;
    expect([body.length, filled]).toEqual([10_000, 1000 - HEADER_SIZE]);
    // What a transport's readInto() does: the bytes land in place, and the
    // chunk pushed is a view of that very place. Copying it would throw.
    bytes.copy(body, filled, 1000);
    const inPlace = body.subarray(filled);
    inPlace.copy = () => {
      throw new Error('copied a chunk already in place');
    };
    d.push(inPlace);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBe(body);
    expect(seen[0]!.equals(payload)).toBe(true);
    expect(d.partialBody).toBeNull();
  });

  it('a header split from its payload still yields the payload as a view of the next chunk', () => {
    const payload = Buffer.from('payload');
    const second = Buffer.from(payload);
    const seen: Buffer[] = [];
    const d = new FrameDecoder((p) => seen.push(p));
    d.push(encodeHeader(payload.length));
    d.push(second);
    expect(seen[0]!.buffer).toBe(second.buffer);
  });

  it('accepts plain Uint8Arrays and empty payloads', () => {
    const { decoder, frames } = recordingDecoder();
    decoder.push(new Uint8Array(frameBytes(Buffer.alloc(0))));
    expect(frames).toEqual([{ payload: Buffer.alloc(0), fds: null }]);
  });
});

describe('FrameDecoder violations', () => {
  const cases: Array<[string, Buffer, string]> = [
    ['bad magic', rawHeader({ magic: 0x47, length: 0 }), 'PROTOCOL_ERROR'],
    ['another version', rawHeader({ version: 2, length: 0 }), 'UNSUPPORTED_VERSION'],
    ['version 0', rawHeader({ version: 0, length: 0 }), 'UNSUPPORTED_VERSION'],
    ['a reserved flag', rawHeader({ flags: 0x80, length: 0 }), 'PROTOCOL_ERROR'],
    ['254 fds', rawHeader({ fds: 254, length: 0 }), 'PROTOCOL_ERROR'],
    ['a 4 GiB frame', rawHeader({ length: 0xffffffff }), 'FRAME_TOO_LARGE'],
    ['fds declared, none sent', rawHeader({ fds: 1, length: 0 }), 'PROTOCOL_ERROR'],
  ];
  for (const [what, bytes, code] of cases) {
    it(`${what} is ${code}`, () => {
      expect(codeOf(() => new FrameDecoder(() => {}).push(bytes))).toBe(code);
    });
  }

  it('rejects a non-afunix peer on its first byte', () => {
    expect(codeOf(() => new FrameDecoder(() => {}).push(Buffer.from('G')))).toBe('PROTOCOL_ERROR');
  });

  it('checks the size from the header, before buffering or allocating anything', () => {
    const d = new FrameDecoder(() => {}, { maxFrameSize: 100 });
    expect(codeOf(() => d.push(rawHeader({ length: 101 })))).toBe('FRAME_TOO_LARGE');
    expect(d.buffered).toBe(0);
  });

  it('TOO_MANY_FDS above maxFds', () => {
    const d = new FrameDecoder(() => {}, { maxFds: 2 });
    expect(codeOf(() => d.push(rawHeader({ fds: 3, length: 0 }), [10, 11, 12]))).toBe('TOO_MANY_FDS');
  });

  it('BUFFER_LIMIT when a split frame would need more than maxBuffered', () => {
    const d = new FrameDecoder(() => {}, { maxBuffered: 64 });
    const big = frameBytes(Buffer.alloc(100));
    // Whole in one chunk it is a view: nothing buffered, nothing refused.
    d.push(big);
    expect(codeOf(() => d.push(big.subarray(0, 50)))).toBe('BUFFER_LIMIT');
  });

  it('stays failed until reset', () => {
    const d = new FrameDecoder(() => {});
    expect(codeOf(() => d.push(Buffer.from([0])))).toBe('PROTOCOL_ERROR');
    expect(codeOf(() => d.push(frameBytes(Buffer.from('ok'))))).toBe('PROTOCOL_ERROR');
    d.reset();
    d.push(frameBytes(Buffer.from('ok')));
  });

  it('throws FramingError instances', () => {
    try {
      new FrameDecoder(() => {}).push(Buffer.from([1]));
    } catch (err) {
      expect(err).toBeInstanceOf(FramingError);
      expect(err).toBeInstanceOf(Error);
    }
  });
});

describe('FrameDecoder fd placement', () => {
  it('gives the fds of a chunk to the frames that start in it, in order', () => {
    const { decoder, frames } = recordingDecoder();
    const chunk = Buffer.concat([frameBytes(Buffer.from('a'), 2), frameBytes(Buffer.from('b')), frameBytes(Buffer.from('c'), 1)]);
    decoder.push(chunk, [5, 6, 7]);
    expect(frames.map((f) => f.fds)).toEqual([[5, 6], null, [7]]);
  });

  it('accepts fds glued to a chunk that begins with the tail of an earlier frame', () => {
    // The kernel may append an fd-carrying write to a read that started earlier.
    const { decoder, frames } = recordingDecoder();
    const first = frameBytes(Buffer.from('first'));
    const second = frameBytes(Buffer.from('second'), 1);
    decoder.push(first.subarray(0, 4));
    decoder.push(Buffer.concat([first.subarray(4), second]), [9]);
    expect(frames.map((f) => [String(f.payload), f.fds])).toEqual([['first', null], ['second', [9]]]);
  });

  it('holds the fds of a chunk that ends inside a header until the header completes', () => {
    const { decoder, frames } = recordingDecoder();
    const bytes = frameBytes(Buffer.from('xyz'), 2);
    decoder.push(bytes.subarray(0, 3), [3, 4]);
    expect(decoder.heldFds).toBe(2);
    decoder.push(bytes.subarray(3));
    expect(frames).toEqual([{ payload: Buffer.from('xyz'), fds: [3, 4] }]);
    expect(decoder.heldFds).toBe(0);
  });

  it('fds arriving in the middle of a frame are a protocol error, and stay the caller\'s', () => {
    const { decoder, frames } = recordingDecoder();
    const bytes = frameBytes(Buffer.alloc(100));
    decoder.push(bytes.subarray(0, 50));
    expect(codeOf(() => decoder.push(bytes.subarray(50), [8]))).toBe('PROTOCOL_ERROR');
    // The frame itself was whole and fd-less; fd 8 never reached anyone.
    expect(frames.map((f) => f.fds)).toEqual([null]);
    expect(decoder.reset()).toEqual([]);
  });

  it('more fds than the frames starting in a chunk declare is a protocol error', () => {
    expect(codeOf(() => new FrameDecoder(() => {}).push(frameBytes(Buffer.from('a'), 1), [1, 2]))).toBe('PROTOCOL_ERROR');
  });

  it('a violation later in a chunk hands out none of that chunk\'s fds', () => {
    const { decoder, frames } = recordingDecoder();
    const chunk = Buffer.concat([frameBytes(Buffer.from('a'), 1), Buffer.from('garbage')]);
    expect(codeOf(() => decoder.push(chunk, [4]))).toBe('PROTOCOL_ERROR');
    expect(frames).toHaveLength(0);
  });

  it('reset() returns the fds held for an incomplete frame', () => {
    const d = new FrameDecoder(() => {});
    const bytes = frameBytes(Buffer.alloc(1000), 3);
    d.push(bytes.subarray(0, 500), [20, 21, 22]);
    expect(d.buffered).toBe(500);
    expect(d.reset()).toEqual([20, 21, 22]);
    expect(d.buffered).toBe(0);
  });

  it('when onFrame throws, the fds it never got come back from reset()', () => {
    const d = new FrameDecoder(() => {
      throw new Error('handler bug');
    });
    const chunk = Buffer.concat([frameBytes(Buffer.from('a'), 1), frameBytes(Buffer.from('b'), 2)]);
    expect(() => d.push(chunk, [1, 2, 3])).toThrow('handler bug');
    expect(d.reset()).toEqual([2, 3]);
  });
});

describe('FrameDecoder.pushMessage (seqpacket)', () => {
  it('takes exactly one frame per packet, as a view, with its fds', () => {
    const { decoder, frames } = recordingDecoder();
    decoder.pushMessage(frameBytes(Buffer.from('hi'), 2), [30, 31]);
    decoder.pushMessage(frameBytes(Buffer.alloc(0)));
    expect(frames).toEqual([
      { payload: Buffer.from('hi'), fds: [30, 31] },
      { payload: Buffer.alloc(0), fds: null },
    ]);
  });

  const bad: Array<[string, Buffer, number[] | null, string]> = [
    ['a packet longer than its frame', Buffer.concat([frameBytes(Buffer.from('a')), Buffer.from('b')]), null, 'PROTOCOL_ERROR'],
    ['a packet shorter than its frame', frameBytes(Buffer.from('abc')).subarray(0, 10), null, 'PROTOCOL_ERROR'],
    ['a packet shorter than a header', Buffer.from([0xaf, 1]), null, 'PROTOCOL_ERROR'],
    ['an empty packet', Buffer.alloc(0), null, 'PROTOCOL_ERROR'],
    ['fds the header does not declare', frameBytes(Buffer.from('a')), [1], 'PROTOCOL_ERROR'],
    ['declared fds missing', frameBytes(Buffer.from('a'), 1), null, 'PROTOCOL_ERROR'],
    ['an oversized frame', rawHeader({ length: 1 << 30 }), null, 'FRAME_TOO_LARGE'],
    ['version 9', rawHeader({ version: 9, length: 0 }), null, 'UNSUPPORTED_VERSION'],
  ];
  for (const [what, packet, fds, code] of bad) {
    it(`${what} is ${code}`, () => {
      expect(codeOf(() => new FrameDecoder(() => {}).pushMessage(packet, fds))).toBe(code);
    });
  }
});
