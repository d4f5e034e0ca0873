// Install step: use a prebuilt binary if one fits, else build from source.
// A failed build never fails the install: the package then runs on Node's
// `net` for plain stream sockets and `features` says what is missing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function hasBinary() {
  try {
    require('node-gyp-build').path(root);
    return true;
  } catch {
    return false;
  }
}

function nodeGypCommand() {
  if (process.env.npm_config_node_gyp) return [process.execPath, process.env.npm_config_node_gyp];
  try {
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js')];
  } catch {
    return ['node-gyp'];
  }
}

if (process.env.AFUNIX_SKIP_NATIVE) {
  console.warn('@afunix/transport: AFUNIX_SKIP_NATIVE set, using the net fallback');
} else if (!existsSync(join(root, 'build', 'Release', 'afunix.node')) && hasBinary()) {
  // A prebuild for this platform is present: nothing to compile.
} else {
  const [cmd, ...args] = nodeGypCommand();
  const r = spawnSync(cmd, [...args, 'rebuild'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.warn('@afunix/transport: native build failed; falling back to Node net (stream sockets only).');
  }
}
