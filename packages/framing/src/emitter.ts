// The EventEmitter under FramedChannel. EventEmitter gives each emitter a
// dictionary for its listeners (~180 bytes per channel, made anew when the
// last listener goes); a table with the channel's events as fields is ~60.
// It has to be in place before EventEmitter's constructor runs, which then
// keeps it and marks a removed listener undefined instead of deleting its
// field, as for Node's own streams: so this base is a function, not a
// class, whose body runs before EventEmitter's. (A Node without that
// "shape mode" deletes the field: the table still works, as a dictionary.)
import { EventEmitter } from 'node:events';

type Table = Record<string, unknown>;

function ListenerTable(this: Table): void {
  this.frame = undefined;
  this.drain = undefined;
  this.error = undefined;
  this.end = undefined;
  this.close = undefined;
}
// Nothing inherited: no event name ('toString', '__proto__') may find a
// value that is not a listener.
ListenerTable.prototype = Object.create(null) as object;

interface Internals {
  _events: Table;
  _eventsCount: number;
}

function ChannelEmitter(this: EventEmitter & Internals): void {
  this._events = new (ListenerTable as unknown as new () => Table)();
  this._eventsCount = 0;
  EventEmitter.call(this);
}
Object.setPrototypeOf(ChannelEmitter.prototype, EventEmitter.prototype);
Object.setPrototypeOf(ChannelEmitter, EventEmitter);

// Events without listeners are fields holding undefined: list only the
// others (Node's Stream does the same).
ChannelEmitter.prototype.eventNames = function eventNames(this: Internals): Array<string | symbol> {
  const table = this._events;
  return Reflect.ownKeys(table).filter((name) => table[name as string] !== undefined);
};

export const ChannelEmitterBase = ChannelEmitter as unknown as typeof EventEmitter;
