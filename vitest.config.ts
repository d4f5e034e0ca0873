import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts', 'examples/*/test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Real processes and sockets: forks isolate native state per file.
    pool: 'forks',
    reporters: ['default', './scripts/summary-reporter.ts'],
    typecheck: { enabled: true, include: ['packages/*/test/**/*.test-d.ts'] },
  },
});
