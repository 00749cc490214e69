/**
 * Webhook events: what Herald tells an application's backend about
 * channels, members and connections. Each event has a unique id (the
 * receiver's deduplication key: delivery is at least once) and the time it
 * happened. The JSON shape is documented in docs/hooks.md ("Webhooks").
 */
import { randomUUID } from 'node:crypto';

export const WEBHOOK_EVENT_NAMES = [
  'channel_occupied',
  'channel_vacated',
  'member_added',
  'member_removed',
  'client_connected',
  'client_disconnected',
  'publication',
] as const;

/**
 * Events that exist only for Pusher apps' webhooks (docs/pusher.md,
 * "Webhooks"): they travel through the same outbox, and only an app's
 * endpoints take them (a Herald endpoint's `events` never names them).
 */
export const PUSHER_ONLY_EVENT_NAMES = ['client_event', 'cache_miss', 'subscription_count'] as const;

export type WebhookEventName = (typeof WEBHOOK_EVENT_NAMES)[number] | (typeof PUSHER_ONLY_EVENT_NAMES)[number];

/** One event as sent (snake_case JSON). Fields beyond id, name and time_ms depend on the name. */
export interface WebhookEvent {
  /** Unique per event; a redelivery carries the same id. */
  readonly id: string;
  readonly name: WebhookEventName;
  /** When Herald saw it happen, epoch milliseconds. */
  readonly time_ms: number;
  readonly channel?: string;
  readonly user?: string;
  readonly client?: string;
  readonly transport?: string;
  /** client_disconnected: the disconnect code and reason. */
  readonly code?: number;
  readonly reason?: string;
  /** publication: the data as published (JSON). */
  readonly data?: unknown;
  /** member_added, publication: the connection info the token gave. */
  readonly info?: unknown;
  /** client_event: the event's name (its data is `data`, its sender's socket id `client`, user id `user`). */
  readonly event?: string;
  /** subscription_count: the channel's subscribers. */
  readonly count?: number;
}

export function newEvent(name: WebhookEventName, time: number, fields: Omit<WebhookEvent, 'id' | 'name' | 'time_ms'>): WebhookEvent {
  return { id: randomUUID(), name, time_ms: time, ...fields };
}

/** The namespace of a channel name (the part before the first ":"; '' for none). */
export function namespaceOf(channel: string): string {
  const colon = channel.indexOf(':');
  return colon < 0 ? '' : channel.slice(0, colon);
}

