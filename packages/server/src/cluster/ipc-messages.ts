/**
 * Every message between the cluster primary and its workers, defined once.
 * On the memory and sqlite engines the primary owns the streams and presence (one MemoryBroker, or the
 * sqlite engine's SqliteBroker, and one MemoryPresenceStore for the whole
 * machine); workers reach them with
 * `call`s, receive publications of the channels they subscribed to, relay
 * control commands, and forward HTTP session requests (SSE and long-poll
 * commands, polls) to the worker that owns the session.
 *
 * Guarantees of the pipe (node:cluster IPC, or a MessagePort in tests):
 * messages arrive in the order sent, each once, until the pipe closes. The
 * primary handles one worker's messages in order; so a worker's `subscribe`
 * is in effect at the primary before its next `history` is read, and a
 * publication reaches the publishing worker before the `result` of its
 * `publish`.
 *
 * On the redis engine each worker is a Redis node of its own: no `call`,
 * `publication`, `join`, `leave` or `control` travels on the pipe, only
 * supervision, metrics, readiness (`engine_state`), session routing, and
 * what each worker holds in Redis presence (`presence_track`), so that a
 * live worker cleans up after one that died (`presence_orphans`).
 */
import type { HistoryPage, HistoryQuery, PresenceStats, PublishOptions, StoredPublication, StreamOptions } from '../broker/broker.ts';
import type { ControlCommand } from '../broker/control.ts';
import type { ClientInfo, StreamPosition } from '@herald/protocol';
import type { ApiKeyConfig, Config } from '../config/schema.ts';
import type { SessionAnswer, SessionExchange } from '../transports/http-connection.ts';
import type { NotReadyReason } from '../app/health.ts';
import type { PresenceOrphans, PresenceTrack } from './presence-mirror.ts';
import type { AdminStoreMethod } from '../console/admin-store.ts';
import type { AppStoreMethod } from '../apps/app-store.ts';
import type { WebhookEvent } from '../webhooks/events.ts';

/** What a worker asks of the primary: arguments and result per operation. */
export interface EngineCalls {
  publish: { readonly args: { readonly channel: string; readonly data: string; readonly options: PublishOptions }; readonly result: StreamPosition };
  publish_join: { readonly args: { readonly channel: string; readonly info: ClientInfo }; readonly result: null };
  publish_leave: { readonly args: { readonly channel: string; readonly info: ClientInfo }; readonly result: null };
  subscribe: { readonly args: { readonly channel: string }; readonly result: null };
  unsubscribe: { readonly args: { readonly channel: string }; readonly result: null };
  history: { readonly args: { readonly channel: string; readonly query: HistoryQuery; readonly stream: StreamOptions }; readonly result: HistoryPage };
  presence_add: { readonly args: { readonly channel: string; readonly info: ClientInfo }; readonly result: null };
  presence_remove: { readonly args: { readonly channel: string; readonly clientId: string }; readonly result: null };
  /** Members as a list: a record keyed by client id would not survive cloning with ids like `__proto__`. */
  presence_get: { readonly args: { readonly channel: string }; readonly result: readonly ClientInfo[] };
  presence_stats: { readonly args: { readonly channel: string }; readonly result: PresenceStats };
  /** Relayed to every worker, the sender included; answered once relayed. */
  control: { readonly args: { readonly command: ControlCommand; readonly from: string }; readonly result: null };
  /** A method of the console store the primary keeps (console/admin-store.ts): its result, `undefined` sent as null. */
  admin_store: { readonly args: { readonly method: AdminStoreMethod; readonly params: readonly unknown[] }; readonly result: unknown };
  /** A method of the app store the primary keeps (apps/app-store.ts): its result, `undefined` sent as null. */
  app_store: { readonly args: { readonly method: AppStoreMethod; readonly params: readonly unknown[] }; readonly result: unknown };
}

export type CallOp = keyof EngineCalls;

export type CallMessage = {
  readonly [K in CallOp]: { readonly type: 'call'; readonly id: number; readonly op: K; readonly args: EngineCalls[K]['args'] };
}[CallOp];

/** Worker → primary. */
export type WorkerMessage =
  | CallMessage
  /** The worker listens on its pipe: the primary answers with `start`. */
  | { readonly type: 'hello' }
  /** The worker's server listens; `nodeId` is its Node id (as in `info`). */
  | { readonly type: 'ready'; readonly nodeId: string; readonly port: number; readonly adminPort: number }
  | { readonly type: 'pong'; readonly seq: number }
  /** A session request for the session of worker `target`. */
  | { readonly type: 'session_forward'; readonly id: number; readonly target: number; readonly exchange: SessionExchange }
  /** The HTTP request behind forward `id` went away (a held poll whose client left). */
  | { readonly type: 'session_abort'; readonly id: number; readonly target: number }
  /** The answer of this worker to request `id` of worker `origin`. */
  | { readonly type: 'session_answer'; readonly id: number; readonly origin: number; readonly answer: SessionAnswer }
  /** The worker drains on its own (it got SIGTERM): replace it, this is no crash. */
  | { readonly type: 'leaving' }
  /** A scrape of this worker's /metrics: the primary answers with every worker's metrics aggregated. */
  | { readonly type: 'metrics_request'; readonly id: number }
  /** This worker's metrics (prom-client `getMetricsAsJSON`) for collection `id`. */
  | { readonly type: 'metrics_part'; readonly id: number; readonly metrics: readonly object[] }
  /** The worker's watchdog thresholds changed; `over` is what it is over now (empty: none). */
  | { readonly type: 'watchdog'; readonly over: readonly string[] }
  /** Redis engine (each worker a node of its own): the worker's engine became degraded (why) or healthy again (null). */
  | { readonly type: 'engine_state'; readonly degraded: string | null }
  /** Redis engine: a presence entry or a join this worker now holds (`info`) or no longer holds (null); cleaned up by another worker if it dies. */
  | ({ readonly type: 'presence_track' } & PresenceTrack)
  /** The worker's delivery probe (worker → primary → worker) failed, with the reason, or passes again (`failure` absent). */
  | { readonly type: 'delivery_probe'; readonly failure?: string | undefined }
  /**
   * This worker's counters and histograms so far (prom-client JSON, gauges
   * left out): sent every `cluster.heartbeatIntervalMs` and once more after
   * its drain, so that the primary keeps them once the worker is gone
   * (counter-ledger.ts).
   */
  | { readonly type: 'counters'; readonly metrics: readonly object[] }
  /**
   * Webhooks: an event the worker saw (client connected or disconnected, a
   * publication), for the primary's outbox. Channel and member transitions
   * are not sent: the primary derives them from the subscribe and presence
   * calls of every worker (webhooks/transitions.ts).
   */
  | { readonly type: 'webhook'; readonly event: WebhookEvent };

/** Primary → worker. */
export type PrimaryMessage =
  /**
   * First message: what to run. `revocations` replays the revocations still
   * in force; `apiKeys` are the store's API keys when the primary keeps them
   * (sqlite engine), null when the worker reads api-keys.json itself.
   */
  | { readonly type: 'start'; readonly worker: number; readonly config: Config; readonly revocations: readonly ControlCommand[]; readonly apiKeys: readonly ApiKeyConfig[] | null }
  /** The store's API keys changed (`herald keys` wrote the primary's state file): the whole new list. */
  | { readonly type: 'api_keys'; readonly keys: readonly ApiKeyConfig[] }
  | { readonly type: 'result'; readonly id: number; readonly ok: true; readonly value: EngineCalls[CallOp]['result'] }
  /** `unavailable`: the engine could not serve the call (the worker answers 503 / reply 116), as BrokerUnavailableError. */
  | { readonly type: 'result'; readonly id: number; readonly ok: false; readonly error: string; readonly unavailable?: boolean }
  /** A publication of a channel this worker subscribed to; per channel in offset order. */
  | { readonly type: 'publication'; readonly channel: string; readonly publication: StoredPublication }
  | { readonly type: 'join' | 'leave'; readonly channel: string; readonly info: ClientInfo }
  | { readonly type: 'control'; readonly command: ControlCommand; readonly from: string }
  | { readonly type: 'ping'; readonly seq: number }
  /** The primary's engine (the sqlite state file) stopped or resumed accepting writes: the worker's health follows. */
  | { readonly type: 'engine_health'; readonly healthy: boolean; readonly reason: string }
  /** Request `id` of worker `origin` for a session of this worker. */
  | { readonly type: 'session_request'; readonly id: number; readonly origin: number; readonly exchange: SessionExchange }
  | { readonly type: 'session_abort'; readonly id: number; readonly origin: number }
  /** The answer to this worker's forward `id`. */
  | { readonly type: 'session_answer'; readonly id: number; readonly answer: SessionAnswer }
  /** Send your metrics (`metrics_part`) for collection `id`. */
  | { readonly type: 'metrics_collect'; readonly id: number }
  /** The aggregate of every worker's metrics (Prometheus text), for this worker's `metrics_request` `id`. */
  | { readonly type: 'metrics_answer'; readonly id: number; readonly text: string }
  /** Why workers of the cluster are not ready (readiness reflects every worker); sent when it changes. */
  | { readonly type: 'cluster_readiness'; readonly notReady: readonly NotReadyReason[] }
  /** Redis engine: a worker died holding these: remove the entries from Redis presence and announce the leaves. */
  | { readonly type: 'presence_orphans'; readonly from: number; readonly orphans: PresenceOrphans }
  /** Drain (clients closed with 3001) within `drainTimeoutMs`, then exit 0. */
  | { readonly type: 'shutdown'; readonly drainTimeoutMs: number };

/** Exit code of a worker that could not start (invalid configuration, listener refused): not retried blindly. */
export const EXIT_CANNOT_START = 3;

/**
 * On the wire, messages travel in batches (one IPC write per event-loop
 * turn instead of one per message), tagged so that node:cluster's own
 * internal messages are never mistaken for ours.
 */
export interface Envelope<M> {
  readonly herald: 1;
  readonly batch: readonly M[];
}

export function isEnvelope<M>(value: unknown): value is Envelope<M> {
  return typeof value === 'object' && value !== null && (value as { herald?: unknown }).herald === 1 && Array.isArray((value as { batch?: unknown }).batch);
}
