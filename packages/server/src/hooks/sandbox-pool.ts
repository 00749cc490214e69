/**
 * The pool of sandbox processes that run the JavaScript hooks
 * (sandbox-process.ts; docs/security.md says why processes and not worker
 * threads or `node:vm`).
 *
 * Guarantees:
 * - `run` resolves exactly once and never rejects: the answer's JSON text,
 *   or why the call failed (`queue_full`, `queue_timeout`, `timeout`,
 *   `memory`, `stack`, `threw`, `answer_not_serializable`,
 *   `answer_too_large`, `worker_exit`, `closed`).
 * - Each process runs one call at a time; calls wait in one FIFO queue of at
 *   most `maxQueue` calls; one more fails at once (`queue_full`), and a call
 *   that waited longer than `maxQueueWaitMs` fails when its turn comes. A
 *   process that becomes free takes up to MAX_BATCH waiting calls in one
 *   message and answers them in one (under load the IPC cost is shared).
 * - The process enforces the deadline itself (QuickJS interrupt handler); if
 *   it has not answered `KILL_GRACE_MS` after the deadlines of its calls it
 *   is killed. A process that dies (killed, crashed) fails the calls it held
 *   with `worker_exit` (`timeout` when it was killed for its deadline) and is
 *   replaced.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SandboxLimits, SandboxReply, SandboxRequest } from './sandbox-messages.ts';

/** How long past its deadline a process may stay silent before it is killed. */
const KILL_GRACE_MS = 2000;
/** Longest wait for a new process to load QuickJS and the hook file. */
const START_TIMEOUT_MS = 60_000;
/** Most calls handed to a process in one message when calls are waiting. */
const MAX_BATCH = 16;

/** `message`: what the sandbox said of a failure (the hook's own error message, for the log). */
export type SandboxOutcome = { readonly answer: string | null } | { readonly failed: string; readonly message?: string };

export interface SandboxPoolOptions {
  readonly source: string;
  /** The hook file's name (stack traces inside the sandbox). */
  readonly filename: string;
  readonly limits: SandboxLimits;
  readonly size: number;
  readonly maxQueue: number;
  readonly maxQueueWaitMs: number;
  readonly onLog: (text: string, dropped: number) => void;
  /** A process died and is being replaced (its exit code or signal). */
  readonly onExit: (why: string) => void;
}

interface Job {
  readonly fn: string;
  readonly input: string;
  readonly timeoutMs: number;
  readonly maxAnswerChars: number;
  readonly queuedAt: number;
  readonly resolve: (outcome: SandboxOutcome) => void;
}

interface Slot {
  child: ChildProcess;
  ready: boolean;
  /** The calls handed to this process, in its order; empty when it is idle. */
  jobs: Job[];
  /** Id of the batch in flight. */
  batchId: number;
  timer: NodeJS.Timeout | undefined;
  killedForDeadline: boolean;
}

/** The directory of an installed package, from a file inside it. */
function packageRoot(file: string, name: string): string {
  const marker = `${sep}node_modules${sep}${name.split('/').join(sep)}${sep}`;
  const at = file.lastIndexOf(marker);
  if (at < 0) throw new Error(`sandbox: cannot locate the package ${name} (${file})`);
  return file.slice(0, at + marker.length - 1);
}

/** The packages a sandbox process loads: quickjs-emscripten imports its four WASM builds (the release-sync one is used). */
const QUICKJS_PACKAGES = [
  'quickjs-emscripten-core',
  '@jitl/quickjs-ffi-types',
  '@jitl/quickjs-wasmfile-release-sync',
  '@jitl/quickjs-wasmfile-release-asyncify',
  '@jitl/quickjs-wasmfile-debug-sync',
  '@jitl/quickjs-wasmfile-debug-asyncify',
];

/** What a sandbox process may read: its own script, its package.json, and the QuickJS packages (code and WASM modules). */
function readablePaths(script: string): string[] {
  const main = createRequire(import.meta.url).resolve('quickjs-emscripten');
  const fromMain = createRequire(main);
  const roots = [packageRoot(main, 'quickjs-emscripten'), ...QUICKJS_PACKAGES.map((name) => packageRoot(fromMain.resolve(name), name))];
  return [script, fileURLToPath(new URL('../../package.json', import.meta.url)), ...roots];
}

export class SandboxPool {
  /** The hook functions the file exports. */
  readonly functions: ReadonlySet<string>;
  readonly #options: SandboxPoolOptions;
  readonly #script: string;
  readonly #execArgv: string[];
  readonly #slots: Slot[] = [];
  readonly #queue: Job[] = [];
  #nextId = 1;
  #closed = false;

  private constructor(options: SandboxPoolOptions, script: string, functions: ReadonlySet<string>) {
    this.#options = options;
    this.#script = script;
    this.#execArgv = ['--permission', ...readablePaths(script).map((path) => `--allow-fs-read=${path}`)];
    this.functions = functions;
  }

  /** Starts `size` processes, each with the hook file loaded; rejects with the reason when the file does not load. */
  static async start(options: SandboxPoolOptions): Promise<SandboxPool> {
    const here = fileURLToPath(import.meta.url);
    const script = `${dirname(here)}${sep}sandbox-process${here.slice(here.lastIndexOf('.'))}`;
    const pool = new SandboxPool(options, script, new Set());
    const started = await Promise.allSettled(Array.from({ length: options.size }, () => pool.#spawn()));
    const failure = started.find((s) => s.status === 'rejected');
    if (failure !== undefined) {
      await pool.close();
      throw failure.reason;
    }
    const functions = (started[0] as PromiseFulfilledResult<readonly string[]>).value;
    return Object.assign(pool, { functions: new Set(functions) });
  }

  /** Runs `fn` with the event's JSON text; see the guarantees above. */
  run(fn: string, input: string, timeoutMs: number, maxAnswerChars: number): Promise<SandboxOutcome> {
    if (this.#closed) return Promise.resolve({ failed: 'closed' });
    return new Promise((resolve) => {
      const job: Job = { fn, input, timeoutMs, maxAnswerChars, queuedAt: performance.now(), resolve };
      const idle = this.#slots.find((slot) => slot.ready && slot.jobs.length === 0);
      if (idle !== undefined) this.#dispatch(idle, [job]);
      else if (this.#queue.length >= this.#options.maxQueue) resolve({ failed: 'queue_full' });
      else this.#queue.push(job);
    });
  }

  /** Calls waiting for a process. */
  get queued(): number {
    return this.#queue.length;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const job of this.#queue.splice(0)) job.resolve({ failed: 'closed' });
    await Promise.all(
      this.#slots.map(
        (slot) =>
          new Promise<void>((resolve) => {
            this.#finish(slot, undefined, { failed: 'closed' });
            if (slot.child.exitCode !== null || slot.child.signalCode !== null) return resolve();
            slot.child.once('exit', () => resolve());
            slot.child.kill('SIGKILL');
          }),
      ),
    );
  }

  #dispatch(slot: Slot, jobs: Job[]): void {
    slot.jobs = jobs;
    slot.batchId = this.#nextId++;
    slot.timer = setTimeout(
      () => {
        slot.killedForDeadline = true;
        slot.child.kill('SIGKILL');
      },
      jobs.reduce((sum, job) => sum + job.timeoutMs, 0) + KILL_GRACE_MS,
    );
    const request: SandboxRequest = {
      type: 'calls',
      id: slot.batchId,
      calls: jobs.map((job) => ({ fn: job.fn, input: job.input, timeoutMs: job.timeoutMs, maxAnswerChars: job.maxAnswerChars })),
    };
    slot.child.send(request);
  }

  /** Resolves the process's calls (one outcome each, or `all` for every one) and marks it idle. */
  #finish(slot: Slot, outcomes: readonly SandboxOutcome[] | undefined, all?: SandboxOutcome): void {
    const jobs = slot.jobs;
    if (slot.timer !== undefined) clearTimeout(slot.timer);
    slot.timer = undefined;
    slot.jobs = [];
    jobs.forEach((job, i) => job.resolve(outcomes?.[i] ?? all ?? { failed: 'worker_exit' }));
  }

  /** Gives an idle process the next queued calls: up to MAX_BATCH in one message when calls are waiting (IPC paid once). */
  #pump(slot: Slot): void {
    if (!slot.ready || slot.jobs.length > 0) return;
    const jobs: Job[] = [];
    const now = performance.now();
    while (jobs.length < MAX_BATCH && this.#queue.length > 0) {
      const job = this.#queue.shift()!;
      if (now - job.queuedAt > this.#options.maxQueueWaitMs) job.resolve({ failed: 'queue_timeout' });
      else jobs.push(job);
    }
    if (jobs.length > 0) this.#dispatch(slot, jobs);
  }

  /** One process: resolves with the functions the file exports once it is ready; rejects when it cannot load the file. */
  #spawn(existing?: Slot): Promise<readonly string[]> {
    const child = fork(this.#script, [], {
      execArgv: this.#execArgv,
      env: {},
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
    });
    const slot: Slot = existing ?? { child, ready: false, jobs: [], batchId: 0, timer: undefined, killedForDeadline: false };
    Object.assign(slot, { child, ready: false, killedForDeadline: false });
    if (existing === undefined) this.#slots.push(slot);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-8192);
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error('the sandbox process did not start in time'));
      }, START_TIMEOUT_MS);
      child.on('message', (message: SandboxReply) => {
        switch (message.type) {
          case 'started': {
            const init: SandboxRequest = { type: 'init', source: this.#options.source, filename: this.#options.filename, limits: this.#options.limits };
            child.send(init);
            break;
          }
          case 'ready':
            clearTimeout(timer);
            slot.ready = true;
            resolve(message.functions);
            this.#pump(slot);
            break;
          case 'failed':
            clearTimeout(timer);
            reject(new Error(message.message));
            child.kill('SIGKILL');
            break;
          case 'log':
            this.#options.onLog(message.text, message.dropped);
            break;
          case 'done':
            if (message.id !== slot.batchId || slot.jobs.length === 0) break;
            this.#finish(slot, message.results);
            this.#pump(slot);
            break;
        }
      });
      child.on('error', () => undefined);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the sandbox process exited (${signal ?? code})${stderr === '' ? '' : `: ${stderr.trim().split("\n").slice(0, 12).join(" | ")}`}`));
        slot.ready = false;
        this.#finish(slot, undefined, { failed: slot.killedForDeadline ? 'timeout' : 'worker_exit' });
        if (this.#closed || this.#slots.indexOf(slot) < 0) return;
        this.#options.onExit(slot.killedForDeadline ? 'killed after its deadline' : String(signal ?? code));
        // A replacement loads the same file, which loaded before; should it fail, the next exit tries again.
        setTimeout(() => {
          if (!this.#closed) this.#spawn(slot).catch(() => undefined);
        }, 100);
      });
    });
  }
}
