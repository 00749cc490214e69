/**
 * Prometheus exporter: subscribes to the diagnostics channels, keeps the
 * events of its own Node (a process may run several), and reads gauges from
 * the node at scrape time. `close()` unsubscribes; the composition root
 * calls it when the server closes. The core never imports this file.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import {
  diagnostics,
  type CommandErrorEvent,
  type ConflatedEvent,
  type ConnectionClosedEvent,
  type ConnectionOpenedEvent,
  type DeliveryEvent,
  type NodeEvent,
  type PublicationEvent,
  type SubscriptionEvent,
} from './diagnostics.ts';

export interface MetricsSource {
  /** The Node's id: events of other Nodes in the process are not counted. */
  readonly id: string;
  readonly hub: { readonly channelCount: number };
  /** What `/health` answers: `draining` during shutdown, `degraded` while the engine cannot deliver. */
  health(): { readonly status: 'ok' | 'draining' | 'degraded' };
}

export interface MetricsExporter {
  readonly registry: Registry;
  /** Stops listening to the diagnostics channels. Idempotent. */
  close(): void;
}

export function createMetrics(source: MetricsSource): MetricsExporter {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'herald_' });
  const connections = new Gauge({ name: 'herald_connections', help: 'Open connections by transport.', labelNames: ['transport'], registers: [registry] });
  const opened = new Counter({ name: 'herald_connections_opened_total', help: 'Connections opened by transport.', labelNames: ['transport'], registers: [registry] });
  const disconnects = new Counter({ name: 'herald_disconnects_total', help: 'Connections closed, by transport and disconnect code.', labelNames: ['transport', 'code'], registers: [registry] });
  const subscriptions = new Gauge({ name: 'herald_subscriptions', help: 'Active subscriptions by transport.', labelNames: ['transport'], registers: [registry] });
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
    help: 'What /health answers: 1 for the current status (ok, draining, degraded), 0 for the others.',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      const current = source.health().status;
      for (const status of ['ok', 'draining', 'degraded']) this.set({ status }, status === current ? 1 : 0);
    },
  });
  for (const transport of ['websocket', 'sse', 'long-poll']) {
    connections.set({ transport }, 0);
    subscriptions.set({ transport }, 0);
  }

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
    connections.inc({ transport: event.transport });
    opened.inc({ transport: event.transport });
  });
  on<ConnectionClosedEvent>(diagnostics.connectionClosed, (event) => {
    connections.dec({ transport: event.transport });
    disconnects.inc({ transport: event.transport, code: String(event.code) });
  });
  on<SubscriptionEvent>(diagnostics.subscribed, (event) => subscriptions.inc({ transport: event.transport }));
  on<SubscriptionEvent>(diagnostics.unsubscribed, (event) => subscriptions.dec({ transport: event.transport }));
  // One labelled child per source: the publish path skips hashing the labels every time.
  const bySource = { api: publications.labels({ source: 'api' }), client: publications.labels({ source: 'client' }) };
  on<PublicationEvent>(diagnostics.published, (event) => bySource[event.source].inc());
  on<DeliveryEvent>(diagnostics.delivered, (event) => deliveries.inc(event.count));
  on<ConflatedEvent>(diagnostics.conflated, (event) => conflated.inc(event.count));
  on<CommandErrorEvent>(diagnostics.commandError, (event) => commandErrors.inc({ code: String(event.code) }));

  return {
    registry,
    close() {
      for (const [name, handler] of handlers.splice(0)) unsubscribe(name, handler);
    },
  };
}
