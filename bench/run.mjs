#!/usr/bin/env node
// Runs every bench/suites/*.mjs in name order, each in its own node process
// (a suite's JIT state, GC heap and open sockets cannot colour the next one).
// CLI arguments (e.g. --quick) are passed through to every suite. Output is
// streamed as it comes; the run fails if any suite fails, after all have run.
//
//   node bench/run.mjs [--quick] [--only name[,name]] [suite args...]
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const suitesDir = join(here, 'suites');

const args = process.argv.slice(2);
let only = null;
const passThrough = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--only') only = new Set(args[++i]?.split(',') ?? []);
  else if (args[i].startsWith('--only=')) only = new Set(args[i].slice(7).split(','));
  else passThrough.push(args[i]);
}

const suites = readdirSync(suitesDir)
  .filter((f) => f.endsWith('.mjs'))
  .sort()
  .filter((f) => !only || only.has(basename(f, '.mjs')));

if (suites.length === 0) {
  console.error(`bench: no suites${only ? ` matching ${[...only].join(',')}` : ''} in ${suitesDir}`);
  process.exit(1);
}

function runSuite(file) {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const child = spawn(process.execPath, [join(suitesDir, file), ...passThrough], {
      stdio: 'inherit',
      cwd: join(here, '..'),
    });
    // Ctrl-C reaches the child through the process group; just wait for it.
    child.on('error', (err) => resolve({ file, ok: false, why: err.message, ms: 0 }));
    child.on('exit', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const ok = code === 0;
      resolve({ file, ok, why: ok ? '' : signal ? `killed by ${signal}` : `exit code ${code}`, ms });
    });
  });
}

const results = [];
for (const file of suites) {
  console.log(`\n=== bench: ${file} ${passThrough.join(' ')}`.trimEnd());
  const r = await runSuite(file);
  results.push(r);
  console.log(`=== bench: ${file} ${r.ok ? 'ok' : `FAILED (${r.why})`} in ${(r.ms / 1000).toFixed(1)} s`);
}

const failed = results.filter((r) => !r.ok);
console.log(`\nbench: ${results.length - failed.length} suite(s) passed, ${failed.length} failed`);
for (const r of failed) console.log(`  failed: ${r.file} (${r.why})`);
process.exit(failed.length ? 1 : 0);
