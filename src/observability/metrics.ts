/**
 * Prometheus exporter: subscribes to the diagnostics channels and reads
 * gauges from the node at scrape time. The core never imports this file.
 */
import { subscribe } from 'node:diagnostics_channel';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { diagnostics, type CommandErrorEvent, type ConnectionClosedEvent, type ConnectionOpenedEvent, type DeliveryEvent, type PublicationEvent, type SubscriptionEvent } from './diagnostics.ts';

export interface MetricsSource {
  readonly channelCount: number;
}

export function createMetrics(source: MetricsSource): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'herald_process_' });
  const connections = new Gauge({ name: 'herald_connections', help: 'Open connections by transport.', labelNames: ['transport'], registers: [registry] });
  const opened = new Counter({ name: 'herald_connections_opened_total', help: 'Connections opened by transport.', labelNames: ['transport'], registers: [registry] });
  const disconnects = new Counter({ name: 'herald_disconnects_total', help: 'Connections closed, by transport and disconnect code.', labelNames: ['transport', 'code'], registers: [registry] });
  const subscriptions = new Gauge({ name: 'herald_subscriptions', help: 'Active subscriptions by transport.', labelNames: ['transport'], registers: [registry] });
  const publications = new Counter({ name: 'herald_publications_total', help: 'Publications accepted, by source.', labelNames: ['source'], registers: [registry] });
  const deliveries = new Counter({ name: 'herald_deliveries_total', help: 'Publications written to connections on this node.', registers: [registry] });
  const commandErrors = new Counter({ name: 'herald_command_errors_total', help: 'Command replies with an error, by reply code.', labelNames: ['code'], registers: [registry] });
  new Gauge({
    name: 'herald_channels',
    help: 'Channels with at least one local subscriber.',
    registers: [registry],
    collect() {
      this.set(source.channelCount);
    },
  });
  for (const transport of ['websocket', 'sse', 'long-poll']) {
    connections.set({ transport }, 0);
    subscriptions.set({ transport }, 0);
  }
  subscribe(diagnostics.connectionOpened.name, (message) => {
    const event = message as ConnectionOpenedEvent;
    connections.inc({ transport: event.transport });
    opened.inc({ transport: event.transport });
  });
  subscribe(diagnostics.connectionClosed.name, (message) => {
    const event = message as ConnectionClosedEvent;
    connections.dec({ transport: event.transport });
    disconnects.inc({ transport: event.transport, code: String(event.code) });
  });
  subscribe(diagnostics.subscribed.name, (message) => subscriptions.inc({ transport: (message as SubscriptionEvent).transport }));
  subscribe(diagnostics.unsubscribed.name, (message) => subscriptions.dec({ transport: (message as SubscriptionEvent).transport }));
  subscribe(diagnostics.published.name, (message) => publications.inc({ source: (message as PublicationEvent).source }));
  subscribe(diagnostics.delivered.name, (message) => deliveries.inc((message as DeliveryEvent).count));
  subscribe(diagnostics.commandError.name, (message) => commandErrors.inc({ code: String((message as CommandErrorEvent).code) }));
  return registry;
}
