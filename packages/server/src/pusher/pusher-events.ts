/**
 * Events of the Pusher endpoint that become Pusher webhooks (docs/pusher.md,
 * "Webhooks"), from the socket side to the webhook side. Channel occupancy
 * and presence members come from the node's events (hub taps count as
 * subscribers); the two below exist only on the Pusher socket.
 */
import type { App } from '../apps/apps.ts';

export interface PusherEventSink {
  /**
   * A client event the endpoint accepted and published (`client-*` on a
   * private or presence channel). `channel` is the app-local name; `userId`
   * is the sender's on presence channels. Called once per accepted event,
   * on the node of the sender. Never throws.
   */
  clientEvent(app: App, channel: string, event: string, data: unknown, socketId: string, userId: string | undefined): void;
  /** A subscription to a cache channel found no cached event (the subscriber got pusher:cache_miss). Never throws. */
  cacheMiss(app: App, channel: string): void;
}
