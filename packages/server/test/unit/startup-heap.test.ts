/**
 * What `herald serve` holds while it starts (cli/startup-heap.ts): the
 * optimizing compilers wait until `startupDone`, then a hot function is
 * optimized as before; a compiler flag of the operator's is left alone.
 * V8's optimization status is read with `%GetOptimizationStatus` in a
 * child process run with `--allow-natives-syntax`.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const module = fileURLToPath(new URL('../../src/cli/startup-heap.ts', import.meta.url));

/** V8's OptimizationStatus bit for "has optimized code" (src/runtime/runtime.h: kOptimized). */
const OPTIMIZED = 1 << 4;

// A function made hot while start-up holds the compilers, asked to optimize before and after startupDone.
const script = `
const { startupDone } = await import(${JSON.stringify(module)});
function hot(a) { return a * 2 + 1; }
const tryOptimize = () => { %PrepareFunctionForOptimization(hot); hot(1); %OptimizeFunctionOnNextCall(hot); hot(2); return %GetOptimizationStatus(hot); };
for (let i = 0; i < 100000; i++) hot(i);
const held = tryOptimize();
startupDone();
process.stdout.write(JSON.stringify({ held, done: tryOptimize() }));
`;

function statuses(extraFlags: readonly string[]): { held: number; done: number } {
  const env = { ...process.env };
  delete env['NODE_OPTIONS'];
  const output = execFileSync(process.execPath, ['--allow-natives-syntax', ...extraFlags, '--input-type=module', '-e', script], { env, encoding: 'utf8' });
  return JSON.parse(output) as { held: number; done: number };
}

it('holds the optimizing compilers until startupDone, then optimizes a function made hot meanwhile', () => {
  const { held, done } = statuses([]);
  assert.equal(held & OPTIMIZED, 0, `optimized while held (status ${held.toString(2)})`);
  assert.notEqual(done & OPTIMIZED, 0, `not optimized after startupDone (status ${done.toString(2)})`);
});

it("leaves the compilers alone when the operator passes a flag of theirs", () => {
  const { held } = statuses(['--turbofan']);
  assert.notEqual(held & OPTIMIZED, 0, `held despite --turbofan (status ${held.toString(2)})`);
});
