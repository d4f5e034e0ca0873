// For tests whose child processes import a package's built dist/: builds it
// again, as its build script does (tsc, then scripts/bundle.mjs), when a
// source is newer than the bundle. A bare tsc would leave the modules
// unbundled beside it.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const bundleScript = fileURLToPath(new URL('../scripts/bundle.mjs', import.meta.url));

export function ensureBuilt(pkgDir: string, entry = 'index.js'): void {
  const built = join(pkgDir, 'dist', entry);
  const src = join(pkgDir, 'src');
  const newest = Math.max(...readdirSync(src, { recursive: true, encoding: 'utf8' }).map((f) => statSync(join(src, f)).mtimeMs));
  if (existsSync(built) && statSync(built).mtimeMs >= newest) return;
  const tsc = createRequire(join(pkgDir, 'package.json')).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: pkgDir, stdio: 'pipe' });
    execFileSync(process.execPath, [bundleScript, entry], { cwd: pkgDir, stdio: 'pipe' });
  } catch (err) {
    const { stdout, stderr, message } = err as { stdout?: Buffer; stderr?: Buffer; message: string };
    throw new Error(`building ${pkgDir}/dist failed: ${message}\n${stdout ?? ''}${stderr ?? ''}`);
  }
}
