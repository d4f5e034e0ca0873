// A $describe answer, checked. It comes from the peer, like any of its
// data: a server's interceptor, a proxy or a bug can answer anything, and
// the CLI must say so rather than fail on the first field it reads.

/** Why `value` is not a service description (a short phrase naming the field), or null if it is one. */
export function descriptionProblem(value: unknown): string | null {
  if (!isRecord(value)) return `the answer is ${kindOf(value)}, not an object`;
  if (typeof value.service !== 'string') return `"service" is ${kindOf(value.service)}, not a string`;
  if (value.version !== undefined && typeof value.version !== 'string') return `"version" is ${kindOf(value.version)}, not a string`;
  if (typeof value.protocol !== 'number') return `"protocol" is ${kindOf(value.protocol)}, not a number`;
  if (!Array.isArray(value.methods)) return `"methods" is ${kindOf(value.methods)}, not an array`;
  for (const [i, m] of value.methods.entries()) {
    const problem = methodProblem(m);
    if (problem) return `methods[${i}]${problem}`;
  }
  if (!Array.isArray(value.events)) return `"events" is ${kindOf(value.events)}, not an array`;
  const badEvent = value.events.findIndex((e) => typeof e !== 'string');
  if (badEvent >= 0) return `events[${badEvent}] is ${kindOf(value.events[badEvent])}, not a string`;
  return null;
}

function methodProblem(m: unknown): string | null {
  if (!isRecord(m)) return ` is ${kindOf(m)}, not an object`;
  if (typeof m.name !== 'string') return `.name is ${kindOf(m.name)}, not a string`;
  if (typeof m.stream !== 'boolean') return `.stream is ${kindOf(m.stream)}, not true or false`;
  // (args is only summarized, and schema.ts reads any shape safely.)
  if (m.args !== undefined && !isRecord(m.args)) return `.args is ${kindOf(m.args)}, not an object`;
  return null;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** "null", "an array", "a number": what a JSON value (or a field) was instead. */
export function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'missing';
  if (Array.isArray(v)) return 'an array';
  const type = typeof v;
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}
