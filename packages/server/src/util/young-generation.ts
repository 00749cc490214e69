/**
 * V8's young generation does not grow during a connect storm (thousands of
 * clients opening at once: the reconnect after a deploy or a network
 * blip). V8 doubles the young generation, up to 64 MiB on a 64-bit machine
 * with a large heap, each time the bytes surviving its collections since
 * the last doubling pass its size; in a storm what survives is the new
 * connections' own state, which lives as long as the connections and is
 * promoted to the old generation whatever the young generation's size, so
 * the doublings buy nothing, and an idle server then keeps the grown young
 * generation resident (V8 shrinks it only at a full GC, and its memory
 * reducer goes on judging the storm's allocation rate high while the
 * server is idle). Measured: 10 000 idle WebSockets 8.3 KiB of RSS each on
 * V8's default, 4.1 KiB with the young generation held small
 * (docs/performance.md, idle memory per connection, fifth pass).
 *
 * V8 reads its growth factor (`--semi-space-growth-factor`) each time it
 * grows the young generation: while a storm lasts (`STORM_OPENS`
 * connections opened within a second, and the second after the last such
 * second) the factor is 1, else V8's default, so a server under steady
 * load (publishes, polls, a churn of connections below the storm's rate)
 * grows the young generation as before. A cap at all times was tried and
 * not kept: it cost long polling 15 to 20% more CPU per delivery. Set
 * through `v8.setFlagsFromString`, as the start-up hold does
 * (cli/startup-heap.ts, which restores V8's default before this starts);
 * were a later V8 to ignore it, the young generation would grow as V8
 * decides. An operator's own `--semi-space-growth-factor`,
 * `--max-semi-space-size`, `--min-semi-space-size` or
 * `--max-young-generation-size` (flag or NODE_OPTIONS) turns it off.
 */
import { setFlagsFromString } from 'node:v8';

/** Connections opened within one second that make a storm. */
export const STORM_OPENS = 1000;

const GROWTH_FLAG = '--semi-space-growth-factor';
/** V8's default (node --v8-options). */
const DEFAULT_GROWTH_FACTOR = 2;
const OPERATOR_FLAG = /--(semi-space-growth-factor|max-semi-space-size|min-semi-space-size|max-young-generation-size)\b/;

/**
 * Counts connections opening and holds V8's young generation at its size
 * while they come in a storm (see above). One per process
 * (`youngGenerationHold`); `now` is for tests.
 */
export class YoungGenerationHold {
  readonly #now: () => number;
  readonly #setGrowthFactor: (factor: number) => void;
  #enabled = false;
  /** The second (`now` / 1000, floored) being counted, and the connections opened in it. */
  #second = 0;
  #opened = 0;
  /** Until when (ms) the storm holds the young generation; 0: not holding. */
  #holdUntil = 0;

  constructor(setGrowthFactor: (factor: number) => void, now: () => number = Date.now) {
    this.#setGrowthFactor = setGrowthFactor;
    this.#now = now;
  }

  /** Whether the young generation is held now. */
  get holding(): boolean {
    return this.#holdUntil !== 0;
  }

  /** From now on storms hold the young generation (called once start-up is over: cli/main.ts, cluster/worker-main.ts). */
  enable(): void {
    this.#enabled = true;
  }

  /** A connection opened (Node.createClient; the Pusher endpoint's upgrade): a storm starts at the `STORM_OPENS`th of a second; a storm already on ends a second after its last such second. */
  opened(): void {
    if (!this.#enabled) return;
    const now = this.#now();
    const second = Math.floor(now / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#opened = 0;
    }
    if (++this.#opened < STORM_OPENS) {
      if (this.#holdUntil !== 0 && now >= this.#holdUntil) this.#release();
      return;
    }
    const starts = this.#holdUntil === 0;
    this.#holdUntil = (second + 2) * 1000;
    if (!starts) return;
    this.#setGrowthFactor(1);
    this.#watch();
  }

  /** Ends a storm that is over: at every `opened`, and on a timer while holding (an idle server opens nothing). */
  check(): void {
    if (this.#holdUntil !== 0 && this.#now() >= this.#holdUntil) this.#release();
  }

  #watch(): void {
    setTimeout(() => {
      this.check();
      if (this.#holdUntil !== 0) this.#watch();
    }, 1000).unref();
  }

  #release(): void {
    this.#holdUntil = 0;
    this.#setGrowthFactor(DEFAULT_GROWTH_FACTOR);
  }
}

const operatorChose = [...process.execArgv, process.env['NODE_OPTIONS'] ?? ''].some((arg) => OPERATOR_FLAG.test(arg));

/** This process's hold: inert until `enable()`, and for good when the operator sized the young generation. */
export const youngGenerationHold = new YoungGenerationHold((factor) => {
  if (!operatorChose) setFlagsFromString(`${GROWTH_FLAG}=${factor}`);
});
