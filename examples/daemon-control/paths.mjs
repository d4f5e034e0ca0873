// Where the control socket lives when nobody says otherwise. Shared by the
// daemon and ctl.mjs so that both agree without configuration.
// @ts-check
import { lstatSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SERVICE = 'daemon-control';

/**
 * $XDG_RUNTIME_DIR/daemon-control.sock (a per-user directory the system
 * already keeps private, and what the sample .socket unit's %t means);
 * without it, a 0700 directory of our own under the temp dir.
 * @param {{ create?: boolean }} [options] create the fallback directory (the daemon does; ctl does not)
 */
export function defaultSocketPath({ create = false } = {}) {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime) return join(runtime, `${SERVICE}.sock`);
  const dir = join(tmpdir(), `${SERVICE}-${process.getuid?.() ?? 'user'}`);
  if (create) ensurePrivateDir(dir);
  return join(dir, 'daemon.sock');
}

/**
 * A shared temp dir is where someone else could have made "our" directory
 * first: use it only if it is a real directory, ours, and closed to others.
 * @param {string} dir
 */
function ensurePrivateDir(dir) {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if (/** @type {{ code?: string }} */ (err).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) {
    throw new Error(`${dir} is not a private directory of this user (mode 0700); refusing to put the control socket there`);
  }
}
