// A one-line summary of a method's argument schema (JSON Schema of the
// argument tuple, as $describe reports it): "(number, string[], {a: number, b?: string})".
type Schema = Record<string, unknown>;

const MAX_SUMMARY = 72;
const MAX_NESTING = 4;

function isSchema(v: unknown): v is Schema {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function schemas(v: unknown): Schema[] {
  return Array.isArray(v) ? v.filter(isSchema) : [];
}

function union(parts: Schema[], depth: number): string {
  return parts.map((p) => summarize(p, depth)).join(' | ');
}

/** Tuple members: prefixItems (2020-12) or an items array (draft-07), then any rest. */
function tupleParts(s: Schema, depth: number): string[] | null {
  const fixed = Array.isArray(s.prefixItems) ? s.prefixItems : Array.isArray(s.items) ? s.items : null;
  if (!fixed) return null;
  const parts = schemas(fixed).map((p) => summarize(p, depth));
  const rest = Array.isArray(s.items) ? s.additionalItems : s.items;
  if (isSchema(rest)) parts.push(`...${summarize(rest, depth)}[]`);
  return parts;
}

function arraySummary(s: Schema, depth: number): string {
  const tuple = tupleParts(s, depth);
  if (tuple) return `[${tuple.join(', ')}]`;
  return isSchema(s.items) ? `${summarize(s.items, depth)}[]` : 'array';
}

function objectSummary(s: Schema, depth: number): string {
  if (!isSchema(s.properties)) return 'object';
  const required = new Set(Array.isArray(s.required) ? s.required : []);
  const fields = Object.entries(s.properties).map(([k, v]) => `${k}${required.has(k) ? '' : '?'}: ${isSchema(v) ? summarize(v, depth) : 'any'}`);
  return `{${fields.join(', ')}}`;
}

function typeSummary(s: Schema, depth: number): string {
  const type = s.type;
  if (Array.isArray(type)) return type.map((t) => typeSummary({ ...s, type: t }, depth)).join(' | ');
  if (type === 'array') return arraySummary(s, depth);
  if (type === 'object') return objectSummary(s, depth);
  return typeof type === 'string' ? type : 'any';
}

function summarize(s: Schema, depth: number): string {
  if (depth >= MAX_NESTING) return '…';
  const next = depth + 1;
  if ('const' in s) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (Array.isArray(s.anyOf)) return union(schemas(s.anyOf), next);
  if (Array.isArray(s.oneOf)) return union(schemas(s.oneOf), next);
  return typeSummary(s, next);
}

function truncate(text: string): string {
  return text.length > MAX_SUMMARY ? `${text.slice(0, MAX_SUMMARY - 1)}…` : text;
}

/** "(a, b)" for an argument tuple; '-' when the server gave no schema. */
export function summarizeArgs(schema: unknown): string {
  if (!isSchema(schema)) return '-';
  const tuple = schema.type === 'array' ? tupleParts(schema, 0) : null;
  return truncate(tuple ? `(${tuple.join(', ')})` : summarize(schema, 0));
}
