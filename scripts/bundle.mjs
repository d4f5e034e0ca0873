#!/usr/bin/env node
// Joins a package's compiled modules (tsc's dist/*.js) into one file, its
// entry (dist/index.js, or the one named), after tsc has run: run from the
// package's directory, as its build script does. A process that loads the package then reads,
// resolves and compiles one module rather than one per source file:
// W7 of bench/suites/rpc.mjs (a fresh process making one call) measured
// about 30 ms less per process for transport + framing + rpc.
//
// Other packages and Node's builtins stay imports, so every package is
// still loaded once per process, whoever imports it. The source map goes
// through tsc's own maps to src/*.ts. tsc's per-module .js files are then
// removed: nothing may load a second copy of a module that is in the
// bundle (its classes and registries would be different objects).
//
//   node ../../scripts/bundle.mjs [entry, e.g. main.js]
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from 'rolldown';

const dist = resolve('dist');
const entryName = process.argv[2] ?? 'index.js';
const entry = join(dist, entryName);
if (!existsSync(entry)) {
  console.error(`bundle: no ${entry}: run tsc first`);
  process.exit(1);
}

// Relative imports are our modules; anything else (node:*, other packages)
// is loaded by Node as it is.
const external = (id) => !id.startsWith('.') && !id.startsWith('/');

// Hands rolldown each module with tsc's map, so the bundle's map reaches
// the TypeScript sources rather than tsc's output.
const withTscMaps = {
  name: 'tsc-source-maps',
  load(id) {
    if (!id.endsWith('.js') || !existsSync(`${id}.map`)) return null;
    return { code: readFileSync(id, 'utf8'), map: readFileSync(`${id}.map`, 'utf8') };
  },
};

const modules = readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js'));
await build({
  input: entry,
  platform: 'node',
  external,
  plugins: [withTscMaps],
  logLevel: 'warn',
  output: { file: entry, format: 'esm', sourcemap: true },
});
for (const f of modules) {
  if (f === entryName) continue;
  rmSync(join(dist, f));
  rmSync(join(dist, `${f}.map`), { force: true });
}
console.log(`bundle: ${modules.length} modules -> ${entry}`);
