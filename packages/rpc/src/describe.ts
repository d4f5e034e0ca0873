// Introspection: every server answers the built-in `$describe` request with
// what it offers, so tools (the afunix CLI) can list and call methods of a
// service they have no types for.
import type { StandardJSONSchemaV1 } from '@standard-schema/spec';
import { PROTOCOL_VERSION } from './protocol.js';
import type { Validator } from './validation.js';

/** The reserved method name; contract methods cannot start with '$'. */
export const DESCRIBE = '$describe';

export interface MethodDescription {
  name: string;
  /** The method returns a stream. */
  stream: boolean;
  /** JSON Schema of the argument list, where the validator can give one. */
  args?: Record<string, unknown>;
}

export interface ServiceDescription {
  service: string;
  version?: string;
  protocol: number;
  methods: MethodDescription[];
  events: string[];
}

// Standard JSON Schema where the validator implements it (zod 4, valibot,
// arktype do); otherwise the shape is simply not described.
function jsonSchemaOf(validator: Validator | undefined): Record<string, unknown> | undefined {
  const converter = (validator as Partial<StandardJSONSchemaV1> | undefined)?.['~standard']?.jsonSchema;
  if (!converter) return undefined;
  try {
    return converter.input({ target: 'draft-2020-12' });
  } catch {
    return undefined;
  }
}

export function describeService(
  info: { service: string; version?: string | undefined; events?: readonly string[] | undefined },
  methods: readonly string[],
  streams: readonly string[],
  validators: ReadonlyMap<string, Validator>,
): ServiceDescription {
  const description: ServiceDescription = {
    service: info.service,
    protocol: PROTOCOL_VERSION,
    methods: methods.map((name) => {
      const m: MethodDescription = { name, stream: streams.includes(name) };
      const args = jsonSchemaOf(validators.get(name));
      if (args) m.args = args;
      return m;
    }),
    events: [...(info.events ?? [])],
  };
  if (info.version !== undefined) description.version = info.version;
  return description;
}
