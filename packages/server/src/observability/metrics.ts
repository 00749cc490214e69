/**
 * Prometheus exporter: subscribes to the diagnostics channels, keeps the
 * events of its own Node (a process may run several), and reads gauges from
 * the node at scrape time. `close()` unsubscribes; the composition root
 * calls it when the server closes. The core never imports this file.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from './prometheus.ts';
import type { Watchdog } from './watchdog.ts';
import {
  diagnostics,
  type CommandErrorEvent,
  type HookCallEvent,
  type ConflatedEvent,
  type ConnectionClosedEvent,
  type ConnectionOpenedEvent,
  type DeliveryEvent,
  type NodeEvent,
  type PublicationEvent,
  type PusherApiEvent,
  type PusherClientEventEvent,
  type PusherConnectionEvent,
  type SubscriptionEvent,
  type WebhookOutcomeEvent,
} from './diagnostics.ts';

export interface MetricsSource {
  /** The Node's id: events of other Nodes in the process are not counted. */
  readonly id: string;
  readonly hub: { readonly channelCount: number };
  /** What `/health` answers: `draining` during shutdown, `degraded` while the engine cannot deliver. */
  health(): { readonly status: 'ok' | 'draining' | 'degraded' };
}

/** Plain running totals kept beside the Prometheus series (read synchronously: node snapshots, the console's overview). */
export interface LiveTotals {
  /** `pusher`: the Pusher endpoint's sockets (pusher/pusher-endpoint.ts). */
  readonly connections: { readonly websocket: number; readonly sse: number; readonly longPoll: number; readonly pusher: number };
  readonly subscriptions: number;
  /** Since the exporter started. */
  readonly publications: number;
  readonly deliveries: number;
}

export interface MetricsExporter {
  readonly registry: Registry;
  /** The totals now (a fresh object). */
  totals(): LiveTotals;
  /** Stops listening to the diagnostics channels. Idempotent. */
  close(): void;
}

/** The webhook outbox's sizes, read at each scrape. */
export interface WebhookCounts {
  counts(): { readonly pending: number; readonly dead: number } | Promise<{ readonly pending: number; readonly dead: number }>;
}

const TRANSPORTS = ['websocket', 'sse', 'long-poll'] as const;
const CONNECTION_KINDS = [...TRANSPORTS, 'pusher'] as const;

export function createMetrics(source: MetricsSource, watchdog?: Watchdog, webhooks?: WebhookCounts): MetricsExporter {
  const registry = new Registry();
  collectDefaultMetrics(registry, 'herald_');
  if (watchdog !== undefined) watchdogMetrics(registry, watchdog);
  // Per-connection and per-subscription counts are plain numbers, copied into their series at each scrape
  // (prom-client hashes the labels on every inc: a reconnect storm would pay it several times per connection).
  const open = { websocket: 0, sse: 0, 'long-poll': 0, pusher: 0 };
  const openedCount = { websocket: 0, sse: 0, 'long-poll': 0, pusher: 0 };
  const openedReported = { websocket: 0, sse: 0, 'long-poll': 0, pusher: 0 };
  const subscribedBy = { websocket: 0, sse: 0, 'long-poll': 0 };
  new Gauge({
    name: 'herald_connections',
    help: 'Open connections by transport (websocket, sse, long-poll; pusher: the Pusher socket).',
    labelNames: ['transport'],
    registers: [registry],
    collect() {
      for (const transport of CONNECTION_KINDS) this.set({ transport }, open[transport]);
    },
  });
  new Counter({
    name: 'herald_connections_opened_total',
    help: 'Connections opened by transport (pusher: past pusher:connection_established).',
    labelNames: ['transport'],
    registers: [registry],
    collect() {
      for (const transport of CONNECTION_KINDS) {
        const delta = openedCount[transport] - openedReported[transport];
        openedReported[transport] = openedCount[transport];
        this.inc({ transport }, delta);
      }
    },
  });
  const disconnects = new Counter({ name: 'herald_disconnects_total', help: 'Connections closed, by transport and disconnect code.', labelNames: ['transport', 'code'], registers: [registry] });
  new Gauge({
    name: 'herald_subscriptions',
    help: 'Active subscriptions by transport.',
    labelNames: ['transport'],
    registers: [registry],
    collect() {
      for (const transport of TRANSPORTS) this.set({ transport }, subscribedBy[transport]);
    },
  });
  const publications = new Counter({ name: 'herald_publications_total', help: 'Publications accepted, by source.', labelNames: ['source'], registers: [registry] });
  const deliveries = new Counter({ name: 'herald_deliveries_total', help: 'Publications written to connections on this node.', registers: [registry] });
  const conflated = new Counter({
    name: 'herald_conflated_total',
    help: 'Publications not written to a connection that was behind because a newer one of the same key replaced them (conflation).',
    registers: [registry],
  });
  const commandErrors = new Counter({ name: 'herald_command_errors_total', help: 'Command replies with an error, by reply code.', labelNames: ['code'], registers: [registry] });
  new Gauge({
    name: 'herald_channels',
    help: 'Channels with at least one local subscriber.',
    registers: [registry],
    collect() {
      this.set(source.hub.channelCount);
    },
  });
  new Gauge({
    name: 'herald_health',
    help: 'What /health answers: 1 for the current status (ok, draining, degraded), 0 for the others. Cluster mode: 1 when any worker answers it.',
    labelNames: ['status'],
    // Cluster /metrics: a status is 1 when any worker is in it (alerts compare with 1).
    aggregator: 'max',
    registers: [registry],
    collect() {
      const current = source.health().status;
      for (const status of ['ok', 'draining', 'degraded']) this.set({ status }, status === current ? 1 : 0);
    },
  });
  let subscribed = 0;
  let published = 0;
  let delivered = 0;
  const handlers: [string, (message: unknown) => void][] = [];
  /** Subscribes `handle` to a channel, for this Node's events only. */
  const on = <E extends NodeEvent>(channel: { readonly name: string | symbol }, handle: (event: E) => void): void => {
    const handler = (message: unknown): void => {
      if ((message as E).node === source.id) handle(message as E);
    };
    handlers.push([channel.name as string, handler]);
    subscribe(channel.name, handler);
  };
  on<ConnectionOpenedEvent>(diagnostics.connectionOpened, (event) => {
    openedCount[event.transport]++;
    open[event.transport]++;
  });
  on<ConnectionClosedEvent>(diagnostics.connectionClosed, (event) => {
    open[event.transport]--;
    disconnects.inc({ transport: event.transport, code: String(event.code) });
  });
  on<SubscriptionEvent>(diagnostics.subscribed, (event) => {
    subscribedBy[event.transport]++;
    subscribed++;
  });
  on<SubscriptionEvent>(diagnostics.unsubscribed, (event) => {
    subscribedBy[event.transport]--;
    subscribed--;
  });
  // One labelled child per source: the publish path skips hashing the labels every time.
  const bySource = { api: publications.labels({ source: 'api' }), client: publications.labels({ source: 'client' }) };
  on<PublicationEvent>(diagnostics.published, (event) => {
    bySource[event.source].inc();
    published++;
  });
  on<DeliveryEvent>(diagnostics.delivered, (event) => {
    deliveries.inc(event.count);
    delivered += event.count;
  });
  on<ConflatedEvent>(diagnostics.conflated, (event) => conflated.inc(event.count));
  on<CommandErrorEvent>(diagnostics.commandError, (event) => commandErrors.inc({ code: String(event.code) }));
  const hookCalls = new Counter({ name: 'herald_hook_calls_total', help: 'Proxy hook calls by event and outcome (allow, deny, failed).', labelNames: ['event', 'outcome'], registers: [registry] });
  const hookSeconds = new Histogram({
    name: 'herald_hook_duration_seconds',
    help: 'Proxy hook call latency by event.',
    labelNames: ['event'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  on<HookCallEvent>(diagnostics.hookCall, (event) => {
    hookCalls.inc({ event: event.event, outcome: event.outcome });
    hookSeconds.observe({ event: event.event }, event.ms / 1000);
  });
  const jsCalls = new Counter({ name: 'herald_js_hook_calls_total', help: 'JavaScript hook calls by event and outcome (allow, deny, failed).', labelNames: ['event', 'outcome'], registers: [registry] });
  const jsErrors = new Counter({
    name: 'herald_js_hook_errors_total',
    help: 'Failed JavaScript hook calls by event and reason (timeout, memory, stack, threw, answer_schema, queue_full, worker_exit, …).',
    labelNames: ['event', 'reason'],
    registers: [registry],
  });
  const jsSeconds = new Histogram({
    name: 'herald_js_hook_duration_seconds',
    help: 'JavaScript hook call latency by event (queue wait included).',
    labelNames: ['event'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  on<HookCallEvent>(diagnostics.hookSandbox, (event) => {
    jsCalls.inc({ event: event.event, outcome: event.outcome });
    if (event.reason !== undefined) jsErrors.inc({ event: event.event, reason: event.reason });
    jsSeconds.observe({ event: event.event }, event.ms / 1000);
  });
  const pusherApi = new Counter({
    name: 'herald_pusher_api_requests_total',
    help: 'Pusher HTTP API requests by app, route (events, batch_events, channels, channel, channel_users, terminate_connections) and status.',
    labelNames: ['app', 'route', 'status'],
    registers: [registry],
  });
  on<PusherApiEvent>(diagnostics.pusherApi, (event) => pusherApi.inc({ app: event.app, route: event.route, status: String(event.status) }));
  const pusherConnections = new Gauge({ name: 'herald_pusher_connections', help: 'Open Pusher protocol connections by app.', labelNames: ['app'], registers: [registry] });
  const pusherCloses = new Counter({
    name: 'herald_pusher_disconnects_total',
    help: 'Pusher protocol connections closed, by app and close code (4200 drain, 4201 pong timeout, 4009 terminated, …; 1000/1001/1005/1006 by the client).',
    labelNames: ['app', 'code'],
    registers: [registry],
  });
  on<PusherConnectionEvent>(diagnostics.pusherConnection, (event) => {
    if (event.code === undefined) {
      pusherConnections.inc({ app: event.app });
      openedCount.pusher++;
      open.pusher++;
    } else {
      open.pusher--;
      pusherConnections.dec({ app: event.app });
      pusherCloses.inc({ app: event.app, code: String(event.code) });
    }
  });
  const pusherClientEvents = new Counter({
    name: 'herald_pusher_client_events_total',
    help: 'Pusher client events (client-*) by app and outcome: accepted (published) or refused (4301: rate, size, channel type, app setting).',
    labelNames: ['app', 'outcome'],
    registers: [registry],
  });
  on<PusherClientEventEvent>(diagnostics.pusherClientEvent, (event) => pusherClientEvents.inc({ app: event.app, outcome: event.outcome }));
  if (webhooks !== undefined) {
    const count = webhookMetrics(registry, webhooks);
    on<WebhookOutcomeEvent>(diagnostics.webhook, (event) => count(event.endpoint, event.outcome, event.count));
  }

  return {
    registry,
    totals: () => ({
      connections: { websocket: open.websocket, sse: open.sse, longPoll: open['long-poll'], pusher: open.pusher },
      subscriptions: subscribed,
      publications: published,
      deliveries: delivered,
    }),
    close() {
      for (const [name, handler] of handlers.splice(0)) unsubscribe(name, handler);
    },
  };
}

/** The watchdog's last sample and state, read at scrape time (observability/watchdog.ts). */
function watchdogMetrics(registry: Registry, watchdog: Watchdog): void {
  new Gauge({
    name: 'herald_event_loop_delay_seconds',
    help: 'Event-loop delay in the last watchdog interval: the longest (stat="max") and the 99th percentile (stat="p99").',
    labelNames: ['stat'],
    registers: [registry],
    collect() {
      this.set({ stat: 'max' }, watchdog.sample.eventLoopDelayMaxMs / 1000);
      this.set({ stat: 'p99' }, watchdog.sample.eventLoopDelayP99Ms / 1000);
    },
  });
  new Gauge({
    name: 'herald_heap_used_bytes',
    help: 'V8 heap used at the last watchdog sample.',
    registers: [registry],
    collect() {
      this.set(watchdog.sample.heapUsedBytes);
    },
  });
  new Gauge({
    name: 'herald_live_heap_bytes',
    help: 'V8 heap used right after the last full garbage collection (what a leak grows; RSS can stay high without one).',
    registers: [registry],
    collect() {
      this.set(watchdog.sample.liveHeapBytes);
    },
  });
  new Gauge({
    name: 'herald_rss_bytes',
    help: 'Resident set size at the last watchdog sample.',
    registers: [registry],
    collect() {
      this.set(watchdog.sample.rssBytes);
    },
  });
  new Gauge({
    name: 'herald_watchdog_over',
    help: 'Watchdog thresholds: 1 while the process is over one (it is then not ready), else 0.',
    labelNames: ['threshold'],
    registers: [registry],
    collect() {
      const over = watchdog.over();
      for (const threshold of ['event_loop_delay', 'live_heap', 'rss'] as const) this.set({ threshold }, over.includes(threshold) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'herald_watchdog_reports',
    help: 'Diagnostic reports (kind="report") and heap snapshots (kind="heap_snapshot") this process wrote.',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      this.set({ kind: 'report' }, watchdog.written.reports);
      this.set({ kind: 'heap_snapshot' }, watchdog.written.heapSnapshots);
    },
  });
}

/**
 * The webhook series on `registry`: the outbox gauge (read at each scrape)
 * and the outcome counter, whose increment is returned. The composition
 * root of a single process feeds it from diagnostics; the cluster primary,
 * which owns the outbox, directly.
 */
export function webhookMetrics(registry: Registry, webhooks: WebhookCounts): (endpoint: string, outcome: string, count: number) => void {
  const outcomes = new Counter({
    name: 'herald_webhook_events_total',
    help: 'Webhook events by endpoint and outcome: delivered, retried (per failed attempt), dead (kept as dead letters), dropped (outbox full).',
    labelNames: ['endpoint', 'outcome'],
    registers: [registry],
  });
  new Gauge({
    name: 'herald_webhook_outbox',
    help: 'Webhook outbox entries: pending delivery, and dead letters (herald webhooks list-dead, replay).',
    labelNames: ['state'],
    registers: [registry],
    // The redis engine's outbox is shared: every node (and worker) reports the same counts, and a cluster scrape keeps one.
    aggregator: 'max',
    async collect() {
      try {
        const counts = await webhooks.counts();
        this.set({ state: 'pending' }, counts.pending);
        this.set({ state: 'dead' }, counts.dead);
      } catch {
        // The outbox is not readable right now: the last values stay.
      }
    },
  });
  return (endpoint, outcome, count) => outcomes.inc({ endpoint, outcome }, count);
}
