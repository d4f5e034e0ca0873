// The parent: spawns helper.mjs with spawnHelper() (a socketpair on the
// child's fd 3, no socket file anywhere), then talks to it with types:
// a call that calls back, events, a stream. Exits 0 once the helper has.
// @ts-check
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { spawnHelper } from '@afunix/rpc';

// `node main.mjs | head -1`: once the reader of stdout is gone, print nothing
// more but finish (and clean up) as usual, then exit 141, the status of a
// process that SIGPIPE ended (what the afunix CLI gives too).
process.stdout.on('error', (err) => {
  if (/** @type {{ code?: string }} */ (err).code !== 'EPIPE') throw err;
  process.once('exit', () => (process.exitCode = 141));
});

/** @typedef {import('./contract.js').Indexer} Indexer */

const text = `The quick brown fox jumps over the lazy dog
and the dog, being lazy, lets the fox go
while a helper process counts the words`;

/** @type {import('@afunix/rpc').Helper<Indexer>} */
const { client, child } = await spawnHelper(fileURLToPath(new URL('./helper.mjs', import.meta.url)), {
  service: 'indexer',
  // What the helper may call on us: it asks for settings in the middle of its work.
  expose: {
    settings() {
      console.log('parent: the helper asked for settings; sending 3 stop words');
      return { stopWords: ['the', 'a', 'and'] };
    },
  },
});
console.log(`parent (pid ${process.pid}): spawned helper pid ${child.pid}, connected over a socketpair`);

const progress = /** @type {number[]} */ ([]);
client.$events.on('progress', (percent) => progress.push(percent));
const analysis = await client.analyze(text);
console.log(`parent: progress events ${progress.map((p) => `${p}%`).join(' ')}`);
console.log(`parent: analyze → ${analysis.words} words in ${analysis.lines} lines, longest "${analysis.longest}" (worked out by pid ${analysis.by})`);

const firstLine = text.split('\n')[0] ?? '';
const words = [];
for await (const word of client.words(firstLine)) words.push(word);
console.log(`parent: words streamed → ${words.join(' ')}`);

await client.$close(); // the helper sees the connection end, and exits
const [code] = await once(child, 'exit');
console.log(`parent: helper exited with ${code}`);
process.exitCode = code ?? 1;
