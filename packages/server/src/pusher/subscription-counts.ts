/**
 * Subscription counting on the socket (docs/pusher.md, "Subscription
 * counting"): for an app with `subscriptionCount` on, every subscriber of
 * a non-presence channel gets
 * `{"event":"pusher_internal:subscription_count","channel":…,"data":"{\"subscription_count\":N}"}`
 * (pusher-js: `pusher:subscription_count` on the channel, and
 * `channel.subscriptionCount`).
 *
 * Guarantees:
 * - N is the channel's count across nodes, as the HTTP API's
 *   `info=subscription_count` and the subscription_count webhook count it
 *   (`node.subscriberCount`: Pusher and native subscribers, this node's now,
 *   other nodes' as of their last snapshot).
 * - Each node looks once per `intervalMs` (1 s) at its own taps: a channel
 *   whose count differs from the one it last sent gets the new count, to
 *   every subscriber here, in one frame. So at most one event per channel
 *   per interval per node, always the latest count, and none while the
 *   count holds. A connection that subscribed since the last look gets the
 *   count at the next look even when it did not change (its arrival and
 *   another's departure in the same second).
 * - None on presence channels (Pusher sends none there: members carry the
 *   count) nor on `#server-to-user-…`; none while the app has it off.
 */
import type { AppRegistry } from '../apps/apps.ts';
import type { Ticker } from '../util/ticker.ts';
import { encodeServerTextFrameOf } from '../util/websocket-frame.ts';
import type { ChannelKind, PusherChannel } from './pusher-channels.ts';

/**
 * How often each node looks at its channels' counts: the socket's (here)
 * and the subscription_count webhooks' (pusher-webhooks.ts), on one Ticker
 * the composition root gives both.
 */
export const SUBSCRIPTION_COUNT_INTERVAL_MS = 1000;

/** Whether a channel of this kind gets subscription counts (not presence channels, not server-to-user channels). */
export function counted(kind: ChannelKind): boolean {
  return !kind.presence && kind.serverToUser === undefined;
}

/** The event's text on `tap`'s channel. */
export function subscriptionCountFrame(tap: PusherChannel, count: number): string {
  return tap.frame('pusher_internal:subscription_count', `{"subscription_count":${count}}`);
}

/**
 * Looks at every tap once: sends what changed (see the module comment).
 * `count` answers an internal channel's count across nodes.
 */
export function sendSubscriptionCounts(taps: Iterable<PusherChannel>, apps: AppRegistry, count: (internal: string) => number): void {
  for (const tap of taps) {
    if (!counted(tap.kind)) continue;
    // The tap keeps the app it was made with: the switch is read from the app as it is now.
    if (apps.byId(tap.app.id)?.subscriptionCount !== true) {
      tap.countSent = -1;
      tap.countWaiting.clear();
      continue;
    }
    if (tap.subscribers.size === 0) continue;
    const now = count(tap.internal);
    if (now !== tap.countSent) {
      tap.countSent = now;
      tap.countWaiting.clear();
      const bytes = encodeServerTextFrameOf(subscriptionCountFrame(tap, now));
      for (const subscriber of tap.subscribers.keys()) subscriber.writeFrame(bytes);
    } else if (tap.countWaiting.size > 0) {
      const bytes = encodeServerTextFrameOf(subscriptionCountFrame(tap, now));
      for (const subscriber of tap.countWaiting) subscriber.writeFrame(bytes);
      tap.countWaiting.clear();
    }
  }
}

/**
 * Runs `sendSubscriptionCounts` at every tick of `ticker` (once a second,
 * shared with the webhooks' sampler) while an app has subscription counting
 * on (a look finds nothing to do otherwise, once the taps are reset after
 * the last app turned it off).
 */
export function watchSocketSubscriptionCounts(taps: () => Iterable<PusherChannel>, apps: AppRegistry, count: (internal: string) => number, ticker: Ticker): { close(): void } {
  let wasOn = false;
  return ticker.every(() => {
    const on = apps.list().some((app) => app.subscriptionCount);
    if (!on && !wasOn) return;
    wasOn = on;
    sendSubscriptionCounts(taps(), apps, count);
  });
}
