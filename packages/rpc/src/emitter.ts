// typed-emitter is CommonJS and types-only: under NodeNext its default
// export arrives as `.default`. One alias here keeps that out of the code.
import type TypedEmitterModule from 'typed-emitter';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type EventMap = { [event: string]: (...args: any[]) => void };
export type TypedEmitter<Events extends EventMap> = TypedEmitterModule.default<Events>;
