// What this platform and build can do, found by trying it once at load time.
import { Kind, native } from './native.js';

export interface Features {
  /** The native addon loaded; without it only plain stream sockets work (through net). */
  native: boolean;
  seqpacket: boolean;
  dgram: boolean;
  /** Linux abstract addresses ('@name'). */
  abstract: boolean;
  /** listen() without a name gets a kernel-chosen abstract address. */
  autobind: boolean;
  socketPair: boolean;
  /** SCM_RIGHTS: descriptors travel with messages. */
  fdPassing: boolean;
  /** The peer's pid/uid/gid from the kernel. */
  peerCredentials: boolean;
  /** A pidfd for the peer (Linux 6.5+). */
  peerPidfd: boolean;
  /** Per-message sender credentials (Linux SO_PASSCRED). */
  passCredentials: boolean;
}

function tryPair(kind: number): [number, number] | null {
  const r = native!.socketPair(kind);
  return typeof r === 'number' ? null : r;
}

function closeAll(...fds: number[]): void {
  for (const fd of fds) if (fd >= 0) native!.close(fd);
}

function probe(): Features {
  const none: Features = {
    native: false, seqpacket: false, dgram: false, abstract: false, autobind: false, socketPair: false,
    fdPassing: false, peerCredentials: false, peerPidfd: false, passCredentials: false,
  };
  const n = native;
  // Without the addon, net still reaches Linux abstract names ('\0name').
  if (!n) return { ...none, abstract: process.platform === 'linux' };
  const f: Features = { ...none, native: true };
  const seq = tryPair(Kind.seqpacket);
  f.seqpacket = seq !== null;
  if (seq) closeAll(...seq);
  const dgram = n.socket(Kind.dgram);
  f.dgram = dgram >= 0;
  closeAll(dgram);
  const pair = tryPair(Kind.stream);
  f.socketPair = pair !== null;
  if (pair) {
    const cred = n.peerCredentials(pair[0]);
    f.peerCredentials = typeof cred !== 'number';
    const pidfd = n.peerPidfd(pair[0]);
    f.peerPidfd = pidfd >= 0;
    closeAll(pidfd);
    f.passCredentials = n.setPassCred(pair[0], true) === 0;
    // The copy in flight is disposed of by the kernel when the pair closes.
    f.fdPassing = n.platform === 'unix' && sendsFd(pair);
    closeAll(...pair);
  }
  const a = n.socket(Kind.stream);
  if (a >= 0) {
    // (Only a probe's name: it needs to be unlikely to be taken, not
    // unguessable, and node:crypto would cost every process its start-up.)
    const unique = `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    const name = Buffer.concat([Buffer.from([0]), Buffer.from(`afunix-probe-${unique}`)]);
    f.abstract = n.bind(a, name) === 0;
    closeAll(a);
  }
  const b = n.socket(Kind.stream);
  if (b >= 0) {
    const name = n.bind(b, null) === 0 ? n.sockName(b, false) : null;
    f.autobind = name instanceof Buffer && name.length > 0 && name[0] === 0;
    closeAll(b);
  }
  return f;
}

function sendsFd(pair: [number, number]): boolean {
  const handle = new native!.SocketHandle(pair[0], Kind.stream, false, () => {}, () => {});
  const r = native!.write(handle.id, Buffer.from([0]), [pair[1]]);
  handle.close(); // the handle owns pair[0] now
  pair[0] = -1;
  return r === 1;
}

/** Found by probing when the module loads. */
export const features: Readonly<Features> = Object.freeze(probe());
