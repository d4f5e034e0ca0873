// An RpcServer's options, checked when it is made: a wrong one would
// otherwise surface later and elsewhere (every handshake refused, a limit
// silently gone, every call failing with INTERNAL).
import { badTimeout } from './deadlines.js';
import { invalidArgValue, shownValue } from './errors.js';
import { checkMaxMessageSize } from './limits.js';
import type { PeerPolicy } from './policy.js';

/** The options as they arrive from JavaScript, types unchecked. */
interface UncheckedOptions {
  service?: unknown;
  version?: unknown;
  handlers?: unknown;
  schemas?: unknown;
  allow?: unknown;
  exposeStack?: unknown;
  maxInFlight?: unknown;
  maxOutboundBytes?: unknown;
  intercept?: unknown;
  handshakeTimeout?: unknown;
  events?: unknown;
}

/** Throws ERR_INVALID_ARG_VALUE for the first option that cannot work. */
export function checkServerOptions(options: UncheckedOptions): void {
  if (typeof options !== 'object' || options === null) throw invalidArgValue('options', `must be an object; received ${shownValue(options)}`);
  const { service, version, handlers, schemas, exposeStack, maxInFlight, maxOutboundBytes, intercept, events } = options;
  checkMaxMessageSize((options as { maxMessageSize?: unknown }).maxMessageSize);
  if (typeof service !== 'string' || service === '') throw invalidArgValue('service', `must be a non-empty string; received ${shownValue(service)}`);
  // (null, as a config file gives it, is an option left out, as undefined is.)
  if (version != null && typeof version !== 'string') throw invalidArgValue('version', `must be a string; received ${shownValue(version)}`);
  checkHandlers(handlers);
  checkSchemas(schemas);
  if (!isPolicy(options.allow)) {
    throw invalidArgValue('allow', `must be 'any', 'same-user', 'root', { uids, gids } or a function; received ${shownValue(options.allow)}`);
  }
  checkConnectionOptions({ exposeStack, maxInFlight, maxOutboundBytes, intercept });
  const badTime = badTimeout('handshakeTimeout', options.handshakeTimeout);
  if (badTime) throw badTime;
  if (events != null && !(Array.isArray(events) && events.every((name) => typeof name === 'string'))) {
    throw invalidArgValue('events', 'must be an array of event names');
  }
}

/** What a connection of either side takes (a server's, and a client's for the calls it serves). */
export function checkConnectionOptions(options: Pick<UncheckedOptions, 'exposeStack' | 'maxInFlight' | 'maxOutboundBytes' | 'intercept'>): void {
  const { exposeStack, maxInFlight, maxOutboundBytes, intercept } = options;
  if (exposeStack != null && typeof exposeStack !== 'boolean') throw invalidArgValue('exposeStack', `must be a boolean; received ${shownValue(exposeStack)}`);
  if (maxInFlight != null && !((Number.isInteger(maxInFlight) || maxInFlight === Infinity) && (maxInFlight as number) >= 1)) {
    throw invalidArgValue('maxInFlight', `must be a whole number of calls, at least 1 (Infinity: no limit); received ${shownValue(maxInFlight)}`);
  }
  if (maxOutboundBytes != null && !(typeof maxOutboundBytes === 'number' && maxOutboundBytes >= 1)) {
    throw invalidArgValue('maxOutboundBytes', `must be a number of bytes, at least 1 (Infinity: no cap); received ${shownValue(maxOutboundBytes)}`);
  }
  if (intercept != null && typeof intercept !== 'function') throw invalidArgValue('intercept', `must be a function; received ${shownValue(intercept)}`);
}

// (Its other own fields are its data, which handlers reach through `this`.)
function checkHandlers(handlers: unknown): void {
  if (typeof handlers !== 'object' || handlers === null) throw invalidArgValue('handlers', `must be an object of functions; received ${shownValue(handlers)}`);
}

function checkSchemas(schemas: unknown): void {
  if (schemas == null) return;
  if (typeof schemas !== 'object' || schemas === null) throw invalidArgValue('schemas', `must be an object of Standard Schema validators; received ${shownValue(schemas)}`);
  for (const [name, schema] of Object.entries(schemas)) {
    const standard = (schema as { '~standard'?: { validate?: unknown } } | undefined)?.['~standard'];
    if (schema != null && typeof standard?.validate !== 'function') {
      throw invalidArgValue(`schemas.${name}`, 'must be a Standard Schema validator (zod, valibot, arktype...)');
    }
  }
}

function isPolicy(allow: unknown): allow is PeerPolicy | undefined {
  if (allow === undefined || allow === 'any' || allow === 'same-user' || allow === 'root' || typeof allow === 'function') return true;
  if (typeof allow !== 'object' || allow === null) return false;
  const { uids, gids } = allow as { uids?: unknown; gids?: unknown };
  return isIdList(uids) && isIdList(gids) && (uids !== undefined || gids !== undefined);
}

function isIdList(ids: unknown): boolean {
  return ids === undefined || (Array.isArray(ids) && ids.every((id) => Number.isInteger(id) && id >= 0));
}
