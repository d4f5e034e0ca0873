#!/usr/bin/env node
// The `afunix` command. A file that exists before the build, so that package
// managers link the bin at install time (pnpm skips a bin whose target is
// missing, and dist/ is only built afterwards).
import '../dist/main.js';
