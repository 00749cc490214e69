/**
 * Pusher apps' webhooks (docs/pusher.md, "Webhooks"): each URL of an app's
 * `webhooks` is an endpoint of the one webhook dispatcher
 * (webhooks/dispatcher.ts), so Pusher-format batches go through the same
 * durable outbox, batching, retries and dead letters as Herald's own.
 *
 * - Events are decided where Herald's are: channel_occupied/vacated and
 *   member_added/removed by the transition tracker (one per real
 *   transition, one per user, across workers and Redis nodes), client_event
 *   and cache_miss by the Pusher socket through PusherEventSink.
 * - The outbox keeps them as Herald events with the server-internal
 *   channel name; an app's endpoint takes only its own app's channels
 *   (localChannel), and its batch is written when it is sent:
 *   `{"time_ms", "events": [{"name", "channel", …}]}` with app-local
 *   channel names, signed as Pusher signs (X-Pusher-Key, X-Pusher-Signature
 *   = hex HMAC-SHA256 of the body with the app's secret).
 * - Members without a user id (anonymous native connections on a presence
 *   namespace of the default app) are no Pusher members: not sent.
 */
import { createHmac } from 'node:crypto';
import { appChannel, localChannel, type App, type AppRegistry } from '../apps/apps.ts';
import type { Node } from '../core/node.ts';
import type { Ticker } from '../util/ticker.ts';
import type { WebhookEndpoint, WebhookFormat } from '../webhooks/dispatcher.ts';
import { newEvent, type WebhookEvent, type WebhookEventName } from '../webhooks/events.ts';
import type { PusherEventSink } from './pusher-events.ts';

/** An app URL's share of the outbox when its limits do not say (AppLimitsSchema's default). */
const DEFAULT_MAX_PENDING = 10000;

/** The endpoint names of an app's webhooks start with this (`app:{id}:{index}`: outbox rows, metrics, `herald webhooks`). */
export function appEndpointGroup(appId: string): string {
  return `app:${appId}:`;
}

/** The dispatcher endpoints of an app's webhooks. */
export function appEndpoints(app: App): WebhookEndpoint[] {
  return app.webhooks.map((hook, i) => ({
    name: appEndpointGroup(app.id) + i,
    url: hook.url,
    events: hook.events as ReadonlySet<WebhookEventName>,
    keys: [],
    format: pusherFormat(app, hook.channelPrefix),
    // A stored app made before this limit existed has none: the schema's default.
    maxPending: app.limits.maxPendingWebhookEvents ?? DEFAULT_MAX_PENDING,
  }));
}

/** Every app's endpoints. */
export function allAppEndpoints(apps: readonly App[]): WebhookEndpoint[] {
  return apps.flatMap(appEndpoints);
}

/** Keeps the dispatcher's app endpoints in step with the registry (apps created, changed, removed from the console or CLI). */
export function followApps(apps: AppRegistry, dispatcher: { replaceEndpoints(group: string, endpoints: readonly WebhookEndpoint[]): void }): void {
  apps.onChange((id) => {
    const app = apps.byId(id);
    dispatcher.replaceEndpoints(appEndpointGroup(id), app === undefined ? [] : appEndpoints(app));
  });
}

/** The stored event (Herald's JSON) as Pusher sends it, or undefined when it is not for the app. */
export function pusherWebhookEvent(app: App, event: WebhookEvent): Record<string, unknown> | undefined {
  const channel = event.channel === undefined ? undefined : localChannel(app, event.channel);
  if (channel === undefined) return undefined;
  switch (event.name) {
    case 'channel_occupied':
    case 'channel_vacated':
    case 'cache_miss':
      return { name: event.name, channel };
    case 'member_added':
    case 'member_removed':
      return event.user === undefined || event.user === '' ? undefined : { name: event.name, channel, user_id: event.user };
    case 'client_event':
      return {
        name: 'client_event',
        channel,
        event: event.event,
        // As subscribers receive it: a string as is, any other value as JSON text.
        data: typeof event.data === 'string' ? event.data : JSON.stringify(event.data ?? null),
        socket_id: event.client,
        ...(event.user === undefined ? {} : { user_id: event.user }),
      };
    case 'subscription_count':
      return { name: 'subscription_count', channel, subscription_count: event.count ?? 0 };
    default:
      return undefined;
  }
}

/** Pusher's webhook format for one of `app`'s URLs, `channelPrefix` its filter (app-local names). */
export function pusherFormat(app: App, channelPrefix: string | undefined): WebhookFormat {
  return {
    takes(internal) {
      if (internal === undefined) return false;
      const channel = localChannel(app, internal);
      // `#server-to-user-…` and `#online-…` are the endpoint's own channels (sign-in, watchlist): no webhooks, as Pusher.
      return channel !== undefined && !channel.startsWith('#') && (channelPrefix === undefined || channel.startsWith(channelPrefix));
    },
    body(stored, timeMs) {
      const events: Record<string, unknown>[] = [];
      for (const text of stored) {
        const event = pusherWebhookEvent(app, JSON.parse(text) as WebhookEvent);
        if (event !== undefined) events.push(event);
      }
      return events.length === 0 ? undefined : JSON.stringify({ time_ms: timeMs, events });
    },
    headers(body) {
      return { 'x-pusher-key': app.key, 'x-pusher-signature': createHmac('sha256', app.secret).update(body).digest('hex') };
    },
  };
}

/** Whether one of the app's webhooks takes this event of this (app-local) channel: the sink builds nothing otherwise. */
function wanted(app: App, name: WebhookEventName, channel: string): boolean {
  return app.webhooks.some((hook) => (hook.events as ReadonlySet<string>).has(name) && (hook.channelPrefix === undefined || channel.startsWith(hook.channelPrefix)));
}

/**
 * The Pusher socket's events as webhook events, handed to `emit` (this
 * process's dispatcher, or in cluster mode the primary's over IPC).
 */
export class PusherWebhookSink implements PusherEventSink {
  readonly #emit: (event: WebhookEvent) => void;
  readonly #now: () => number;

  constructor(emit: (event: WebhookEvent) => void, now: () => number = Date.now) {
    this.#emit = emit;
    this.#now = now;
  }

  clientEvent(app: App, channel: string, event: string, data: unknown, socketId: string, userId: string | undefined): void {
    if (!wanted(app, 'client_event', channel)) return;
    this.#emit(newEvent('client_event', this.#now(), { channel: appChannel(app, channel), event, data, client: socketId, ...(userId === undefined ? {} : { user: userId }) }));
  }

  cacheMiss(app: App, channel: string): void {
    if (!wanted(app, 'cache_miss', channel)) return;
    this.#emit(newEvent('cache_miss', this.#now(), { channel: appChannel(app, channel) }));
  }

  /** A channel's subscription count changed (not for presence channels, as Pusher). */
  subscriptionCount(app: App, channel: string, count: number): void {
    if (channel.startsWith('presence-') || !wanted(app, 'subscription_count', channel)) return;
    this.#emit(newEvent('subscription_count', this.#now(), { channel: appChannel(app, channel), count }));
  }
}

/**
 * subscription_count webhooks: at every tick of `ticker` (once a second,
 * shared with the socket's subscription counts: subscription-counts.ts), while an app's webhook
 * takes them, this node's subscriber count of each channel (Pusher and
 * native subscribers) is compared with the last look; for each channel
 * whose count changed here, one event carries the channel's count across
 * nodes (`node.channels`: other nodes as of their last snapshot). So at
 * most one event per channel per interval per node, none for presence
 * channels (as Pusher) or server-to-user channels; a change seen by two
 * nodes in one interval is reported by both.
 */
export function watchSubscriptionCounts(node: Node, apps: AppRegistry, sink: PusherWebhookSink, ticker: Ticker): { close(): void } {
  let last = new Map<string, number>();
  const appOf = (internal: string): App | undefined => {
    if (internal.charCodeAt(0) !== 126 /* ~ */) return apps.list().find((app) => app.channelPrefix === '');
    const end = internal.indexOf('~', 1);
    return end < 0 ? undefined : apps.byId(internal.slice(1, end));
  };
  const look = (): void => {
    if (!apps.list().some((app) => app.webhooks.some((hook) => hook.events.has('subscription_count')))) {
      last = new Map();
      return;
    }
    const now = node.hub.channels();
    const changed: string[] = [];
    for (const [channel, count] of now) if (last.get(channel) !== count) changed.push(channel);
    for (const channel of last.keys()) if (!now.has(channel)) changed.push(channel);
    last = now;
    if (changed.length === 0) return;
    const counts = node.channels('');
    for (const internal of changed) {
      const app = appOf(internal);
      const channel = app === undefined ? undefined : localChannel(app, internal);
      if (app === undefined || channel === undefined || channel.startsWith('#') || channel.startsWith('|')) continue;
      sink.subscriptionCount(app, channel, counts[internal]?.num_clients ?? 0);
    }
  };
  return ticker.every(look);
}
