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
 * most `intervalMs` late. Kept in memory: a key used before every node
 * restarted shows as not used until it is used again.
 */
import type { ApiKeyVerifier } from '../auth/api-keys.ts';
import type { Node } from '../core/node.ts';

export const KEY_USAGE_INTERVAL_MS = 60_000;

/** Most keys one report names (a key store holds at most 10000). */
const MAX_REPORTED = 10_000;

export class KeyUsage {
  readonly #node: Node;
  readonly #verifier: ApiKeyVerifier;
  readonly #last = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;

  constructor(node: Node, verifier: ApiKeyVerifier, intervalMs = KEY_USAGE_INTERVAL_MS) {
    this.#node = node;
    this.#verifier = verifier;
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
    await this.#node.publishControl({ kind: 'key_usage', uses }).catch(() => undefined);
  }

  /** The last use of a key known here (epoch ms), or undefined. */
  lastUsed(name: string): number | undefined {
    const pending = this.#verifier.pendingUse(name);
    const known = this.#last.get(name);
    if (pending === undefined) return known;
    return known === undefined ? pending : Math.max(known, pending);
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
