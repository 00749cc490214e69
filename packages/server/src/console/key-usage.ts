/**
 * When each API key was last used, for the console's key list.
 *
 * Cheap by design: a request writes nothing but one map entry in memory
 * (ApiKeyVerifier remembers the last use per key name). Once per
 * `intervalMs` (a minute by default) every node sends the keys used since
 * its last report, one `key_usage` control command for all of them, to
 * every node (over the cluster IPC and Redis like revocations); each node
 * keeps the latest use per key.
 *
 * Precision: this node's uses are exact; other workers' and nodes' are at
 * most `intervalMs` late. With a store (key-usage-store.ts: the sqlite
 * state file, Redis) each process also writes its own uses there with the
 * same report (one write per minute per process, whatever the traffic), and
 * reads every stored use at start: the last uses survive restarts, up to
 * `intervalMs` of them lost with a process that is killed.
 */
import type { ApiKeyVerifier } from '../auth/api-keys.ts';
import type { Node } from '../core/node.ts';
import type { KeyUsageStore } from './key-usage-store.ts';

export const KEY_USAGE_INTERVAL_MS = 60_000;

/** Most keys one report names (a key store holds at most 10000). */
const MAX_REPORTED = 10_000;

export class KeyUsage {
  readonly #node: Node;
  readonly #verifier: ApiKeyVerifier;
  readonly #last = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;
  readonly #store: KeyUsageStore | undefined;
  readonly #onError: (error: unknown) => void;
  /** The stored uses, read once at start. */
  readonly loaded: Promise<void>;

  constructor(node: Node, verifier: ApiKeyVerifier, options: { intervalMs?: number; store?: KeyUsageStore | undefined; onError?: (error: unknown) => void } = {}) {
    this.#node = node;
    this.#verifier = verifier;
    this.#store = options.store;
    this.#onError = options.onError ?? (() => {});
    const intervalMs = options.intervalMs ?? KEY_USAGE_INTERVAL_MS;
    this.loaded =
      this.#store === undefined
        ? Promise.resolve()
        : this.#store.load().then(
            (stored) => {
              for (const [name, at] of stored) this.#merge(name, at);
            },
            (error: unknown) => this.#onError(error),
          );
    node.onControl((command) => {
      if (command.kind !== 'key_usage' || !Array.isArray(command.uses)) return;
      for (const use of command.uses.slice(0, MAX_REPORTED)) {
        const [name, at] = use;
        if (typeof name === 'string' && typeof at === 'number') this.#merge(name, at);
      }
    });
    this.#timer = setInterval(() => void this.report(), intervalMs);
    this.#timer.unref();
  }

  #merge(name: string, at: number): void {
    const known = this.#last.get(name);
    if (known === undefined || known < at) this.#last.set(name, at);
  }

  /** Sends the uses since the last report to every node (this one included). */
  async report(): Promise<void> {
    const uses = [...this.#verifier.takeUses()].slice(0, MAX_REPORTED);
    if (uses.length === 0) return;
    // This node knows them at once, whatever the control bus does.
    for (const [name, at] of uses) this.#merge(name, at);
    await Promise.all([
      this.#node.publishControl({ kind: 'key_usage', uses }).catch(() => undefined),
      this.#store?.save(uses).catch((error: unknown) => this.#onError(error)),
    ]);
  }

  /** The last use of a key known here (epoch ms), or undefined. */
  lastUsed(name: string): number | undefined {
    const pending = this.#verifier.pendingUse(name);
    const known = this.#last.get(name);
    if (pending === undefined) return known;
    return known === undefined ? pending : Math.max(known, pending);
  }

  /** Stops the timer; the uses not reported yet are saved (shutdown). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    const uses = [...this.#verifier.takeUses()].slice(0, MAX_REPORTED);
    if (uses.length > 0) await this.#store?.save(uses).catch((error: unknown) => this.#onError(error));
    this.#store?.close();
  }
}
