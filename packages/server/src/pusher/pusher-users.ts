/**
 * User authentication on the Pusher socket (docs/pusher.md, "User sign-in"):
 * `pusher:signin` with `user_data` signed by the app's auth endpoint, the
 * signed-in connections of each user (for `#server-to-user-{id}` and for
 * terminating a user's connections on every node, the control command
 * `pusher_terminate`), and the watchlist (online / offline events of the
 * users a signed-in user watches, across nodes; watchlist.ts).
 */
import { readJson } from '@herald/protocol/json';
import type { App } from '../apps/apps.ts';
import type { Config } from '../config/schema.ts';
import { userSigned, verifyAuth } from './channel-auth.ts';
import type { PusherSocket } from './pusher-connection.ts';

/** Most user ids in one watchlist (Pusher's limit is 100). */
export const MAX_WATCHLIST = 100;

/** Longest user id (Pusher's limit is 200). */
const MAX_USER_ID = 200;

/** A signed-in user's id names channels (`#server-to-user-{id}`, the watchlist's): Pusher's channel name characters. */
const userIdPattern = /^[A-Za-z0-9_\-=@,.;]+$/;

function validUserId(id: unknown): id is string {
  return typeof id === 'string' && id.length <= MAX_USER_ID && userIdPattern.test(id);
}

export interface Watchlists {
  /**
   * A connection signed in: it joins its user's online set on every node. Resolves once the
   * membership is stored (and its join published), or failed (logged); never rejects.
   */
  online(socket: PusherSocket): Promise<void>;
  /** A connection that is online (after `online`) follows its watchlist: `online` events of the watched users online now, then transitions. */
  watch(socket: PusherSocket): Promise<void>;
  /** A signed-in connection closed. */
  signedOut(socket: PusherSocket): void;
}

/** A signed-in user as the node counts users (Client.userKey's form): the default app's users are the native ones. */
function pusherUserKey(app: App, id: string): string {
  return app.channelPrefix + id;
}

export class PusherUsers {
  readonly #config: Config;
  /** Signed-in connections by `app id \n user id`. */
  readonly #byUser = new Map<string, Set<PusherSocket>>();
  /** Signed-in connections per user, by pusherUserKey (the node's user counts: Node.countOthers). */
  readonly #counts = new Map<string, number>();
  /** A user's connections on every node and protocol (Node.userConnectionCount). */
  readonly #userConnections: (key: string) => number;
  watchlists: Watchlists | undefined;

  constructor(config: Config, userConnections: (key: string) => number = () => 0) {
    this.#config = config;
    this.#userConnections = userConnections;
  }

  /** This node's signed-in connections per user (pusherUserKey). */
  userCounts(): IterableIterator<[string, number]> {
    return this.#counts.entries();
  }

  /** This node's signed-in connections of a user (pusherUserKey). */
  userCount(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  signin(socket: PusherSocket, body: unknown): void {
    const app = socket.app;
    if (!app.userAuthentication || typeof body !== 'object' || body === null) return socket.fail('signin_refused');
    const params = body as Record<string, unknown>;
    const userData = params['user_data'];
    if (typeof userData !== 'string' || !verifyAuth(app, params['auth'], userSigned(socket.socketId, userData))) return socket.fail('signin_refused');
    const read = readJson(userData, this.#config.limits.maxJsonDepth);
    const value = read.ok ? read.value : undefined;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return socket.fail('signin_refused');
    const record = value as Record<string, unknown>;
    const id = record['id'];
    if (!validUserId(id)) return socket.fail('signin_refused');
    if (socket.userId !== undefined && socket.userId !== id) return socket.fail('signin_refused');
    const watchlist = record['watchlist'];
    let watched: string[] | undefined;
    if (watchlist !== undefined) {
      if (!Array.isArray(watchlist) || watchlist.length > MAX_WATCHLIST || !watchlist.every(validUserId)) {
        return socket.fail('signin_refused');
      }
      watched = [...new Set(watchlist as string[])];
    }
    const first = socket.userId === undefined;
    if (first) {
      // limits.maxConnectionsPerUser, as for native connections: this user's connections everywhere, this one not yet among them.
      const key = pusherUserKey(app, id);
      if (this.#userConnections(key) >= this.#config.limits.maxConnectionsPerUser) return socket.fail('signin_user_limit');
      this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
    }
    socket.userId = id;
    if (first) {
      socket.watchlist = watched;
      const key = app.id + '\n' + id;
      let set = this.#byUser.get(key);
      if (set === undefined) {
        set = new Set();
        this.#byUser.set(key, set);
      }
      set.add(socket);
    }
    const success = JSON.stringify({ event: 'pusher:signin_success', data: JSON.stringify({ user_data: userData }) });
    const watchlists = this.watchlists;
    if (!first || watchlists === undefined) return socket.sendText(success);
    // signin_success once the user is online on every node: a watcher anywhere sees this connection
    // before anything the client does after it (its other connection leaving must not read as offline).
    void watchlists.online(socket).then(() => {
      if (socket.closing) return;
      socket.sendText(success);
      return watchlists.watch(socket);
    });
  }

  /** The connection closed. */
  closed(socket: PusherSocket): void {
    const id = socket.userId;
    if (id === undefined) return;
    const key = socket.app.id + '\n' + id;
    const set = this.#byUser.get(key);
    if (set?.delete(socket) === true && set.size === 0) this.#byUser.delete(key);
    const counted = pusherUserKey(socket.app, id);
    const left = (this.#counts.get(counted) ?? 1) - 1;
    if (left <= 0) this.#counts.delete(counted);
    else this.#counts.set(counted, left);
    this.watchlists?.signedOut(socket);
  }

  /** This node's connections signed in as `user` on app `appId`. */
  connections(appId: string, user: string): readonly PusherSocket[] {
    const set = this.#byUser.get(appId + '\n' + user);
    return set === undefined ? [] : [...set];
  }

  /** Closes this node's connections of the user (the control command pusher_terminate). */
  terminate(appId: string, user: string): number {
    const sockets = this.connections(appId, user);
    for (const socket of sockets) socket.fail('terminated');
    return sockets.length;
  }
}
