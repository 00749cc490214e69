/**
 * One sandbox process of the JavaScript hooks (docs/hooks.md, docs/security.md).
 * Started by sandbox-pool.ts with Node's permission model (`--permission`,
 * file reads only of this file and the QuickJS packages, nothing else: no
 * writes, no child processes, no worker threads, no addons) and an empty
 * environment; it talks to the server over the IPC channel only.
 *
 * The operator's code runs in QuickJS compiled to WebAssembly: its own heap
 * in the WASM memory, no `process`, no `require`, no module loader (so no
 * `import`), no `WebAssembly`, no timers. One call at a time: the event's
 * JSON text goes in as a string and is parsed inside the sandbox; the answer
 * leaves as the sandbox's own `JSON.stringify` text, which the server checks
 * (size, depth, schema). Calls come in batches (sandbox-pool.ts) and run in
 * their order; the results go back in one message. Budgets per call: the
 * deadline (interrupt handler), the runtime's memory limit and stack limit.
 * A call that breaks one gets its runtime rebuilt from the source before the
 * next call.
 */
import { getQuickJS, type QuickJSContext, type QuickJSHandle, type QuickJSRuntime, type QuickJSWASMModule } from 'quickjs-emscripten';
import type { SandboxCall, SandboxLimits, SandboxReply, SandboxRequest, SandboxResult } from './sandbox-messages.ts';

const FUNCTIONS = ['onConnect', 'onSubscribe', 'onPublish', 'onRpc'] as const;
/** Longest log line kept (characters); the rest is cut. */
const MAX_LOG_CHARS = 1024;

/** Set up before the operator's code: `log` over a host function that is then removed from the global object; no FinalizationRegistry (its callbacks would run in a later call). */
const PRELUDE = `(() => {
  delete globalThis.FinalizationRegistry;
  const host = globalThis.__heraldLog;
  delete globalThis.__heraldLog;
  const stringify = JSON.stringify;
  const text = (value) => { if (typeof value === 'string') return value; try { const s = stringify(value); return s === undefined ? String(value) : s; } catch { return '[unserializable]'; } };
  Object.defineProperty(globalThis, 'log', { value: function log(...values) { host(values.map(text).join(' ').slice(0, ${MAX_LOG_CHARS})); }, enumerable: false });
})();`;

/** Calls a hook with parsed input; stringifies what it returns (a number is the length of an answer that is too long). */
const INVOKE = `(() => {
  const parse = JSON.parse, stringify = JSON.stringify;
  return [
    (fn, text) => fn(parse(text)),
    (value, max) => { if (value === undefined) return null; const s = stringify(value); if (typeof s !== 'string') throw new TypeError('not serializable'); return s.length > max ? s.length : s; },
  ];
})()`;

type Reason = 'timeout' | 'memory' | 'stack' | 'threw' | 'answer_not_serializable' | 'answer_too_large';

class BudgetError extends Error {
  readonly reason: Reason;
  constructor(reason: Reason, message: string) {
    super(message);
    this.reason = reason;
  }
}

const quickjs: QuickJSWASMModule = await getQuickJS();
let limits: SandboxLimits;
let source = '';
let filename = '';

interface Sandbox {
  runtime: QuickJSRuntime;
  context: QuickJSContext;
  functions: Map<string, QuickJSHandle>;
  invoke: QuickJSHandle;
  serialize: QuickJSHandle;
}
let sandbox: Sandbox | undefined;

let deadline = Infinity;
let interrupted = false;

/** Log lines allowed per second (token bucket). */
let logTokens = 0;
let logStamp = Date.now();
let logDropped = 0;

function send(reply: SandboxReply): void {
  process.send!(reply);
}

function allowLog(): boolean {
  const now = Date.now();
  logTokens = Math.min(limits.logPerSecond, logTokens + ((now - logStamp) / 1000) * limits.logPerSecond);
  logStamp = now;
  if (logTokens < 1) return false;
  logTokens--;
  return true;
}

/** The reason a QuickJS error handle stands for (interrupt, out of memory, stack overflow, or the hook's own throw). */
function classify(context: QuickJSContext, error: QuickJSHandle): BudgetError {
  let message = 'error';
  try {
    const dumped = context.dump(error) as { name?: unknown; message?: unknown } | string;
    message = typeof dumped === 'object' && dumped !== null ? `${String(dumped.name)}: ${String(dumped.message)}` : String(dumped);
  } catch {
    // An error that cannot even be read: still a throw.
  }
  error.dispose();
  if (interrupted) return new BudgetError('timeout', 'deadline');
  if (/out of memory/i.test(message)) return new BudgetError('memory', 'memory limit');
  if (/stack overflow/i.test(message)) return new BudgetError('stack', 'stack limit');
  return new BudgetError('threw', message.slice(0, 256));
}

function build(): Sandbox {
  deadline = Date.now() + limits.loadTimeoutMs;
  interrupted = false;
  const runtime = quickjs.newRuntime();
  runtime.setMemoryLimit(limits.memoryBytes);
  runtime.setMaxStackSize(limits.stackBytes);
  runtime.setInterruptHandler(() => {
    if (Date.now() > deadline) interrupted = true;
    return interrupted;
  });
  const context = runtime.newContext();
  /** Handles to free should the file not load. */
  const owned: QuickJSHandle[] = [];
  try {
    const logFn = context.newFunction('__heraldLog', (textHandle) => {
      if (context.typeof(textHandle) !== 'string') return;
      if (!allowLog()) {
        logDropped++;
        return;
      }
      send({ type: 'log', text: context.getString(textHandle).slice(0, MAX_LOG_CHARS), dropped: logDropped });
      logDropped = 0;
    });
    context.setProp(context.global, '__heraldLog', logFn);
    logFn.dispose();
    context.unwrapResult(context.evalCode(PRELUDE, 'prelude.js', { type: 'global' })).dispose();
    const pair = context.unwrapResult(context.evalCode(INVOKE, 'invoke.js', { type: 'global' }));
    const invoke = context.getProp(pair, 0);
    const serialize = context.getProp(pair, 1);
    pair.dispose();
    owned.push(invoke, serialize);
    const evaluated = context.evalCode(source, filename, { type: 'module' });
    if (evaluated.error) throw classify(context, evaluated.error);
    let exports = evaluated.value;
    // A module with top-level await evaluates to a promise of its exports.
    const state = context.getPromiseState(exports);
    if (state.type !== 'fulfilled' || !state.notAPromise) {
      if (state.type === 'fulfilled') state.value.dispose();
      runtime.executePendingJobs();
      const settled = context.getPromiseState(exports);
      exports.dispose();
      if (settled.type === 'pending') throw new BudgetError('timeout', 'the module never finished loading');
      if (settled.type === 'rejected') throw classify(context, settled.error);
      exports = settled.value;
    }
    const functions = new Map<string, QuickJSHandle>();
    for (const name of FUNCTIONS) {
      const fn = context.getProp(exports, name);
      if (context.typeof(fn) === 'function') functions.set(name, fn);
      else fn.dispose();
    }
    exports.dispose();
    deadline = Infinity;
    return { runtime, context, functions, invoke, serialize };
  } catch (error) {
    for (const handle of owned) handle.dispose();
    try {
      context.dispose();
      runtime.dispose();
    } catch {
      // QuickJS may still hold objects of a half-loaded module; this process's next build starts a new runtime.
    }
    throw error;
  }
}

function dispose(s: Sandbox): void {
  try {
    for (const fn of s.functions.values()) fn.dispose();
    s.invoke.dispose();
    s.serialize.dispose();
    s.context.dispose();
    s.runtime.dispose();
  } catch {
    // A runtime broken by a budget may not free cleanly; the next one is new either way.
  }
}

/** Runs one call to its end: the answer's JSON text (null for undefined), or a BudgetError. */
function call(s: Sandbox, name: string, input: string, maxAnswerChars: number): string | null {
  const { context, runtime } = s;
  const fn = s.functions.get(name);
  if (fn === undefined) throw new BudgetError('threw', `${name} is not exported`);
  const text = context.newString(input);
  const called = context.callFunction(s.invoke, context.undefined, fn, text);
  text.dispose();
  if (called.error) throw classify(context, called.error);
  let value = called.value;
  const state = context.getPromiseState(value);
  if (state.type === 'fulfilled' && state.notAPromise !== true) {
    value.dispose();
    value = state.value;
  } else if (state.type !== 'fulfilled') {
    // Only the sandbox's own jobs can settle it: run them (under the deadline); still pending then is a promise that never settles.
    const jobs = runtime.executePendingJobs();
    if (jobs.error) {
      value.dispose();
      throw classify(context, jobs.error);
    }
    const settled = context.getPromiseState(value);
    value.dispose();
    if (interrupted) throw new BudgetError('timeout', 'deadline');
    if (settled.type === 'pending') throw new BudgetError('timeout', 'the promise never settles');
    if (settled.type === 'rejected') throw classify(context, settled.error);
    value = settled.value;
  }
  const max = context.newNumber(maxAnswerChars);
  const serialized = context.callFunction(s.serialize, context.undefined, value, max);
  value.dispose();
  max.dispose();
  if (serialized.error) {
    const error = classify(context, serialized.error);
    throw error.reason === 'threw' ? new BudgetError('answer_not_serializable', error.message) : error;
  }
  const kind = context.typeof(serialized.value);
  const answer = kind === 'string' ? context.getString(serialized.value) : kind === 'number' ? new BudgetError('answer_too_large', 'answer too large') : null;
  serialized.value.dispose();
  if (answer instanceof BudgetError) throw answer;
  return answer;
}

function handle(request: SandboxRequest): void {
  if (request.type === 'init') {
    limits = request.limits;
    source = request.source;
    filename = request.filename;
    logTokens = limits.logPerSecond;
    try {
      sandbox = build();
      send({ type: 'ready', functions: [...sandbox.functions.keys()] });
    } catch (error) {
      send({ type: 'failed', message: error instanceof BudgetError ? `${error.reason}: ${error.message}` : String(error) });
    }
    return;
  }
  send({ type: 'done', id: request.id, results: request.calls.map(run) });
}

/** One call to its end, under its own deadline. */
function run(request: SandboxCall): SandboxResult {
  try {
    sandbox ??= build();
    deadline = Date.now() + request.timeoutMs;
    interrupted = false;
    return { answer: call(sandbox, request.fn, request.input, request.maxAnswerChars) };
  } catch (error) {
    const reason: Reason = error instanceof BudgetError ? error.reason : 'threw';
    // A broken budget may leave the runtime half-way through anything: the next call gets a new one.
    if (reason === 'timeout' || reason === 'memory' || reason === 'stack' || !(error instanceof BudgetError)) {
      if (sandbox !== undefined) dispose(sandbox);
      sandbox = undefined;
      try {
        sandbox = build();
      } catch {
        // Built again at the next call.
      }
    }
    return { failed: reason, message: error instanceof Error ? error.message : String(error) };
  } finally {
    deadline = Infinity;
  }
}

process.on('message', (message) => handle(message as SandboxRequest));
process.on('disconnect', () => process.exit(0));
send({ type: 'started' });
