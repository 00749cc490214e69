/**
 * The delivery probe on a Redis Cluster: one probe topic per master (a shard
 * channel whose slot that master serves), so every pub/sub connection is
 * checked, not only one. Each interval the node SPUBLISHes a counter to each
 * of its probe topics; a probe acknowledged by the master but not heard back
 * within two intervals means that connection's subscriptions are silently
 * gone: the connection starts again, resubscribes, and its channels
 * resynchronize (ShardedPubSub's `onResubscribed`). A new master (resharding)
 * gets a probe topic at the next interval; a failover moves a probe topic
 * with its slot.
 */
import type { ShardedPubSub } from './redis-sharded-pubsub.ts';

interface Probe {
  /** Next counter to send. */
  next: number;
  /** Highest counter the master acknowledged. */
  sent: number;
  /** Highest counter heard back. */
  seen: number;
  failing: boolean;
  /** Counter → when it was sent, until heard back (oldest first). */
  readonly pending: Map<number, number>;
}

/** Probes kept waiting at most per topic; older ones are forgotten (the newest still judge). */
const MAX_PENDING = 64;

export interface ShardProbeOptions {
  readonly pubsub: ShardedPubSub;
  /** Probe topic candidates (`k` = 0, 1, …); each must carry a hash tag of its own. */
  readonly topic: (k: number) => string;
  readonly publish: (topic: string, message: string) => Promise<unknown>;
  readonly onError: (error: unknown, what: string) => void;
  readonly now: () => number;
}

export class ShardProbes {
  readonly #options: ShardProbeOptions;
  readonly #probes = new Map<string, Probe>();

  constructor(options: ShardProbeOptions) {
    this.#options = options;
  }

  /** Counts a probe message (from the pub/sub listener); false when `topic` is not a probe topic. */
  onMessage(topic: string, message: string): boolean {
    const probe = this.#probes.get(topic);
    if (probe === undefined) return false;
    probe.seen = Math.max(probe.seen, Number(message));
    for (const n of probe.pending.keys()) if (n <= probe.seen) probe.pending.delete(n);
    return true;
  }

  /**
   * Why delivery is judged broken: the oldest probe not heard back on a
   * ready connection is older than `deadlineMs`; undefined otherwise.
   */
  failure(deadlineMs: number): string | undefined {
    const now = this.#options.now();
    for (const [topic, probe] of this.#probes) {
      if (!this.#options.pubsub.isReady(topic)) {
        // Probes sent while the connection was down are explained by it.
        probe.pending.clear();
        continue;
      }
      const oldest = probe.pending.values().next();
      if (oldest.done !== true && now - oldest.value >= deadlineMs) return `a probe was not delivered back within ${deadlineMs} ms (master ${this.#options.pubsub.ownerOf(topic) ?? '?'})`;
    }
    return undefined;
  }

  /** Subscribes a probe topic on every master (at start and each tick). */
  async cover(): Promise<void> {
    const { pubsub } = this.#options;
    const covered = new Set<string>();
    const waits: Promise<void>[] = [];
    for (const topic of this.#probes.keys()) {
      // A subscription that failed earlier is tried again.
      if (!pubsub.has(topic)) waits.push(pubsub.subscribe(topic));
      const owner = pubsub.ownerOf(topic);
      if (owner !== undefined) covered.add(owner);
    }
    for (const master of pubsub.masters()) {
      if (covered.has(master)) continue;
      for (let k = 0; k < 100000; k++) {
        const topic = this.#options.topic(k);
        if (this.#probes.has(topic) || pubsub.ownerOf(topic) !== master) continue;
        this.#probes.set(topic, { next: 1, sent: 0, seen: 0, failing: false, pending: new Map() });
        waits.push(pubsub.subscribe(topic));
        break;
      }
    }
    await Promise.all(waits);
  }

  /** One interval: judge each probe, then send the next. */
  tick(commandReady: boolean): void {
    const { pubsub } = this.#options;
    this.cover().catch((error: unknown) => this.#options.onError(error, 'probe subscribe'));
    for (const [topic, probe] of this.#probes) {
      if (!pubsub.has(topic)) continue; // subscribed again by `cover`
      if (probe.sent > 0 && probe.seen < probe.sent - 1 && pubsub.isReady(topic) && commandReady) {
        if (!probe.failing) {
          probe.failing = true;
          this.#options.onError(new Error(`pub/sub delivery probe lost on ${pubsub.ownerOf(topic) ?? '?'}`), 'probe');
          pubsub.reconnect(topic);
        }
      } else if (probe.seen >= probe.sent - 1) {
        probe.failing = false;
      }
      if (!commandReady) continue;
      const n = probe.next++;
      probe.pending.set(n, this.#options.now());
      if (probe.pending.size > MAX_PENDING) probe.pending.delete(probe.pending.keys().next().value!);
      this.#options.publish(topic, String(n)).then(
        () => {
          probe.sent = Math.max(probe.sent, n);
        },
        () => undefined,
      );
    }
  }
}
