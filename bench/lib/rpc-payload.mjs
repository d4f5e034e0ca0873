// The payload every echo of the RPC benchmark sends (W1's definition), and
// the check every answer to it gets: shared by rpc-peer.mjs and rpc-cold.mjs.

export const payload = (i) => ({ id: i, name: 'alpha', ok: true, tags: ['a', 'b'] });

export function check(r, i) {
  if (
    r === null || typeof r !== 'object' || r.id !== i || r.name !== 'alpha' || r.ok !== true ||
    !Array.isArray(r.tags) || r.tags.length !== 2 || r.tags[0] !== 'a' || r.tags[1] !== 'b'
  ) {
    throw new Error(`call ${i}: wrong answer ${JSON.stringify(r)}`);
  }
}
