#!/usr/bin/env node
// Builds, prebuilds and packs every published package into one directory:
//
//   pnpm run release:pack                 # -> dist-tarballs/*.tgz
//   node scripts/release-pack.mjs [--out dir] [--quiet] [--fresh] [--build-if-stale | --skip-build]
//
// 1. `pnpm -r run build` for packages/* (tsc into dist/, each package's
//    modules then bundled into its entry by scripts/bundle.mjs), then
//    removes dist outputs whose source file no longer exists (a clean build
//    would not have them, and they would be shipped). --build-if-stale
//    builds only when some src/*.ts (or a tsconfig, a package.json) is newer
//    than its dist/*.d.ts, as after `npm test`'s own build; --skip-build
//    never does.
// 2. The transport prebuild: `build:prebuild` (prebuildify --napi --strip
//    --tag-libc) run in a scratch copy of the native sources, so the
//    workspace's build/Release, which tests running meanwhile load, is never
//    rebuilt or moved. The result, prebuilds/<platform>-<arch>/
//    @afunix+transport.<libc>.node, must load before it is packed. It is
//    kept in node_modules/.cache/afunix-prebuild/<hash of its inputs>/ and
//    reused while those inputs are unchanged (--fresh: build it anyway).
// 3. `pnpm pack` in each package (workspace:* becomes the real version).
// 4. Checks each tarball: no workspace: ranges left, every main/types/
//    exports/bin target present, every source map's sources present, and
//    for transport the native sources, binding.gyp, install script and the
//    prebuild. Writes manifest.json (files and sizes) next to the tarballs.
//
// packages/transport/prebuilds/ exists only while packing: left in the
// workspace it would make a source checkout's install skip compiling.
// Runs are serialized by a lock, since they share that directory.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { arch, platform, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PACKAGES = ['transport', 'framing', 'rpc', 'cli'];
const args = process.argv.slice(2);
const out = resolve(optionValue('--out') ?? join(root, 'dist-tarballs'));
const quiet = args.includes('--quiet');
const pnpm = join(root, 'node_modules', '.bin', 'pnpm');
const transportDir = join(root, 'packages', 'transport');

function optionValue(name) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function log(message) {
  if (!quiet) console.log(message);
}

function run(cmd, cmdArgs, cwd, capture = quiet) {
  const r = spawnSync(cmd, cmdArgs, { cwd, stdio: capture ? ['ignore', 'pipe', 'pipe'] : 'inherit', encoding: 'utf8' });
  if (r.status !== 0) {
    const detail = capture ? `\n${r.stdout ?? ''}${r.stderr ?? ''}` : '';
    throw new Error(`${cmd} ${cmdArgs.join(' ')} (in ${cwd}) failed: ${r.error?.message ?? `exit ${r.status}`}${detail}`);
  }
  return r.stdout ?? '';
}

function walk(dir, base = dir) {
  const files = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...walk(p, base));
    else files.push(relative(base, p));
  }
  return files;
}

// --- lock: one release run at a time (they share packages/transport/prebuilds)
const lockDir = join(tmpdir(), `afunix-release-${createHash('sha1').update(root).digest('hex').slice(0, 10)}.lock`);

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

async function lock() {
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(join(lockDir, 'pid'), String(process.pid));
      return;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      let owner = NaN;
      try {
        owner = Number(readFileSync(join(lockDir, 'pid'), 'utf8'));
      } catch {}
      // A lock without a live owner (or whose owner died before writing its pid,
      // judged by age) is stale.
      const age = Date.now() - (statSync(lockDir, { throwIfNoEntry: false })?.mtimeMs ?? 0);
      if ((Number.isInteger(owner) && owner > 0 && !alive(owner)) || (!Number.isInteger(owner) && age > 10_000)) {
        rmSync(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`another release:pack holds ${lockDir}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

// --- 1. build
/** Why dist/ is out of date (a source or config newer than its output), or null. */
function staleness() {
  const mtime = (path) => statSync(path).mtimeMs;
  const buildFiles = ['package.json', 'scripts/bundle.mjs', 'tsconfig.base.json'].map((f) => [f, mtime(join(root, f))]);
  for (const name of PACKAGES) {
    const pkgDir = join(root, 'packages', name);
    const at = (f) => `packages/${name}/${f}`;
    // One .js, the bundle (scripts/bundle.mjs): more is a bare tsc's output.
    const js = existsSync(join(pkgDir, 'dist')) ? walk(join(pkgDir, 'dist')).filter((f) => f.endsWith('.js')) : [];
    if (js.length !== 1) return `${at('dist/')} holds ${js.length} .js files, not one bundle`;
    const bundle = mtime(join(pkgDir, 'dist', js[0]));
    const configs = ['package.json', 'tsconfig.json'].map((f) => [at(f), mtime(join(pkgDir, f))]);
    for (const f of walk(join(pkgDir, 'src')).filter((f) => f.endsWith('.ts'))) {
      // (Its .d.ts: its .js went into the bundle.)
      const declaration = `dist/${f.replace(/\.ts$/, '.d.ts')}`;
      const out = statSync(join(pkgDir, declaration), { throwIfNoEntry: false });
      if (!out) return `${at(declaration)} is missing`;
      const built = Math.min(out.mtimeMs, bundle);
      const newer = [[at(`src/${f}`), mtime(join(pkgDir, 'src', f))], ...configs, ...buildFiles].find(([, t]) => t > built);
      if (newer) return `${newer[0]} is newer than ${at(declaration)} or the bundle`;
    }
  }
  return null;
}

function build() {
  const stale = args.includes('--build-if-stale') ? staleness() : 'always';
  if (stale === null) {
    log('» build: skipped, dist/ is newer than every source');
  } else {
    log(stale === 'always' ? '» build' : `» build (${stale})`);
    run(pnpm, ['-r', '--filter', './packages/*', 'run', 'build'], root);
  }
  for (const name of PACKAGES) {
    const pkgDir = join(root, 'packages', name);
    const dist = join(pkgDir, 'dist');
    for (const file of walk(dist)) {
      const stem = file.replace(/(\.d\.ts|\.js)(\.map)?$/, '');
      if (stem === file) continue;
      if (!existsSync(join(pkgDir, 'src', `${stem}.ts`))) {
        log(`  removing stale packages/${name}/dist/${file} (no src/${stem}.ts)`);
        rmSync(join(dist, file));
      }
    }
  }
}

// --- 2. prebuild
// Cached by its inputs: the native sources, binding.gyp, the versions of
// node-addon-api, node-gyp and prebuildify, the prebuildify command, the
// compiler's version and the platform. --fresh ignores the cache.
function prebuildKey() {
  const h = createHash('sha256');
  const pkg = JSON.parse(readFileSync(join(transportDir, 'package.json'), 'utf8'));
  h.update(JSON.stringify([pkg.scripts['build:prebuild'], pkg.dependencies, pkg.devDependencies, platform(), arch(), libc()]));
  for (const f of ['binding.gyp', ...walk(join(transportDir, 'native')).sort().map((f) => join('native', f))]) {
    h.update(`\0${f}\0`).update(readFileSync(join(transportDir, f)));
  }
  const cxx = spawnSync(process.env.CXX || 'g++', ['--version'], { encoding: 'utf8' });
  h.update(String(cxx.stdout));
  return h.digest('hex').slice(0, 16);
}

function libc() {
  if (platform() !== 'linux') return '';
  return process.report.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl';
}

function loads(file) {
  const r = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`prebuild ${file} does not load: ${r.stderr}`);
}

function prebuild() {
  const key = prebuildKey();
  const cached = join(root, 'node_modules', '.cache', 'afunix-prebuild', key);
  let from = cached;
  let stage = null;
  try {
    if (args.includes('--fresh') || !existsSync(join(cached, 'prebuilds'))) {
      log('» prebuild (transport)');
      stage = mkdtempSync(join(tmpdir(), 'afunix-prebuild-'));
      for (const f of ['package.json', 'binding.gyp', 'native']) cpSync(join(transportDir, f), join(stage, f), { recursive: true });
      // node-addon-api (binding.gyp's include_dirs), node-gyp and prebuildify.
      symlinkSync(join(transportDir, 'node_modules'), join(stage, 'node_modules'), 'dir');
      run(pnpm, ['run', 'build:prebuild'], stage);
      from = stage;
    } else {
      log(`» prebuild (transport): cached ${relative(root, cached)}`);
    }
    const built = walk(join(from, 'prebuilds'));
    if (built.length === 0) throw new Error('prebuildify produced nothing');
    for (const file of built) loads(join(from, 'prebuilds', file));
    if (stage) {
      rmSync(cached, { recursive: true, force: true });
      cpSync(join(stage, 'prebuilds'), join(cached, 'prebuilds'), { recursive: true });
    }
    rmSync(join(transportDir, 'prebuilds'), { recursive: true, force: true });
    cpSync(join(from, 'prebuilds'), join(transportDir, 'prebuilds'), { recursive: true });
    log(`  ${built.map((f) => `prebuilds/${f}`).join(', ')}`);
  } finally {
    if (stage) rmSync(stage, { recursive: true, force: true });
  }
}

// --- 3. pack
function pack() {
  log(`» pack -> ${out}`);
  mkdirSync(out, { recursive: true });
  for (const f of readdirSync(out)) if (/^afunix-.*\.tgz$/.test(f) || f === 'manifest.json') rmSync(join(out, f));
  const tarballs = {};
  for (const name of PACKAGES) {
    const pkgDir = join(root, 'packages', name);
    const { name: pkgName, version } = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
    run(pnpm, ['pack', '--pack-destination', out], pkgDir, true); // its file list is in the summary
    const file = join(out, `${pkgName.replace(/^@/, '').replace('/', '-')}-${version}.tgz`);
    if (!existsSync(file)) throw new Error(`pnpm pack did not write ${file}`);
    tarballs[name] = { name: pkgName, version, file };
  }
  return tarballs;
}

// --- 4. check
function exportTargets(value, acc = []) {
  if (typeof value === 'string') acc.push(value);
  else if (value && typeof value === 'object') for (const v of Object.values(value)) exportTargets(v, acc);
  return acc;
}

function check(tarballs) {
  log('» check');
  const manifest = [];
  const problems = [];
  const scratch = mkdtempSync(join(tmpdir(), 'afunix-packcheck-'));
  try {
    for (const [short, t] of Object.entries(tarballs)) {
      const dir = join(scratch, short);
      mkdirSync(dir);
      run('tar', ['xzf', t.file, '-C', dir], root, true);
      const pkgRoot = join(dir, 'package');
      const files = walk(pkgRoot).sort();
      const has = new Set(files);
      const pkg = JSON.parse(readFileSync(join(pkgRoot, 'package.json'), 'utf8'));
      const fail = (msg) => problems.push(`${t.name}: ${msg}`);

      for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies']) {
        for (const [dep, range] of Object.entries(pkg[field] ?? {})) {
          if (String(range).startsWith('workspace:')) fail(`${field}.${dep} is still ${range}`);
        }
      }
      const targets = [pkg.main, pkg.types, ...exportTargets(pkg.exports), ...exportTargets(pkg.bin)].filter(Boolean);
      for (const target of targets) if (!has.has(target.replace(/^\.\//, ''))) fail(`${target} is named in package.json but not packed`);
      if (!pkg.license) fail('no license');
      // pnpm pack copies the workspace root's LICENSE into a package that has none.
      if (!has.has('LICENSE')) fail('no LICENSE file');
      if (!pkg.engines?.node) fail('no engines.node');
      for (const f of files.filter((f) => f.endsWith('.map'))) {
        const map = JSON.parse(readFileSync(join(pkgRoot, f), 'utf8'));
        for (const source of map.sources ?? []) {
          const p = relative(pkgRoot, resolve(dirname(join(pkgRoot, f)), map.sourceRoot ?? '', source));
          if (!has.has(p)) fail(`${f} points at ${source}, not packed`);
        }
      }
      if (short === 'transport') {
        for (const f of ['binding.gyp', 'scripts/build-native.mjs', 'native/addon.cc']) if (!has.has(f)) fail(`${f} missing`);
        const tag = `prebuilds/${platform()}-${arch()}/`;
        if (!files.some((f) => f.startsWith(tag) && f.endsWith('.node'))) fail(`no ${tag}*.node prebuild`);
        if (files.some((f) => f.startsWith('build/'))) fail('a build/ directory was packed');
      }
      manifest.push({ package: t.name, version: t.version, tarball: t.file, size: statSync(t.file).size, unpackedSize: files.reduce((n, f) => n + statSync(join(pkgRoot, f)).size, 0), files });
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  if (problems.length) throw new Error(`packed packages are not right:\n  ${problems.join('\n  ')}`);
  writeFileSync(join(out, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

function summary(manifest) {
  for (const m of manifest) {
    const groups = {};
    for (const f of m.files) {
      const dir = f.includes('/') ? `${f.slice(0, f.lastIndexOf('/'))}/` : f;
      groups[dir] = (groups[dir] ?? 0) + 1;
    }
    const list = Object.entries(groups).map(([d, n]) => (d.endsWith('/') ? `${d} (${n})` : d)).join(', ');
    console.log(`${relative(process.cwd(), m.tarball)}  ${(m.size / 1024).toFixed(1)} kB packed, ${(m.unpackedSize / 1024).toFixed(1)} kB unpacked, ${m.files.length} files: ${list}`);
  }
}

await lock();
try {
  if (!args.includes('--skip-build')) build();
  prebuild();
  try {
    const manifest = check(pack());
    summary(manifest);
  } finally {
    rmSync(join(transportDir, 'prebuilds'), { recursive: true, force: true });
  }
} finally {
  rmSync(lockDir, { recursive: true, force: true });
}
