// A peer that closes with bytes of ours still unread resets the connection
// (the kernel sets ECONNRESET on our socket and the poll reports EPOLLERR).
// What the peer sent before closing is still queued on our side: it must be
// delivered first, and the error must be the socket's own, as net.Socket
// reports it, not libuv's stand-in for EPOLLERR (EBADF).
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { type AfunixError, socketPair, type UnixSocket } from '../src/index.js';
import { destroyAll } from './helpers.js';

const sockets: UnixSocket[] = [];
afterEach(async () => {
  await destroyAll(sockets);
});

function written(s: UnixSocket, data: string): Promise<void> {
  return new Promise((resolve, reject) => s.write(data, (err) => (err ? reject(err) : resolve())));
}

describe.each(['stream', 'seqpacket'] as const)('%s: the peer closes with our bytes unread', (type) => {
  it('delivers what the peer sent before it closed, then fails with ECONNRESET', async () => {
    const [a, b] = socketPair(type);
    sockets.push(a, b);
    const got: Buffer[] = [];
    b.setReceiver((data) => {
      got.push(Buffer.from(data));
    });
    b.pauseReading();
    await written(a, 'sent before the reset');
    await written(b, 'never read by a');
    const aClosed = once(a, 'close');
    a.destroy();
    await aClosed;
    const failed = once(b, 'error') as Promise<[AfunixError]>;
    b.resumeReading();
    const [err] = await failed;
    expect(Buffer.concat(got).toString()).toBe('sent before the reset');
    expect(err).toMatchObject({ code: 'ECONNRESET', syscall: 'recvmsg' });
  });
});
