// Running the real, built `afunix` binary and the fixture servers, each in
// its own process, as a user's shell would.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';

export const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
export const cliMain = fileURLToPath(new URL('../dist/main.js', import.meta.url));

export function requireBuiltCli(): void {
  if (!existsSync(cliMain)) throw new Error(`${cliMain} is missing: build first (npx pnpm -r run build)`);
}

export interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Collects a child's output and how it ended; kills it if it outlives `ms`. */
export async function outcomeOf(child: ChildProcess, ms = 20_000): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const killer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(killer);
  return { code, signal, stdout, stderr };
}

export function spawnCli(args: string[], options: SpawnOptions = {}): ChildProcess {
  return spawn(process.execPath, [cliMain, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
}

/** `afunix <args>` to completion. */
export function afunix(args: string[], options: SpawnOptions = {}): Promise<Outcome> {
  return outcomeOf(spawnCli(args, options));
}

export interface Fixture {
  child: ChildProcess;
  pid: number;
  stop(): Promise<void>;
}

/** Starts a fixture script and waits for its {"ready":true} line. */
export async function startFixture(script: string, args: string[], cwd?: string): Promise<Fixture> {
  const child = spawn(process.execPath, [join(fixtures, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'], cwd });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${script} exited early with code ${code}`)));
  });
  const ready = JSON.parse(line) as { pid?: number };
  return {
    child,
    pid: ready.pid ?? child.pid!,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Fixtures started for a test file, all stopped by stopAll() (its afterAll). */
export class Fixtures {
  readonly #running: Fixture[] = [];

  async start(script: string, ...args: string[]): Promise<Fixture> {
    return this.startIn(undefined, script, ...args);
  }

  /** start(), in the working directory `cwd` (for relative socket paths). */
  async startIn(cwd: string | undefined, script: string, ...args: string[]): Promise<Fixture> {
    const f = await startFixture(script, args, cwd);
    this.#running.push(f);
    return f;
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.#running.splice(0).map((f) => f.stop()));
  }
}

/**
 * What every CLI test file sets up: the built CLI checked for, a temp
 * directory, and fixture servers started with `fixture()` (or
 * `running.startIn()`), all stopped and the directory removed after the
 * file's tests. A file's own beforeAll runs after the check.
 */
export function testFileScope() {
  const tmp = tempDir();
  const running = new Fixtures();
  beforeAll(() => requireBuiltCli());
  afterAll(async () => {
    await running.stopAll();
    tmp.cleanup();
  });
  const fixture = (script: string, ...args: string[]): Promise<Fixture> => running.start(script, ...args);
  return { tmp, running, fixture };
}

/** Resolves with the first stderr text matching `pattern` (the child's stderr must be piped). */
export function stderrMatching(child: ChildProcess, pattern: RegExp, ms = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`no ${pattern} on stderr within ${ms} ms; saw: ${seen}`)), ms);
    child.stderr!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (pattern.test(seen)) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
  });
}

export function tempDir(): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'afunix-cli-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A failure is reported in exactly one line, with a code, and no stack trace. */
export function oneLineError(stderr: string): string {
  const lines = stderr.trimEnd().split('\n');
  if (lines.length !== 1 || /^\s+at /m.test(stderr)) throw new Error(`expected one error line, got:\n${stderr}`);
  return lines[0]!;
}

export const isRoot = process.getuid?.() === 0;
export const NOBODY = 65534;
