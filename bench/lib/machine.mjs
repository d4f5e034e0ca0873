// What machine the figures come from, for every suite's results file.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

export function cpuModel() {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) return m[1].trim();
  } catch {}
  return cpus()[0]?.model ?? 'unknown';
}
