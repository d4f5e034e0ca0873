// The helper: started by the parent with spawnHelper(), it finds its end of
// the socketpair on fd 3 and serves the parent over it. It calls the parent
// back (settings), emits events (progress), and returns a stream (words).
// It exits by itself when the parent closes the connection.
// @ts-check
import { serveParent } from '@afunix/rpc';

/** @typedef {import('./contract.js').Indexer} Indexer */

/** @param {string} text */
function split(text) {
  return text.toLowerCase().match(/[a-z']+/g) ?? [];
}

/** @type {import('@afunix/rpc').ServerHandlers<Indexer>} */
const handlers = {
  async analyze(ctx, text) {
    const { stopWords } = await ctx.remote.settings(); // a call back into the parent
    const lines = text.trim().split('\n');
    const kept = [];
    for (const [i, line] of lines.entries()) {
      kept.push(...split(line).filter((w) => !stopWords.includes(w)));
      ctx.connection.emitEvent('progress', [Math.round(((i + 1) / lines.length) * 100)]);
    }
    const longest = kept.reduce((a, b) => (b.length > a.length ? b : a), '');
    return { words: kept.length, lines: lines.length, longest, by: process.pid };
  },
  async *words(_ctx, text) {
    for (const word of split(text)) yield word;
  },
};

await serveParent({ service: 'indexer', handlers });
