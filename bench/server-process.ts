/**
 * One server under measurement, as a child process: Herald (`herald serve`
 * from the TypeScript sources or from the built JavaScript in
 * packages/server/dist), or a raw Node baseline (bench/raw-ws-server.ts,
 * bench/raw-sse-server.ts, bench/raw-long-poll-server.ts, bench/raw-net-long-poll-server.ts), optionally pinned to CPUs with `taskset`. Its
 * memory and CPU are read from /proc/<pid>; `stop()` sends SIGTERM and, if
 * the process is still there 10 s later (a drain with long-poll sessions
 * between polls takes the close grace, 5 s), SIGKILL. Every process
 * started here is killed (by PID) when the benchmark exits.
 *
 * Also: `pinSelf`, which pins the benchmark process (the load generator) to
 * other CPUs, so that the server and the load generator each have a core.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { transformSync } from 'esbuild';
import { benchSecrets, heraldBenchConfig } from './lib.ts';
import { SOURCE_NODE_ARGS } from '../packages/server/test/helpers/source.ts';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * - `herald`: `herald serve` from the TypeScript sources (type stripping, as `npm start`);
 * - `herald-js`: `herald serve` from the built JavaScript (packages/server/bin/herald.js → dist, as installed);
 * - `raw-ws`, `raw-sse`, `raw-long-poll`, `raw-net-long-poll` (with `args`, e.g. `--parser=hand`): the raw Node baselines, run as JavaScript (compiled
 *   by esbuild into node_modules/.cache/herald-bench), so that the
 *   baseline does not carry the TypeScript stripper in its memory.
 */
export type ServerKind = 'herald' | 'herald-js' | 'raw-ws' | 'raw-sse' | 'raw-long-poll' | 'raw-net-long-poll';

export interface ServerProcessOptions {
  readonly kind: ServerKind;
  /** CPU list for `taskset -c` (e.g. "0"); unset: not pinned. */
  readonly cpus?: string | undefined;
  /** Herald's config (default: heraldBenchConfig()). */
  readonly config?: Record<string, unknown>;
  /** Extra Node flags (e.g. `--heapsnapshot-signal=SIGUSR2`, `--cpu-prof`). */
  readonly nodeArgs?: readonly string[];
  /** Arguments of a raw baseline's script (after its file name). */
  readonly args?: readonly string[];
  /** Working directory (heap snapshots and CPU profiles land there); default a temporary directory removed by stop(). */
  readonly cwd?: string;
  /** Every line the server prints on stdout (Herald's JSON log lines), as they come. */
  readonly onLine?: (line: string) => void;
  /** `herald`: the checkout whose sources run (default: this one), e.g. a worktree of the code before a change, with its own `npm ci`. */
  readonly root?: string;
}

export interface ServerProcess {
  readonly kind: ServerKind;
  readonly pid: number;
  readonly port: number;
  /** Herald's admin API key (Bearer) for /api/*. */
  readonly apiKey: string;
  readonly child: ChildProcess;
  readonly cwd: string;
  /** Resident set size now, in bytes. */
  rss(): number;
  /** utime + stime so far, in seconds. */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

const started = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of started) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => process.exit(130));
}

/** utime + stime of a process in seconds (/proc/<pid>/stat, CLK_TCK 100). */
export function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The kernel's share of `cpuSecondsOf`: stime alone (system calls, and on loopback the peer's TCP receive work done in the sender's call). */
export function systemCpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[12]) / 100;
}

/** VmRSS of a process in bytes (/proc/<pid>/status). */
export function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return match === null ? 0 : Number(match[1]) * 1024;
}

/** Pins this process (all its threads) to `cpus` with `taskset`; a no-op when taskset is missing. */
export function pinSelf(cpus: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
  } catch {
    process.stderr.write(`taskset unavailable: the load generator is not pinned\n`);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Median of a few RSS samples taken `gapMs` apart. */
export async function medianRss(pid: number, samples = 3, gapMs = 300): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(gapMs);
    values.push(rssOf(pid));
  }
  values.sort((a, b) => a - b);
  return values[Math.floor(values.length / 2)]!;
}

/** bench/<name>.ts compiled by esbuild, as an .mjs file where its imports resolve (node_modules/.cache). */
function asJavaScript(name: string): string {
  const dir = join(ROOT, 'node_modules/.cache/herald-bench');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.mjs`);
  writeFileSync(file, transformSync(readFileSync(join(ROOT, `bench/${name}.ts`), 'utf8'), { loader: 'ts', format: 'esm' }).code);
  return file;
}

/** Starts a server; resolves once it printed its `listening` line (30 s at most). */
export async function startServerProcess(options: ServerProcessOptions): Promise<ServerProcess> {
  const ownDir = options.cwd === undefined;
  const cwd = options.cwd ?? mkdtempSync(join(tmpdir(), 'herald-bench-server-'));
  const nodeArgs = options.nodeArgs ?? [];
  const apiKey = randomBytes(24).toString('base64url');
  let args: string[];
  let env: NodeJS.ProcessEnv = process.env;
  switch (options.kind) {
    case 'raw-ws':
      args = [...nodeArgs, asJavaScript('raw-ws-server')];
      break;
    case 'raw-sse':
      args = [...nodeArgs, asJavaScript('raw-sse-server')];
      break;
    case 'raw-long-poll':
      args = [...nodeArgs, asJavaScript('raw-long-poll-server')];
      break;
    case 'raw-net-long-poll':
      args = [...nodeArgs, asJavaScript('raw-net-long-poll-server'), ...(options.args ?? [])];
      break;
    case 'herald':
    case 'herald-js': {
      const configFile = join(cwd, 'herald.json');
      writeFileSync(configFile, JSON.stringify(options.config ?? heraldBenchConfig()), { mode: 0o600 });
      const entry =
        options.kind === 'herald'
          ? [...SOURCE_NODE_ARGS, ...nodeArgs, join(options.root ?? ROOT, 'packages/server/src/cli/main.ts')]
          : [...nodeArgs, join(ROOT, 'packages/server/bin/herald.js')];
      args = [...entry, 'serve', '--config', configFile];
      // npm sets NODE_OPTIONS=--conditions=herald-source; the built JS runs without it, as installed.
      env = { ...process.env, ...benchSecrets(apiKey) };
      if (options.kind === 'herald-js') delete env.NODE_OPTIONS;
      break;
    }
  }
  const command = options.cpus === undefined ? process.execPath : 'taskset';
  const argv = options.cpus === undefined ? args : ['-c', options.cpus, process.execPath, ...args];
  const child = spawn(command, argv, { cwd, env, stdio: ['pipe', 'pipe', 'inherit'] });
  started.add(child);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${options.kind}: did not start`);
  const stdout = child.stdout;
  if (stdout === null) throw new Error('no stdout pipe');
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${options.kind}: no "listening" line within 30 s`)), 30000);
    child.once('exit', (code, signal) => reject(new Error(`${options.kind}: exited (${code ?? signal}) before listening`)));
    const lines = createInterface({ input: stdout });
    lines.on('line', (line) => {
      options.onLine?.(line);
      try {
        const entry = JSON.parse(line) as { msg?: unknown; port?: unknown };
        if (entry.msg === 'listening' && typeof entry.port === 'number') {
          clearTimeout(timer);
          resolve(entry.port);
        }
      } catch {
        // not JSON
      }
    });
  });
  // Keep reading stdout (the server logs there) so that it never blocks on a full pipe.
  stdout.resume();
  let stopped: Promise<void> | undefined;
  return {
    kind: options.kind,
    pid,
    port,
    apiKey,
    child,
    cwd,
    rss: () => rssOf(pid),
    cpuSeconds: () => cpuSecondsOf(pid),
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
          await exited;
          clearTimeout(timer);
        }
        started.delete(child);
        if (ownDir) rmSync(cwd, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}
