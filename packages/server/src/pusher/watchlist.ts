/**
 * The watchlist (docs/pusher.md, "Watchlist"): a signed-in user's
 * `user_data.watchlist` names users whose coming online and going offline
 * it hears about (`pusher_internal:watchlist_events`), across nodes.
 *
 * Each app's user U has an internal presence channel `#online-U` (not a
 * name either protocol can subscribe to): every connection signed in as U
 * is a member, on whatever node it is. A node with watchers of U holds one
 * tap on that channel, which reads the members once and then follows every
 * node's joins and leaves: U is online while it has at least one
 * connection, and watchers hear `online` at the first and `offline` at the
 * last, once per transition.
 */
import type { ClientInfo } from '@herald/protocol';
import { appChannel, type App } from '../apps/apps.ts';
import type { StoredPublication } from '../broker/broker.ts';
import type { ChannelTap } from '../core/hub.ts';
import type { PusherSocket } from './pusher-connection.ts';
import type { PusherContext } from './pusher-context.ts';
import type { Watchlists } from './pusher-users.ts';

function onlineChannel(app: App, user: string): string {
  return appChannel(app, '#online-' + user);
}

function watchlistEvent(name: 'online' | 'offline', userIds: readonly string[]): string {
  return JSON.stringify({ event: 'pusher_internal:watchlist_events', data: JSON.stringify({ events: [{ name, user_ids: userIds }] }) });
}

class WatchTap implements ChannelTap {
  readonly internal: string;
  readonly user: string;
  readonly watchers = new Set<PusherSocket>();
  /** The user's connections (socket ids) on every node → when this node learnt of each (ms). */
  readonly clients = new Map<string, number>();
  ready: Promise<void> | undefined;
  holds = 0;
  #pending: [kind: 'join' | 'leave', info: ClientInfo][] | undefined;

  constructor(internal: string, user: string) {
    this.internal = internal;
    this.user = user;
  }

  get size(): number {
    return this.watchers.size;
  }

  deliverPublication(_channel: string, _publication: StoredPublication): number {
    return 0;
  }

  deliverJoinLeave(kind: 'join' | 'leave', _channel: string, info: ClientInfo): void {
    if (this.#pending !== undefined) this.#pending.push([kind, info]);
    else this.#apply(kind, info, true);
  }

  reset(): void {}

  async load(read: () => Promise<Record<string, ClientInfo>>): Promise<void> {
    this.#pending = [];
    try {
      for (const info of Object.values(await read())) this.clients.set(info.client, Date.now());
    } finally {
      const pending = this.#pending;
      this.#pending = undefined;
      for (const [kind, info] of pending) this.#apply(kind, info, false);
    }
  }

  /** Drops connections the presence store no longer has (a dead node's; see PusherChannel.reconcile); offline when none is left. */
  async reconcile(read: () => Promise<Record<string, ClientInfo>>): Promise<void> {
    if (this.#pending !== undefined || this.clients.size === 0) return;
    const startedAt = Date.now();
    const present = await read();
    for (const [client, since] of [...this.clients]) {
      if (since < startedAt && !(client in present)) this.#apply('leave', { client, user: this.user }, true);
    }
  }

  #apply(kind: 'join' | 'leave', info: ClientInfo, tell: boolean): void {
    const before = this.clients.size;
    if (kind === 'join') {
      if (!this.clients.has(info.client)) this.clients.set(info.client, Date.now());
    } else this.clients.delete(info.client);
    const after = this.clients.size;
    if (!tell || (before === 0) === (after === 0)) return;
    const text = watchlistEvent(after > 0 ? 'online' : 'offline', [this.user]);
    for (const watcher of this.watchers) watcher.sendText(text);
  }
}

export function createWatchlists(context: PusherContext): Watchlists & { reconcile(): Promise<void> } {
  const taps = new Map<string, WatchTap>();
  const node = context.node;

  function release(tap: WatchTap): void {
    tap.holds--;
    if (tap.holds > 0 || tap.watchers.size > 0 || taps.get(tap.internal) !== tap) return;
    taps.delete(tap.internal);
    node.hub.removeTap(tap.internal, tap).catch(() => undefined);
  }

  function acquire(internal: string, user: string): WatchTap {
    let tap = taps.get(internal);
    if (tap === undefined) {
      const created = new WatchTap(internal, user);
      tap = created;
      taps.set(internal, created);
      created.ready = (async () => {
        await node.hub.addTap(internal, created);
        await created.load(() => node.members(internal));
      })();
      created.ready.catch(() => {
        if (taps.get(internal) === created) taps.delete(internal);
        void node.hub.removeTap(internal, created).catch(() => undefined);
      });
    }
    tap.holds++;
    return tap;
  }

  return {
    async reconcile() {
      for (const tap of [...taps.values()]) {
        await tap.reconcile(() => node.members(tap.internal)).catch(() => undefined);
      }
    },
    async online(socket) {
      const app = socket.app;
      const self: ClientInfo = { client: socket.socketId, user: socket.userId! };
      try {
        await node.addMember(onlineChannel(app, self.user), self, true, true);
      } catch (error) {
        context.logger.warn({ err: error, app: app.id }, 'pusher user not marked online');
      }
      // Closed meanwhile: signedOut ran before the member was added.
      if (socket.closing) node.removeMember(onlineChannel(app, self.user), self, true, true).catch(() => undefined);
    },
    async watch(socket) {
      const app = socket.app;
      const watched = socket.watchlist;
      if (watched === undefined || watched.length === 0) return;
      const held = watched.map((user) => acquire(onlineChannel(app, user), user));
      const online: string[] = [];
      for (const tap of held) {
        try {
          await tap.ready;
          if (!socket.closing) {
            tap.watchers.add(socket);
            if (tap.clients.size > 0) online.push(tap.user);
          }
        } catch (error) {
          context.logger.warn({ err: error, app: app.id }, 'pusher watchlist not followed');
        }
        release(tap);
      }
      if (online.length > 0 && !socket.closing) socket.sendText(watchlistEvent('online', online));
    },
    signedOut(socket) {
      const app = socket.app;
      const user = socket.userId!;
      node.removeMember(onlineChannel(app, user), { client: socket.socketId, user }, true, true).catch(() => undefined);
      for (const watchedUser of socket.watchlist ?? []) {
        const tap = taps.get(onlineChannel(app, watchedUser));
        if (tap === undefined || !tap.watchers.delete(socket)) continue;
        tap.holds++;
        release(tap);
      }
    },
  };
}
