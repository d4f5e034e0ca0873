#!/usr/bin/env node
// Joins a package's compiled modules (tsc's dist/*.js) into one file, its
// entry (dist/index.js, or the one named), after tsc has run: run from the
// package's directory, as its build script does. A process that loads the
// package then reads, resolves and compiles one module rather than one per
// source file: W7 of bench/suites/rpc.mjs (a fresh process making one
// call) measured about 30 ms less per process for transport + framing + rpc.
//
// Other packages and Node's builtins stay imports, so every package is
// still loaded once per process, whoever imports it. The source map goes
// through tsc's own maps to src/*.ts. The .js files of the modules bundled
// are then removed: nothing may load a second copy of a module that is in
// the bundle (its classes and registries would be different objects). A
// compiled module the bundle does not hold fails the build: something
// would load it by path, apart from the rest.
//
//   node ../../scripts/bundle.mjs [entry, e.g. main.js]
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { build } from 'rolldown';

const dist = resolve('dist');
const entryName = process.argv[2] ?? 'index.js';
const entry = join(dist, entryName);
if (!existsSync(entry)) {
  console.error(`bundle: no ${entry}: run tsc first`);
  process.exit(1);
}

// Relative imports are our modules (rolldown asks again with each one's
// resolved path: C:\... on Windows); anything else (node:*, other
// packages) is loaded by Node as it is.
const external = (id, _importer, isResolved) => !isResolved && !id.startsWith('.') && !isAbsolute(id);

// Hands rolldown each module with tsc's map, so the bundle's map reaches
// the TypeScript sources rather than tsc's output.
const withTscMaps = {
  name: 'tsc-source-maps',
  load(id) {
    if (!id.endsWith('.js') || !existsSync(`${id}.map`)) return null;
    return { code: readFileSync(id, 'utf8'), map: readFileSync(`${id}.map`, 'utf8') };
  },
};

const { output } = await build({
  input: entry,
  platform: 'node',
  external,
  plugins: [withTscMaps],
  logLevel: 'warn',
  output: { file: entry, format: 'esm', sourcemap: true },
});
// (moduleIds also names rolldown's own runtime helpers, which are no files.)
const bundled = output[0].moduleIds.filter((id) => isAbsolute(id) && resolve(id) !== entry && existsSync(id));
for (const id of bundled) {
  rmSync(id);
  rmSync(`${id}.map`, { force: true });
}
// What tsc compiled from a module of types only: nothing imports it at run time.
const typesOnly = (file) => /^export \{\};\s*(\/\/# sourceMappingURL=\S+\s*)?$/.test(readFileSync(file, 'utf8'));
const left = [];
for (const f of readdirSync(dist, { recursive: true, encoding: 'utf8' })) {
  const file = join(dist, f);
  if (!f.endsWith('.js') || file === entry) continue;
  if (!typesOnly(file)) left.push(f);
  else for (const gone of [file, `${file}.map`]) rmSync(gone, { force: true });
}
if (left.length > 0) {
  console.error(`bundle: compiled but not in the bundle (nothing imports them statically): ${left.join(', ')}`);
  process.exit(1);
}
console.log(`bundle: ${bundled.length + 1} modules -> ${entry}`);
