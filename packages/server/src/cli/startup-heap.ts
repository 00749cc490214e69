/**
 * The young generation while Herald starts. Loading and running its modules
 * allocates megabytes that all survive, and V8 doubles the young generation
 * after each such scavenge, to 16 MiB, which an idle server then keeps for
 * good: V8's memory reducer judges the allocation rate it sampled at
 * start-up high and does not shrink it. `holdYoungGeneration` (called by
 * packages/server/bin/herald.js before it loads the server, and when this
 * module is evaluated, first among main's imports) keeps the young
 * generation at its initial size; `startupDone` restores V8's growth factor
 * once the server listens, so that a server under load grows it as before.
 * An operator's own `--semi-space-growth-factor` (flag or NODE_OPTIONS) is
 * left alone. See docs/performance.md, footprint.
 */
import { setFlagsFromString } from 'node:v8';

const FLAG = '--semi-space-growth-factor';
/** V8's default (node --v8-options). */
const DEFAULT_GROWTH_FACTOR = 2;

const operatorChoice = process.execArgv.some((arg) => arg.startsWith(FLAG)) || (process.env['NODE_OPTIONS'] ?? '').includes(FLAG);

/** Start-up begins: the young generation keeps its size until `startupDone`. */
export function holdYoungGeneration(): void {
  if (!operatorChoice) setFlagsFromString(`${FLAG}=1`);
}

/** Start-up is over (the server listens, or the command is not `serve`): the young generation may grow again. */
export function startupDone(): void {
  if (!operatorChoice) setFlagsFromString(`${FLAG}=${DEFAULT_GROWTH_FACTOR}`);
}

holdYoungGeneration();
