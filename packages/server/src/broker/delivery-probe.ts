/**
 * The end-to-end delivery probe of the memory and sqlite engines and of the
 * cluster link (the Redis engine runs its own, broker/redis-engine.ts).
 * Every `intervalMs` it publishes a probe through the broker the Node uses
 * and waits for the broker to deliver it back to this node, exactly as it
 * delivers any publication: in one process through the broker's fan-out; in
 * cluster mode from the worker to the primary's hub and back over the IPC
 * link (worker → primary → worker).
 *
 * Guarantees:
 * - The probe channel (`|probe|<node id>`) is outside the channel grammar
 *   (`|` is refused), so no client or API call can subscribe to it, publish
 *   to it or read it. Its publications are taken off before the hub: they
 *   reach no connection, and no listing, snapshot or metric counts them.
 * - Probes are published without history (stream size 0): nothing is stored
 *   and no stream is created, so the sqlite engine writes nothing to its file
 *   for them. The broker's commit path is watched by the engine's own health
 *   (`engine_degraded`); the probe watches the fan-out.
 * - `failure()` answers a reason while the oldest probe not yet delivered is
 *   older than `deadlineMs` (judged at every interval), and undefined again
 *   from the first probe delivered after that. A publish of the probe that
 *   fails is named in the reason.
 * - `onChange` is called on every flip (the reason, or undefined once it
 *   passes again).
 */
import type { Broker, BrokerEventHandler } from './broker.ts';

export interface DeliveryProbeOptions {
  readonly nodeId: string;
  readonly intervalMs: number;
  readonly deadlineMs: number;
  readonly onChange?: (failure: string | undefined) => void;
  readonly now?: () => number;
}

/** Probes kept waiting at most; older ones are forgotten (the newest still judge). */
const MAX_PENDING = 64;

export function probeChannel(nodeId: string): string {
  return `|probe|${nodeId}`;
}

export class DeliveryProbe {
  /** The broker to hand to the Node: `inner`, with the probe's publications taken off. */
  readonly broker: Broker;
  readonly channel: string;
  readonly #inner: Broker;
  readonly #options: DeliveryProbeOptions;
  readonly #now: () => number;
  /** Probe sequence number → when it was published. */
  readonly #pending = new Map<number, number>();
  #seq = 0;
  #timer: NodeJS.Timeout | undefined;
  #subscribed = false;
  #cut = false;
  #publishError: string | undefined;
  #failure: string | undefined;

  constructor(inner: Broker, options: DeliveryProbeOptions) {
    this.#inner = inner;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.channel = probeChannel(options.nodeId);
    const channel = this.channel;
    const seen = (data: string): void => this.#delivered(data);
    this.broker = {
      setEventHandler(handler: BrokerEventHandler) {
        inner.setEventHandler({
          onPublication: (c, publication) => (c === channel ? seen(publication.data) : handler.onPublication(c, publication)),
          onJoin: (c, info) => handler.onJoin(c, info),
          onLeave: (c, info) => handler.onLeave(c, info),
          onStreamReset: (c) => {
            if (c !== channel) handler.onStreamReset(c);
          },
        });
      },
      publish: (c, data, options) => inner.publish(c, data, options),
      publishJoin: (c, info) => inner.publishJoin(c, info),
      publishLeave: (c, info) => inner.publishLeave(c, info),
      subscribe: (c) => inner.subscribe(c),
      unsubscribe: (c) => inner.unsubscribe(c),
      history: (c, query, stream) => inner.history(c, query, stream),
      close: () => inner.close(),
    };
    if (inner.historyNow !== undefined) this.broker.historyNow = (c, query, stream) => inner.historyNow!(c, query, stream);
  }

  /**
   * Subscribes the probe channel (without waiting for it: a slow or absent
   * primary must not hold up the start; the deadline judges it) and starts
   * probing. Call after the Node has set its handler.
   */
  start(): void {
    void this.#subscribe();
    this.#timer = setInterval(() => this.#tick(), this.#options.intervalMs);
    this.#timer.unref();
  }

  /** Why delivery is judged broken, or undefined while probes come back in time. */
  failure(): string | undefined {
    return this.#failure;
  }

  /**
   * Tests only (the debug action on the internal listener): `true` drops
   * this node's subscription to the probe channel in the broker (in cluster
   * mode at the primary), a real cut of the delivery path; `false` subscribes
   * it again.
   */
  async cut(on: boolean): Promise<void> {
    this.#cut = on;
    if (on) {
      this.#subscribed = false;
      await this.#inner.unsubscribe(this.channel);
    } else {
      await this.#subscribe();
    }
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #subscribe(): Promise<void> {
    try {
      await this.#inner.subscribe(this.channel);
      this.#subscribed = !this.#cut;
    } catch (error) {
      this.#publishError = `probe subscription failed: ${(error as Error).message}`;
    }
  }

  #tick(): void {
    const now = this.#now();
    this.#judge(now);
    if (!this.#subscribed && !this.#cut) void this.#subscribe();
    const seq = ++this.#seq;
    this.#pending.set(seq, now);
    if (this.#pending.size > MAX_PENDING) this.#pending.delete(this.#pending.keys().next().value!);
    this.#inner.publish(this.channel, String(seq), { stream: { size: 0, ttlMs: 0 } }).catch((error: unknown) => {
      this.#publishError = `probe publish failed: ${(error as Error).message}`;
    });
  }

  #delivered(data: string): void {
    const seq = Number(data);
    for (const sent of this.#pending.keys()) {
      if (sent > seq) break;
      this.#pending.delete(sent);
    }
    this.#publishError = undefined;
    this.#judge(this.#now());
  }

  #judge(now: number): void {
    let failure: string | undefined;
    for (const sentAt of this.#pending.values()) {
      if (now - sentAt >= this.#options.deadlineMs) failure = this.#publishError ?? `a probe was not delivered back within ${this.#options.deadlineMs} ms`;
      break;
    }
    if (failure === this.#failure) return;
    this.#failure = failure;
    this.#options.onChange?.(failure);
  }
}
