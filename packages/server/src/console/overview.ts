/**
 * The console's live overview: one frame per second for every open
 * overview stream (console-api.ts), built from node snapshots.
 *
 * Where the numbers come from: this node's snapshot is taken at each frame
 * (`Node.snapshot()`: the metrics exporter's totals and the watchdog's last
 * sample); every other node, and in cluster mode every other worker (each
 * worker is a node of its own), as of the last snapshot it sent on the
 * control bus (every 2 s: over the cluster IPC through the primary, over
 * Redis between machines). Nothing is scraped. A node's `at` says how old
 * its numbers are; a node whose snapshot is older than three snapshot
 * intervals is gone from the frame.
 *
 * Rates (publications and deliveries per second) are the difference of a
 * node's totals between two of its snapshots, divided by the time between
 * them: a node seen once has rate 0.
 *
 * Guarantees: one timer per process whatever the number of streams, running
 * only while a stream is open; each frame is built once and written to
 * every stream as the same string.
 */
import type { NodeSnapshot } from '../broker/control.ts';
import type { Node } from '../core/node.ts';

export interface OverviewNode {
  readonly node: string;
  readonly worker?: number | undefined;
  readonly host?: string | undefined;
  readonly connections: { readonly websocket: number; readonly sse: number; readonly longPoll: number; readonly pusher: number };
  readonly subscriptions: number;
  readonly publicationsPerSecond: number;
  readonly deliveriesPerSecond: number;
  /** Longest event-loop delay in the watchdog's last interval. */
  readonly eventLoopDelayMs: number;
  readonly eventLoopDelayP99Ms: number;
  readonly heapUsedBytes: number;
  readonly rssBytes: number;
  /** Watchdog thresholds the node is over now (it is then not ready). */
  readonly watchdog: readonly string[];
  readonly uptimeMs: number;
  /** When the numbers were taken (epoch ms). */
  readonly at: number;
}

export interface OverviewFrame {
  /** When the frame was built (epoch ms). */
  readonly t: number;
  readonly nodes: readonly OverviewNode[];
  readonly totals: {
    readonly nodes: number;
    readonly connections: { readonly websocket: number; readonly sse: number; readonly longPoll: number; readonly pusher: number };
    readonly subscriptions: number;
    readonly publicationsPerSecond: number;
    readonly deliveriesPerSecond: number;
    /** Nodes over a watchdog threshold. */
    readonly flagged: number;
  };
}

export const OVERVIEW_INTERVAL_MS = 1000;

interface Seen {
  readonly at: number;
  readonly publications: number;
  readonly deliveries: number;
  readonly publicationsPerSecond: number;
  readonly deliveriesPerSecond: number;
}

function rate(now: number, before: number, ms: number): number {
  if (ms <= 0 || now < before) return 0;
  return Math.round(((now - before) * 1000) / ms * 10) / 10;
}

/** Builds frames from node snapshots; keeps each node's previous totals for the rates. */
export class OverviewBuilder {
  readonly #node: Node;
  readonly #seen = new Map<string, Seen>();

  constructor(node: Node) {
    this.#node = node;
  }

  frame(now: number): OverviewFrame {
    const snapshots = [this.#node.snapshot(), ...this.#node.peerSnapshots()];
    const nodes = snapshots.map((s) => this.#entry(s));
    const live = new Set(snapshots.map((s) => s.id));
    for (const id of this.#seen.keys()) if (!live.has(id)) this.#seen.delete(id);
    nodes.sort((a, b) => (a.host ?? '').localeCompare(b.host ?? '') || (a.worker ?? 0) - (b.worker ?? 0) || a.node.localeCompare(b.node));
    const connections = { websocket: 0, sse: 0, longPoll: 0, pusher: 0 };
    let subscriptions = 0;
    let publicationsPerSecond = 0;
    let deliveriesPerSecond = 0;
    let flagged = 0;
    for (const n of nodes) {
      connections.websocket += n.connections.websocket;
      connections.sse += n.connections.sse;
      connections.longPoll += n.connections.longPoll;
      connections.pusher += n.connections.pusher;
      subscriptions += n.subscriptions;
      publicationsPerSecond += n.publicationsPerSecond;
      deliveriesPerSecond += n.deliveriesPerSecond;
      if (n.watchdog.length > 0) flagged++;
    }
    return {
      t: now,
      nodes,
      totals: {
        nodes: nodes.length,
        connections,
        subscriptions,
        publicationsPerSecond: Math.round(publicationsPerSecond * 10) / 10,
        deliveriesPerSecond: Math.round(deliveriesPerSecond * 10) / 10,
        flagged,
      },
    };
  }

  #entry(s: NodeSnapshot): OverviewNode {
    const live = s.live;
    const publications = live?.publications ?? 0;
    const deliveries = live?.deliveries ?? 0;
    const before = this.#seen.get(s.id);
    let seen: Seen;
    if (before === undefined) seen = { at: s.at, publications, deliveries, publicationsPerSecond: 0, deliveriesPerSecond: 0 };
    else if (before.at === s.at) seen = before;
    else {
      const ms = s.at - before.at;
      seen = { at: s.at, publications, deliveries, publicationsPerSecond: rate(publications, before.publications, ms), deliveriesPerSecond: rate(deliveries, before.deliveries, ms) };
    }
    this.#seen.set(s.id, seen);
    return {
      node: s.id,
      worker: live?.worker,
      host: live?.host,
      connections: live === undefined ? { websocket: 0, sse: 0, longPoll: 0, pusher: 0 } : { ...live.connections, pusher: live.connections.pusher ?? 0 },
      subscriptions: live?.subscriptions ?? 0,
      publicationsPerSecond: seen.publicationsPerSecond,
      deliveriesPerSecond: seen.deliveriesPerSecond,
      eventLoopDelayMs: s.process?.eventLoopDelayMaxMs ?? 0,
      eventLoopDelayP99Ms: s.process?.eventLoopDelayP99Ms ?? 0,
      heapUsedBytes: s.process?.heapUsedBytes ?? 0,
      rssBytes: s.process?.rssBytes ?? 0,
      watchdog: s.process?.over ?? [],
      uptimeMs: s.uptimeMs,
      at: s.at,
    };
  }
}

/** A stream's sink: gets each frame's text. */
export type FrameSink = (text: string) => void;

/**
 * The per-process ticker: one frame per second to every open stream while
 * any is open. `open` answers a function that closes that stream.
 */
export class OverviewTicker {
  readonly #builder: OverviewBuilder;
  readonly #now: () => number;
  readonly #sinks = new Set<FrameSink>();
  #timer: NodeJS.Timeout | undefined;

  constructor(node: Node, now: () => number = Date.now) {
    this.#builder = new OverviewBuilder(node);
    this.#now = now;
  }

  get open(): number {
    return this.#sinks.size;
  }

  /** Adds a stream; its first frame is written at once. */
  add(sink: FrameSink): () => void {
    this.#sinks.add(sink);
    sink(JSON.stringify(this.#builder.frame(this.#now())));
    this.#timer ??= setInterval(() => this.#tick(), OVERVIEW_INTERVAL_MS);
    return () => {
      this.#sinks.delete(sink);
      if (this.#sinks.size === 0 && this.#timer !== undefined) {
        clearInterval(this.#timer);
        this.#timer = undefined;
      }
    };
  }

  #tick(): void {
    const text = JSON.stringify(this.#builder.frame(this.#now()));
    for (const sink of this.#sinks) sink(text);
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#sinks.clear();
  }
}
