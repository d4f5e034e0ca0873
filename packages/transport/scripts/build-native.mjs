// Install step: use a prebuilt binary if one fits, else build from source.
// A failed build never fails the install: the package then runs on Node's
// `net` for plain stream sockets and `features` says what is missing.
//
// "Fits" means node-gyp-build picks it for this platform, arch and libc
// (prebuilds/linux-x64/@afunix+transport.glibc.node, say) and it actually
// loads here: a prebuild made against a newer glibc than this machine has
// is found but fails to load, and then we compile instead.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

/** The path of a prebuild that loads in this process, or null. */
function usablePrebuild() {
  let path;
  try {
    path = require('node-gyp-build').path(root);
  } catch {
    return null; // none for this platform/arch/libc
  }
  try {
    require(path);
    return path;
  } catch (err) {
    console.warn(`@afunix/transport: prebuild ${path} does not load here (${err.message.split('\n')[0]}); building from source.`);
    return null;
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
} else if (!existsSync(join(root, 'build', 'Release', 'afunix.node')) && usablePrebuild()) {
  // A prebuild for this platform is present and loads: nothing to compile.
  // (An existing build/Release is a source checkout: rebuild it, as before.)
} else {
  const [cmd, ...args] = nodeGypCommand();
  const r = spawnSync(cmd, [...args, 'rebuild'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.warn('@afunix/transport: native build failed; falling back to Node net (stream sockets only).');
  }
}
