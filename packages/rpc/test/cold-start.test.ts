// A short-lived client (a CLI asking its daemon one thing) pays for every
// module it loads: perf_hooks ~1.5 ms, worker_threads 2-3 ms, msgpackr's
// string extractor ~22 ms (with child_process, which its loader's libc
// probe loads). A child process imports the built packages (dist/, rebuilt
// here when a source is newer) and calls a server in this process.
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { ensureBuilt } from '../../../test/ensure-built.js';
import { createServer } from '../src/index.js';
import { tempDir } from './helpers.js';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const tmp = tempDir();
afterAll(() => tmp.cleanup());

const CHILD = `
const before = new Set(process.moduleLoadList);
const { connect } = await import(${JSON.stringify(join(pkg, 'dist', 'index.js'))});
const client = await connect(process.argv[1], { service: 'cold' });
const answer = await client.echo({ text: 'hello', n: 7 });
await client.$close();
const loaded = process.moduleLoadList.filter((m) => !before.has(m));
const { isNativeAccelerationEnabled: extractor } = await import('msgpackr/pack');
process.stdout.write(JSON.stringify({ answer, loaded, extractor }));
`;

// Answers of 64 KiB of text: the extractor is loaded after a MiB of them.
const LONG_CALLS = `
const { connect } = await import(${JSON.stringify(join(pkg, 'dist', 'index.js'))});
const msgpackr = await import('msgpackr/pack');
const client = await connect(process.argv[1], { service: 'cold' });
const text = 'afunix é '.repeat(6_554);
let answered = 0;
for (let i = 0; i < 20; i++) if ((await client.echo({ i, text })).text === text) answered++;
const at = Date.now();
while (!msgpackr.isNativeAccelerationEnabled && Date.now() - at < 10_000) await new Promise((r) => setTimeout(r, 20));
const after = (await client.echo({ text })).text === text;
await client.$close();
process.stdout.write(JSON.stringify({ answered, extractor: msgpackr.isNativeAccelerationEnabled, after }));
`;

async function runChild(script: string, address: string): Promise<Record<string, unknown>> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, address], { cwd: pkg, timeout: 20_000 });
  return JSON.parse(stdout) as Record<string, unknown>;
}

async function withServer(fn: (address: string) => Promise<void>): Promise<void> {
  for (const dir of ['transport', 'framing', 'rpc']) ensureBuilt(join(pkg, '..', dir));
  const server = createServer({ service: 'cold', handlers: { echo: (_ctx, v: unknown) => v } });
  const address = join(tmp.dir, 'cold.sock');
  await server.listen(address);
  try {
    await fn(address);
  } finally {
    await server.close();
  }
}

it('connecting, one call and closing load no perf_hooks, worker_threads, crypto, child_process or string extractor', async () => {
  await withServer(async (address) => {
    const { answer, loaded, extractor } = (await runChild(CHILD, address)) as { answer: unknown; loaded: string[]; extractor: boolean };
    expect(answer).toEqual({ text: 'hello', n: 7 });
    // (The list names each as "NativeModule <id>"; internal/worker/io is
    // what MessageChannel and worker_threads load first.)
    const heavy = loaded.filter((m) => /^NativeModule (perf_hooks|worker_threads|internal\/worker\/io|crypto|child_process)$/.test(m));
    expect(heavy).toEqual([]);
    // The list was read: the import itself loads modules.
    expect(loaded.length).toBeGreaterThan(0);
    expect(extractor).toBe(false);
  });
});

it('a process that decodes a MiB of long messages loads the extractor, and decodes with it', async () => {
  await withServer(async (address) => {
    expect(await runChild(LONG_CALLS, address)).toEqual({ answered: 20, extractor: true, after: true });
  });
});
