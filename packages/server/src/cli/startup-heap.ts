/**
 * V8 while Herald starts. `holdYoungGeneration` (called by
 * packages/server/bin/herald.js before it loads the server, and when this
 * module is evaluated, first among main's imports) holds two things until
 * `startupDone` (the server listens, or the command is not `serve`):
 *
 * - The young generation keeps its initial size. Loading and running
 *   Herald's modules allocates megabytes that all survive, and V8 doubles
 *   the young generation after each such scavenge, to 16 MiB, which an
 *   idle server then keeps for good: V8's memory reducer judges the
 *   allocation rate it sampled at start-up high and does not shrink it.
 * - The optimizing compilers (Maglev and Turbofan) wait. Loading some 700
 *   modules makes Node's module loader hot (path normalisation, URL
 *   parsing), and compiling it touches the compilers' machine code in the
 *   node binary: about 6 MiB of its pages, resident from then on, for code
 *   that never runs again once the server listens. Until then functions run
 *   in the interpreter and Sparkplug; afterwards hot functions are
 *   optimized as before (the compilers' pages come back with the first
 *   one, under load).
 *
 * Both are restored to V8's defaults by `startupDone`, so a server under
 * load behaves as before. An operator's own `--semi-space-growth-factor`,
 * or any flag of the compilers (`--maglev`, `--turbofan`, `--opt`,
 * `--jitless`... as a flag or in NODE_OPTIONS) is left alone. See
 * docs/performance.md, footprint.
 */
import { setFlagsFromString } from 'node:v8';

const GROWTH_FLAG = '--semi-space-growth-factor';
/** V8's default (node --v8-options). */
const DEFAULT_GROWTH_FACTOR = 2;
const COMPILER_FLAG = /--(no-)?(maglev|turbofan|opt|jitless|max-opt)\b/;

const operatorArgs = [...process.execArgv, process.env['NODE_OPTIONS'] ?? ''];
const growthChosen = operatorArgs.some((arg) => arg.includes(GROWTH_FLAG));
const compilersChosen = operatorArgs.some((arg) => COMPILER_FLAG.test(arg));
let held = false;

/** Start-up begins: the young generation keeps its size and the optimizing compilers wait until `startupDone`. */
export function holdYoungGeneration(): void {
  if (held) return;
  held = true;
  if (!growthChosen) setFlagsFromString(`${GROWTH_FLAG}=1`);
  if (!compilersChosen) {
    setFlagsFromString('--no-maglev');
    setFlagsFromString('--no-turbofan');
  }
}

/** Start-up is over (the server listens, or the command is not `serve`): V8's defaults again. */
export function startupDone(): void {
  if (!held) return;
  held = false;
  if (!growthChosen) setFlagsFromString(`${GROWTH_FLAG}=${DEFAULT_GROWTH_FACTOR}`);
  if (!compilersChosen) {
    setFlagsFromString('--maglev');
    setFlagsFromString('--turbofan');
  }
}

holdYoungGeneration();
