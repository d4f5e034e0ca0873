// What users install is what we test: `pnpm run release:pack`'s tarballs,
// installed with plain npm into a project in os.tmpdir() (outside the
// workspace, so nothing resolves to our sources), then used as a user would.
//
// - prebuild: all four tarballs, no compiler reachable (PATH without
//   make/g++, npm_config_node_gyp a script that exits 1). The shipped .d.ts
//   type-check a typed contract (a @ts-expect-error line proves the types are
//   live), the compiled program makes a call and receives an fd, and
//   features.native comes from prebuilds/linux-x64/. `npx afunix --help`
//   runs from the tarball's bin.
// - source build: the transport tarball without its prebuild, compiler
//   present: the install script compiles it (features.native, build/Release).
// - fallback: the same tarball, no compiler either: the install still
//   succeeds and the same program (compiled once, in the prebuild case) makes
//   its typed call over Node's net (features.native false).
//
// npm fetches typescript, @types/node, msgpackr, ... from the registry (the
// user's npm cache makes repeated runs fast).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { arch, platform, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
const TS_VERSION = rootPkg.devDependencies.typescript!;
const TYPES_NODE_VERSION = rootPkg.devDependencies['@types/node']!;

const MINUTE = 60_000;
const work = mkdtempSync(join(tmpdir(), 'afunix-release-'));
const tarballs = join(work, 'tarballs');
const timings: Record<string, number> = {};

interface Packed {
  package: string;
  tarball: string;
  size: number;
  files: string[];
}
let packed: Packed[] = [];
const tarball = (name: string) => packed.find((p) => p.package === name)!.tarball;
let transportWithoutPrebuild = '';

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of a user's shell: none of the npm_* variables npx and pnpm put around this test. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(npm_|pnpm_|INIT_CWD$|NODE_OPTIONS$|VITEST|TEST$)/i.test(k)) env[k] = v;
  }
  return { ...env, ...extra };
}

function run(cmd: string, args: string[], cwd: string, env = userEnv()): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function ok(r: Result, what: string): Result {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  return r;
}

async function timed<T>(label: string, f: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await f();
  } finally {
    timings[label] = Math.round(performance.now() - started);
  }
}

/**
 * A PATH with node, npm and a shell but no compiler, make or python: any
 * node-gyp run fails (at finding python, before it would need the compiler).
 * (npm_config_node_gyp cannot stand in: npm 11 sets it to its own bundled
 * node-gyp for install scripts, whatever the environment says.)
 */
function noCompiler(): NodeJS.ProcessEnv {
  const bin = join(work, 'no-compiler-bin');
  if (!existsSync(bin)) {
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    const npmCli = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin');
    symlinkSync(join(npmCli, 'npm-cli.js'), join(bin, 'npm'));
    symlinkSync(join(npmCli, 'npx-cli.js'), join(bin, 'npx'));
    symlinkSync('/bin/sh', join(bin, 'sh'));
  }
  return userEnv({ PATH: bin });
}

async function newProject(name: string, pkgs: string[], env: NodeJS.ProcessEnv): Promise<{ dir: string; install: Result }> {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name, private: true, type: 'module' }, null, 2)}\n`);
  const install = ok(
    await timed(`npm install (${name})`, () =>
      run(
        'npm',
        ['install', '--no-audit', '--no-fund', '--foreground-scripts', '--loglevel=warn', ...pkgs],
        dir,
        env,
      ),
    ),
    `npm install in ${dir}`,
  );
  return { dir, install };
}

const tsconfig = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    lib: ['ES2023'],
    types: ['node'],
    strict: true,
    // Our .d.ts files are checked too, as a user without skipLibCheck has them checked.
    skipLibCheck: false,
    outDir: 'out',
  },
  include: ['*.ts'],
};

// The user's program: a typed contract, a call, an fd, and the CLI against
// the same server. It prints one JSON line.
const APP = `
import { execFile } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Fd, RpcError, connect, createServer } from '@afunix/rpc';
import { features, loadError } from '@afunix/transport';

interface Calc {
  methods: {
    add(a: number, b: number): number;
    open(path: string): Fd;
  };
}

const dir = mkdtempSync(join(tmpdir(), 'afunix-app-'));
const file = join(dir, 'note.txt');
writeFileSync(file, 'sent as a descriptor');
const address = join(dir, 'calc.sock');

const server = createServer<Calc>({
  service: 'calc',
  // Over net (no addon) the kernel's peer credentials are out of reach, and a policy fails closed.
  allow: features.peerCredentials ? 'same-user' : 'any',
  handlers: {
    add: (_ctx, a, b) => a + b,
    open: (_ctx, path) => Fd.transfer(openSync(path, 'r')),
  },
});
await server.listen(address, { mode: 0o600 });
const calc = await connect<Calc>(address, { service: 'calc' });

const sum: number = await calc.add(2, 3);
// @ts-expect-error add() takes numbers: if the shipped types were lost, this line would not be an error and tsc would fail
const wrong = () => calc.add('2', 3);
void wrong;

const result: Record<string, unknown> = { sum, native: features.native, loadError: loadError?.message ?? null };
if (features.fdPassing) {
  const fd = await calc.open(file);
  result.fdText = readFileSync(fd.fd, 'utf8');
  fd.close();
} else {
  result.fdError = await calc.open(file).then(() => 'no error', (err: RpcError) => String(err.code));
}
const cli = await promisify(execFile)(join('node_modules', '.bin', 'afunix'), ['call', address, 'add', '20', '22']).catch((err) => err);
result.cli = { stdout: cli.stdout, stderr: cli.stderr, code: cli.code ?? 0 };

await calc.$close();
await server.close();
rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify(result));
`;

// app.ts compiled once, by the installed typescript against the installed
// packages' types, in the prebuild case; the fallback case runs the same JS.
let compiled: (js: string | Error) => void;
const compiledApp = new Promise<string>((resolve, reject) => {
  compiled = (js) => (js instanceof Error ? reject(js) : resolve(js));
});
compiledApp.catch(() => {}); // reported by the case that compiles it

async function typecheck(dir: string, env: NodeJS.ProcessEnv): Promise<void> {
  try {
    writeFileSync(join(dir, 'tsconfig.json'), `${JSON.stringify(tsconfig, null, 2)}\n`);
    writeFileSync(join(dir, 'app.ts'), APP);
    ok(await timed('tsc', () => run(process.execPath, [join('node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], dir, env)), 'tsc');
    compiled(readFileSync(join(dir, 'out', 'app.js'), 'utf8'));
  } catch (err) {
    compiled(new Error(`app.ts did not compile: ${(err as Error).message}`));
    throw err;
  }
}

async function runApp(dir: string, env: NodeJS.ProcessEnv): Promise<Record<string, any>> {
  writeFileSync(join(dir, 'app.js'), await compiledApp);
  const r = ok(await timed(`app (${dir.split('/').pop()})`, () => run(process.execPath, ['app.js'], dir, env)), 'node app.js');
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** Where node-gyp-build finds the addon in an installed @afunix/transport. */
async function addonPath(dir: string, env: NodeJS.ProcessEnv): Promise<string> {
  const pkg = join(dir, 'node_modules', '@afunix', 'transport');
  const script = `try { console.log(require('node-gyp-build').path(${JSON.stringify(pkg)})) } catch (e) { console.log('none: ' + e.message.split('\\n')[0]) }`;
  return ok(await run(process.execPath, ['-e', script], pkg, env), 'node-gyp-build path').stdout.trim();
}

beforeAll(async () => {
  ok(
    await timed('release:pack', () =>
      // --build-if-stale: `npm test` has just built dist/; a stale one is rebuilt.
      run(process.execPath, [join(root, 'scripts', 'release-pack.mjs'), '--out', tarballs, '--quiet', '--build-if-stale'], root, process.env),
    ),
    'release:pack',
  );
  packed = JSON.parse(readFileSync(join(tarballs, 'manifest.json'), 'utf8'));

  // The transport tarball as it would be for a platform we have no prebuild for.
  const unpacked = join(work, 'transport-unpacked');
  mkdirSync(unpacked);
  ok(await run('tar', ['xzf', tarball('@afunix/transport'), '-C', unpacked], work), 'tar x');
  rmSync(join(unpacked, 'package', 'prebuilds'), { recursive: true });
  transportWithoutPrebuild = join(work, 'afunix-transport-0.1.0-no-prebuild.tgz');
  ok(await run('tar', ['czf', transportWithoutPrebuild, '-C', unpacked, 'package'], work), 'tar c');
}, 5 * MINUTE);

afterAll(() => {
  console.log(`release test timings (ms): ${JSON.stringify(timings)}`);
  if (!process.env.AFUNIX_KEEP_RELEASE_TMP) rmSync(work, { recursive: true, force: true });
});

describe.concurrent('the packed packages, installed with npm outside the workspace', () => {
  it('are complete: exports, types, one bundled module, sources for the maps, native sources and a prebuild', () => {
    expect(packed.map((p) => p.package)).toEqual(['@afunix/transport', '@afunix/framing', '@afunix/rpc', '@afunix/cli']);
    for (const p of packed) {
      expect(p.files).toContain('package.json');
      expect(p.files).toContain('README.md');
      expect(p.files.some((f) => f.startsWith('src/'))).toBe(true);
      expect(p.files.filter((f) => /^(test|node_modules|build)\//.test(f))).toEqual([]);
      // Its JavaScript is one bundle (scripts/bundle.mjs), its entry.
      expect(p.files.filter((f) => f.startsWith('dist/') && f.endsWith('.js'))).toEqual([p.package === '@afunix/cli' ? 'dist/main.js' : 'dist/index.js']);
    }
    const transport = packed.find((p) => p.package === '@afunix/transport')!;
    expect(transport.files).toEqual(expect.arrayContaining(['binding.gyp', 'scripts/build-native.mjs', 'native/addon.cc', 'dist/index.d.ts']));
    expect(transport.files).toContain(`prebuilds/${platform()}-${arch()}/@afunix+transport.glibc.node`);
  });

  it('with the prebuild: typed call, fd passing and the CLI, with no compiler anywhere', async () => {
    const env = noCompiler();
    const { dir, install } = await newProject(
      'with-prebuild',
      [
        tarball('@afunix/transport'), tarball('@afunix/framing'), tarball('@afunix/rpc'), tarball('@afunix/cli'),
        `typescript@${TS_VERSION}`, `@types/node@${TYPES_NODE_VERSION}`,
      ],
      env,
    );
    // The install script found the prebuild and did not try to compile.
    expect(install.stdout + install.stderr).not.toMatch(/gyp ERR!|native build failed/);
    expect(existsSync(join(dir, 'node_modules', '@afunix', 'transport', 'build'))).toBe(false);
    expect(await addonPath(dir, env)).toMatch(new RegExp(`prebuilds/${platform()}-${arch()}/@afunix\\+transport\\.glibc\\.node$`));

    // Installed from our tarballs, with workspace:* rewritten to the version.
    const lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8'));
    for (const name of ['transport', 'framing', 'rpc', 'cli']) {
      expect(lock.packages[`node_modules/@afunix/${name}`].resolved).toMatch(/^file:.*\.tgz$/);
    }
    const rpcPkg = JSON.parse(readFileSync(join(dir, 'node_modules', '@afunix', 'rpc', 'package.json'), 'utf8'));
    expect(rpcPkg.dependencies['@afunix/transport']).toBe('0.1.0');

    await typecheck(dir, env);
    const result = await runApp(dir, env);
    expect(result).toMatchObject({ sum: 5, native: true, loadError: null, fdText: 'sent as a descriptor' });
    expect(result.cli).toEqual({ stdout: '42\n', stderr: '', code: 0 });

    const help = ok(await run('npx', ['--no-install', 'afunix', '--help'], dir, env), 'npx afunix --help');
    expect(help.stdout).toMatch(/^Usage: afunix <command>/);
    expect(help.stdout).toContain('call');
  }, 5 * MINUTE);

  it('without a prebuild: the install script builds from source', async () => {
    const env = userEnv();
    const { dir } = await newProject('source-build', [transportWithoutPrebuild], env);
    expect(await addonPath(dir, env)).toMatch(/build\/Release\/afunix\.node$/);
    const r = ok(
      await run(process.execPath, ['--input-type=module', '-e', "const t = await import('@afunix/transport'); console.log(JSON.stringify(t.features))"], dir, env),
      'import',
    );
    expect(JSON.parse(r.stdout)).toMatchObject({ native: true, fdPassing: true, seqpacket: true });
  }, 5 * MINUTE);

  it('without a prebuild or a compiler: installs anyway and a typed call runs over net', async () => {
    const env = noCompiler();
    const { dir, install } = await newProject(
      'fallback',
      [transportWithoutPrebuild, tarball('@afunix/framing'), tarball('@afunix/rpc'), tarball('@afunix/cli')],
      env,
    );
    expect(install.stdout + install.stderr).toMatch(/gyp ERR! .*(Python|make|g\+\+)/);
    expect(install.stdout + install.stderr).toContain('falling back to Node net');
    expect(await addonPath(dir, env)).toMatch(/^none: No native build was found/);

    const result = await runApp(dir, env);
    expect(result).toMatchObject({ sum: 5, native: false, fdError: 'ERR_AFUNIX_UNSUPPORTED' });
    expect(result.loadError).toMatch(/No native build was found/);
    expect(result.cli).toEqual({ stdout: '42\n', stderr: '', code: 0 });
  }, 5 * MINUTE);
});
