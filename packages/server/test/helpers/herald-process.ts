/**
 * `herald serve` as a real child process (the CLI, as a user runs it), for
 * tests that need what only a process has: its stderr, its exit, a SIGKILL.
 * Every process started here is killed when the test file ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';
import { SOURCE_NODE_ARGS } from './source.ts';

export const HERALD_MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

const started: ChildProcess[] = [];
after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

export class HeraldProcess {
  readonly child: ChildProcess;
  /** stdout, one parsed JSON log line each (`{text}` for anything else). */
  readonly logs: Record<string, unknown>[] = [];
  stderr = '';
  readonly #waiters = new Set<() => void>();

  /** `herald serve ARGS` in `cwd` (development mode unless ARGS give --config), with only PATH and `env` in its environment. */
  constructor(args: readonly string[], cwd: string, env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, 'serve', ...args], { cwd, env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(this.child);
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        this.logs.push({ text: line });
      }
      this.#wake();
    });
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
      this.#wake();
    });
    this.child.on('exit', () => this.#wake());
  }

  #wake(): void {
    for (const waiter of this.#waiters) waiter();
  }

  /** Resolves when `ready()` answers something other than undefined; rejects if the process exits first. */
  until<T>(ready: () => T | undefined, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const value = ready();
        if (value !== undefined) {
          this.#waiters.delete(check);
          resolve(value);
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          this.#waiters.delete(check);
          reject(new Error(`herald exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}:\n${this.stderr}`));
        }
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** The public port, from the `listening` log line. */
  listeningPort(): Promise<number> {
    return this.until(() => this.logs.find((l) => l['msg'] === 'listening')?.['port'] as number | undefined, 'listening');
  }

  /** Sends `signal` (SIGTERM drains) and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill(signal);
    await exited;
  }
}
