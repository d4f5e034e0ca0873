// What drives a channel, for the listeners that every channel shares (they
// run with the channel as `this`, where closures of their own cost each
// connection ~0.5 KB): its handshake while that runs, then its connection.
// Not enumerable, so that inspecting a channel does not print its owner.
import type { FramedChannel } from '@afunix/framing';

const kOwner = Symbol('afunix.owner');
type Owned = FramedChannel & { [kOwner]?: unknown };

export function ownerOf(channel: FramedChannel): unknown {
  return (channel as Owned)[kOwner];
}

export function setOwner(channel: FramedChannel, owner: unknown): void {
  const c = channel as Owned;
  if (kOwner in c) c[kOwner] = owner;
  else Object.defineProperty(c, kOwner, { value: owner, writable: true, enumerable: false });
}
