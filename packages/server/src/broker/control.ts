/**
 * Node-to-node control: the typed messages every engine carries between
 * Herald nodes (one union, defined once; engines only supply the pipe).
 * Used for what must hold cluster-wide: disconnect a user, revocations, and
 * periodic node snapshots behind the channel list and `info`.
 */

export interface NodeSnapshot {
  readonly id: string;
  readonly version: string;
  readonly connections: number;
  readonly authenticated: number;
  /** Local subscriber count per channel (bounded by the node). */
  readonly channels: Readonly<Record<string, number>>;
  /** Local connection count per user id, for cluster-wide per-user caps. */
  readonly users: Readonly<Record<string, number>>;
  readonly uptimeMs: number;
  /** The node's process as its watchdog last sampled it (packages/server/src/observability/watchdog.ts). */
  readonly process?: NodeProcessStats | undefined;
  /** Live counts for the console's overview (console/overview-stream.ts). */
  readonly live?: NodeLiveStats | undefined;
  /** When the snapshot was taken, epoch ms. */
  readonly at: number;
}

export interface NodeProcessStats {
  readonly eventLoopDelayMaxMs: number;
  readonly eventLoopDelayP99Ms: number;
  readonly heapUsedBytes: number;
  readonly liveHeapBytes: number;
  readonly rssBytes: number;
  /** Watchdog thresholds the process is over now (it is then not ready). */
  readonly over: readonly string[];
}

/** What the console's overview shows of a node, from its metrics exporter. */
export interface NodeLiveStats {
  /** Cluster mode: the worker's id in its primary. */
  readonly worker?: number | undefined;
  /** The machine's host name. */
  readonly host: string;
  /** `pusher`: the Pusher endpoint's sockets (absent in a snapshot of an older node). */
  readonly connections: { readonly websocket: number; readonly sse: number; readonly longPoll: number; readonly pusher?: number };
  readonly subscriptions: number;
  /** Publications accepted by this node since it started (a rate is the difference of two snapshots). */
  readonly publications: number;
  /** Publications written to connections of this node since it started. */
  readonly deliveries: number;
}

/** One connection as the console lists it (answered by the node that holds it). */
export interface ConnectionDetail {
  readonly client: string;
  readonly user: string;
  readonly transport: string;
  /** Id of the node (worker) holding it. */
  readonly node: string;
  /** Its subscriptions (at most MAX_DETAIL_CHANNELS). */
  readonly channels: readonly string[];
  readonly address: string;
  /** When it was opened, epoch ms. */
  readonly since: number;
}

export type ControlCommand =
  | { readonly kind: 'disconnect_user'; readonly user: string; readonly reconnect: boolean }
  | { readonly kind: 'revoke_token'; readonly tokenId: string; readonly expiresAt?: number | undefined }
  | { readonly kind: 'revoke_user'; readonly user: string; readonly at: number }
  | { readonly kind: 'node_snapshot'; readonly snapshot: NodeSnapshot }
  /** Who holds connections of `user`: every other node answers `connections_answer` to `from` (the asking node). */
  | { readonly kind: 'connections_query'; readonly id: string; readonly user: string }
  | { readonly kind: 'connections_answer'; readonly id: string; readonly to: string; readonly connections: readonly ConnectionDetail[] }
  /** API keys used on the sending node since its last report, with the last use (epoch ms): coalesced, at most one per node per interval (console/key-usage.ts). */
  | { readonly kind: 'key_usage'; readonly uses: readonly (readonly [name: string, at: number])[] }
  /** Pusher endpoint: close every connection of `user` signed in on app `app` (HTTP API terminate_connections; packages/server/src/pusher). */
  | { readonly kind: 'pusher_terminate'; readonly app: string; readonly user: string }
  /** An app was created, changed or removed in the store (console, `herald apps`): every node reloads the store's apps (apps/apps.ts); `id` names the app, '' when the sender does not know it (a cluster primary passing on `herald apps`'s notice). */
  | { readonly kind: 'apps_changed'; readonly id: string };

export interface ControlBus {
  /** Set once by the Node. `from` is the sending node's id. */
  setHandler(handler: (command: ControlCommand, from: string) => void): void;
  /**
   * Delivers a command to every node, this one included (at most once each).
   * Resolves when the engine has accepted it; rejects when it cannot (the
   * API then answers 503).
   */
  publish(command: ControlCommand): Promise<void>;
  close(): Promise<void>;
}

/** One process: commands loop straight back, synchronously. */
export class LocalControlBus implements ControlBus {
  readonly #nodeId: string;
  #handler: ((command: ControlCommand, from: string) => void) | undefined;

  constructor(nodeId: string) {
    this.#nodeId = nodeId;
  }

  get nodeId(): string {
    return this.#nodeId;
  }

  setHandler(handler: (command: ControlCommand, from: string) => void): void {
    this.#handler = handler;
  }

  async publish(command: ControlCommand): Promise<void> {
    this.#handler?.(command, this.#nodeId);
  }

  async close(): Promise<void> {}
}
