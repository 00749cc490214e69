/**
 * The Pusher protocol 7 endpoint: WebSocket upgrades on `/app/{key}`
 * (docs/pusher.md, "The socket"). It finds the app by key, checks the
 * protocol version, the origin (the app's allowedOrigins, else the
 * server's) and the connection caps (the server's per-IP caps from the
 * edge, the app's maxConnections counted with its native connections:
 * edge.appConnections), then answers
 * `pusher:connection_established`. A refusal after the upgrade is a
 * `pusher:error` with Pusher's code followed by a close with that code, so
 * pusher-js knows whether to reconnect (pusher-errors.ts).
 *
 * Channels: one ChannelTap per internal channel stands for every Pusher
 * connection subscribed to it on this node (pusher-channels.ts).
 * Liveness: a connection quiet for `pusher.activityTimeoutSeconds` gets a
 * `pusher:ping`; without an answer within PONG_TIMEOUT_MS (30 s, or the
 * activity timeout when shorter) it is closed with 4201. Shutdown: `drain` sends 4200 (reconnect at once, to another node)
 * before the node drains. Subscription counts: subscription-counts.ts, once a second.
 */
import { randomInt } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { appChannel, nativeName, type App, type AppRegistry } from '../apps/apps.ts';
import type { Config } from '../config/schema.ts';
import type { Node } from '../core/node.ts';
import type { Logger } from '../core/logger.ts';
import type { ResolvedChannel } from '../core/channel-rules.ts';
import type { Edge } from '../edge/edge.ts';
import { limitKey } from '../edge/client-address.ts';
import type { Place, Refusal } from '../edge/connection-limits.ts';
import type { Releasable } from '../transports/http-connection.ts';
import { PusherChannel, type ChannelKind } from './pusher-channels.ts';
import { PusherSocket, unsubscribe } from './pusher-connection.ts';
import type { PusherContext } from './pusher-context.ts';
import type { PusherEventSink } from './pusher-events.ts';
import type { PusherErrorName } from './pusher-errors.ts';
import { pusherDelivery } from './pusher-publication.ts';
import { PusherUsers } from './pusher-users.ts';
import { createWatchlists } from './watchlist.ts';
import { SUBSCRIPTION_COUNT_INTERVAL_MS, watchSocketSubscriptionCounts } from './subscription-counts.ts';
import { Ticker } from '../util/ticker.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import { youngGenerationHold } from '../util/young-generation.ts';

/** How long a client has to answer the server's pusher:ping (Pusher's pong timeout), at most the activity timeout. */
export const PONG_TIMEOUT_MS = 30000;

/** How often connections are checked for activity. */
const ACTIVITY_CHECK_MS = 5000;

/** Presence members are checked against the store every engine.presenceTtlMs, at least this far apart. */
const RECONCILE_MIN_MS = 5000;

const APP_PATH = /^\/app\/([A-Za-z0-9_-]{1,128})$/;

export interface PusherEndpointOptions {
  readonly config: Config;
  readonly node: Node;
  readonly apps: AppRegistry;
  readonly logger: Logger;
  readonly edge: Edge;
  readonly events?: PusherEventSink | undefined;
  /** The once-a-second timer subscription counts run on, shared with the subscription_count webhooks (default: one of its own). */
  readonly countTicker?: Ticker | undefined;
}

export interface PusherEndpoint {
  /** For attachWebSocket's `otherUpgrade`: takes `/app/{key}` upgrades. */
  otherUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, path: string): boolean;
  /** Closes every Pusher connection with 4200 (reconnect at once); true when all closed within `timeoutMs`. */
  drain(timeoutMs: number): Promise<boolean>;
  /** Cuts what is left and stops the timers. */
  close(): void;
}

/** A socket id as Pusher makes them (`^\d+\.\d+$`; the `pusher` SDK checks the form). */
function newSocketId(): string {
  return `${randomInt(1, 2 ** 47)}.${randomInt(1, 2 ** 47)}`;
}

export function createPusherEndpoint(options: PusherEndpointOptions): PusherEndpoint {
  const { config, node, apps, logger, edge } = options;
  const sockets = new Set<PusherSocket>();
  const taps = new Map<string, PusherChannel>();
  const holds = new WeakMap<PusherChannel, number>();
  const activityTimeoutMs = config.pusher.activityTimeoutSeconds * 1000;
  const pongTimeoutMs = Math.min(PONG_TIMEOUT_MS, activityTimeoutMs);
  const places = new WeakMap<PusherSocket, Releasable>();
  let draining = false;

  const users = new PusherUsers(config, (key) => node.userConnectionCount(key));
  // The node's totals (info, the console's overview, per-user caps) count these sockets.
  node.countOthers({
    get count() {
      return sockets.size;
    },
    userCounts: () => users.userCounts(),
    userCount: (key) => users.userCount(key),
  });

  const context: PusherContext = {
    config,
    node,
    logger,
    events: options.events,
    users,
    now: () => node.now(),
    closed(socket, code) {
      if (!sockets.delete(socket)) return;
      if (diagnostics.pusherConnection.hasSubscribers) diagnostics.pusherConnection.publish({ node: node.id, app: socket.app.id, code });
      socket.closing = true;
      places.get(socket)?.release();
      users.closed(socket);
      for (const name of [...socket.channels.keys()]) void unsubscribe(socket, name);
      socket.channels.clear();
    },
    acquire(app: App, name: string, kind: ChannelKind) {
      const internal = appChannel(app, name);
      let tap = taps.get(internal);
      if (tap === undefined) {
        const created = new PusherChannel(app, name, internal, kind, () => node.now());
        tap = created;
        taps.set(internal, created);
        created.ready = (async () => {
          await node.hub.addTap(internal, created);
          if (kind.presence) await created.loadMembers(() => node.members(internal));
        })();
        created.ready.catch(() => {
          if (taps.get(internal) === created) taps.delete(internal);
          void node.hub.removeTap(internal, created).catch(() => undefined);
        });
      }
      holds.set(tap, (holds.get(tap) ?? 0) + 1);
      return tap;
    },
    release(tap) {
      holds.set(tap, (holds.get(tap) ?? 1) - 1);
      context.releaseIfEmpty(tap);
    },
    releaseIfEmpty(tap) {
      if ((holds.get(tap) ?? 0) > 0 || tap.size > 0 || taps.get(tap.internal) !== tap) return;
      taps.delete(tap.internal);
      node.hub.removeTap(tap.internal, tap).catch((error: unknown) => logger.warn({ err: error }, 'pusher channel not left'));
    },
    resolved(internal: string): ResolvedChannel {
      // A cache channel's history TTL is pusher.cacheTtlMs (channel-rules.ts).
      return { channel: internal, namespace: '', options: node.rules.defaultOptions(nativeName(internal)) };
    },
    async replayCache(socket, tap) {
      let page;
      try {
        page = await node.readLatest(tap.internal, node.rules.defaultOptions(tap.name), 1);
      } catch (error) {
        logger.warn({ err: error, app: tap.app.id }, 'pusher cache channel not read');
        page = undefined;
      }
      const last = page?.publications[0];
      if (last !== undefined) {
        const delivery = pusherDelivery(last);
        socket.sendText(tap.frame(delivery.event, delivery.data, delivery.userId));
        return;
      }
      socket.sendText('{"event":"pusher:cache_miss","channel":' + JSON.stringify(tap.name) + '}');
      options.events?.cacheMiss(socket.app, tap.name);
    },
  };
  const watchlists = createWatchlists(context);
  users.watchlists = watchlists;

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.limits.maxMessageBytes,
    maxFragments: config.limits.maxFragments,
    perMessageDeflate: false,
    clientTracking: false,
    skipUTF8Validation: false,
    WebSocket: PusherSocket,
  });

  node.onControl((command) => {
    if (command.kind === 'pusher_terminate') users.terminate(command.app, command.user);
  });

  apps.onChange((id) => {
    const app = apps.byId(id);
    for (const socket of sockets) {
      if (socket.app.id !== id) continue;
      if (app === undefined) socket.fail('app_unknown');
      else if (!app.enabled) socket.fail('app_disabled');
      else socket.app = app;
    }
  });

  const timer = setInterval(() => {
    const now = node.now();
    for (const socket of sockets) {
      if (socket.closing) continue;
      if (socket.pingSentAt !== 0) {
        if (now - socket.pingSentAt > pongTimeoutMs) socket.fail('pong_timeout');
      } else if (now - socket.lastActivity > activityTimeoutMs) {
        socket.pingSentAt = now;
        socket.sendText('{"event":"pusher:ping","data":"{}"}');
      }
    }
  }, ACTIVITY_CHECK_MS);
  timer.unref();

  // Members of a node that died expire from the presence store without a leave: drop them here too.
  let reconciling = false;
  const reconcileTimer = setInterval(() => {
    if (reconciling) return;
    reconciling = true;
    void (async () => {
      for (const tap of [...taps.values()]) {
        if (tap.kind.presence) await tap.reconcile(() => node.members(tap.internal)).catch(() => undefined);
      }
      await watchlists.reconcile();
    })().finally(() => (reconciling = false));
  }, Math.max(RECONCILE_MIN_MS, config.engine.presenceTtlMs));
  reconcileTimer.unref();

  // pusher_internal:subscription_count for the apps that have subscription counting on (subscription-counts.ts).
  const subscriptionCounts = watchSocketSubscriptionCounts(() => taps.values(), apps, (internal) => node.subscriberCount(internal), options.countTicker ?? new Ticker(SUBSCRIPTION_COUNT_INTERVAL_MS, (error) => logger.error({ err: error }, 'subscription counts: a look failed')));

  /** Why a just-upgraded connection cannot stay, or undefined. */
  function judge(request: IncomingMessage, app: App | undefined, admitted: Place | Refusal): PusherErrorName | undefined {
    if (app === undefined) return 'app_unknown';
    if (!app.enabled) return 'app_disabled';
    const query = new URLSearchParams((request.url ?? '').split('?', 2)[1] ?? '');
    const protocol = query.get('protocol');
    if (protocol === null || protocol === '') return 'no_protocol';
    if (!/^\d{1,3}$/.test(protocol)) return 'bad_version';
    if (protocol !== '7') return 'unsupported_protocol';
    if (edge.origins.check(request.headers.origin, request.headers.host, app) === 'refused') return 'origin_not_allowed';
    if ('refused' in admitted) return 'over_capacity';
    return undefined;
  }

  function accept(request: IncomingMessage, raw: Duplex, head: Buffer, key: string, admitted: Place | Refusal): void {
    const app = apps.byKey(key);
    // Until the upgrade completes, the place goes back when the socket closes (ws answers a bad handshake itself).
    const place = 'refused' in admitted ? undefined : admitted;
    const releaseEarly = (): void => place?.release();
    raw.once('close', releaseEarly);
    wss.handleUpgrade(request, raw, head, (upgraded) => {
      raw.removeListener('close', releaseEarly);
      // A Pusher reconnect storm grows V8's young generation as a native one does (util/young-generation.ts).
      youngGenerationHold.opened();
      const socket = upgraded as PusherSocket;
      socket.context = context;
      socket.raw = raw;
      socket.lastActivity = node.now();
      let refusal: PusherErrorName | undefined = draining ? 'shutdown' : judge(request, app, admitted);
      // The app's cap counts its native connections too (edge.ts): its place holds the server's.
      const place = refusal === undefined && app !== undefined ? edge.appConnections.admit(app, 'pusher', admitted as Place) : undefined;
      if (place === undefined && refusal === undefined) refusal = 'app_over_quota';
      if (refusal !== undefined || app === undefined || place === undefined) {
        if (!('refused' in admitted)) admitted.release();
        // Not counted: fail() sends the error and closes.
        socket.app = app!;
        socket.fail(refusal ?? 'app_unknown');
        return;
      }
      socket.app = app;
      socket.socketId = newSocketId();
      places.set(socket, place);
      sockets.add(socket);
      if (diagnostics.pusherConnection.hasSubscribers) diagnostics.pusherConnection.publish({ node: node.id, app: app.id, code: undefined });
      socket.sendText(
        JSON.stringify({
          event: 'pusher:connection_established',
          data: JSON.stringify({ socket_id: socket.socketId, activity_timeout: config.pusher.activityTimeoutSeconds }),
        }),
      );
    });
  }

  return {
    otherUpgrade(request, raw, head, path) {
      const match = APP_PATH.exec(path);
      if (match === null) return false;
      if (draining || node.draining) {
        raw.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n');
        return true;
      }
      const key = match[1]!;
      const admitted = edge.connections.admit(limitKey(edge.address.ip(request)));
      if (admitted instanceof Promise) {
        void admitted.then((settled) => {
          if (raw.destroyed) {
            if (!('refused' in settled)) settled.release();
            return;
          }
          accept(request, raw, head, key, settled);
        });
      } else accept(request, raw, head, key, admitted);
      return true;
    },
    async drain(timeoutMs) {
      draining = true;
      for (const socket of sockets) socket.fail('shutdown');
      const deadline = Date.now() + timeoutMs;
      while (sockets.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      return sockets.size === 0;
    },
    close() {
      draining = true;
      clearInterval(timer);
      clearInterval(reconcileTimer);
      subscriptionCounts.close();
      for (const socket of [...sockets]) socket.terminate();
    },
  };
}
