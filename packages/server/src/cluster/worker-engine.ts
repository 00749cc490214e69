/**
 * The cluster engine, a worker's half of the link to the primary
 * (packages/server/src/cluster/primary-hub.ts). Broker and presence calls go to the primary,
 * which owns every stream; publications of the channels this worker
 * subscribed to come back in offset order per channel. Control commands are
 * relayed by the primary to every worker, this one included. Session
 * requests for another worker's SSE or long-poll session are forwarded to
 * that worker and answered from there (SessionRouter).
 *
 * Every request to the primary has a deadline and an end: a call fails with
 * BrokerUnavailableError (the API answers 503 `unavailable`, a command reply
 * error 116) when the pipe closes or the primary does not answer within
 * `cluster.callTimeoutMs`; health is degraded while the pipe is closed. A
 * forwarded session request is answered by its owner, or `session_unknown`
 * when the owner goes away (packages/server/src/cluster/primary-hub.ts), or 503 `unavailable`
 * when the pipe closes or the deadline passes (the call timeout, beyond the
 * poll timeout for a held long poll).
 */
import { randomUUID } from 'node:crypto';
import { BrokerUnavailableError, type Broker, type BrokerEventHandler, type HistoryPage, type HistoryQuery, type PresenceStats, type PresenceStore, type PublishOptions, type StreamOptions } from '../broker/broker.ts';
import type { ControlBus, ControlCommand } from '../broker/control.ts';
import { MemoryRevocationList } from '../auth/revocation.ts';
import type { ApiKeyConfig, Config } from '../config/schema.ts';
import type { Engine, EngineHealth } from '../app/engine.ts';
import type { ClientInfo, StreamPosition } from '@herald/protocol';
import { apiErrorAnswer, type SessionAnswer, type SessionExchange, type SessionRouter } from '../transports/http-connection.ts';
import type { CallOp, EngineCalls, PrimaryMessage, WorkerMessage } from './ipc-messages.ts';
import type { Pipe } from './pipe.ts';
import { ADMIN_STORE_METHODS, type AdminStore } from '../console/admin-store.ts';
import { APP_STORE_METHODS, type AppStore } from '../apps/app-store.ts';
import type { NodeEvents } from '../core/node-events.ts';
import { namespaceOf, newEvent, type WebhookEventName } from '../webhooks/events.ts';

export type PrimaryPipe = Pipe<PrimaryMessage, WorkerMessage>;

export interface WorkerEngineOptions {
  readonly pipe: PrimaryPipe;
  /** This worker's number (node:cluster worker id); names the sessions it issues. */
  readonly worker: number;
  readonly config: Config;
  /** Revocations in force when the worker starts (from the primary's `start`). */
  readonly revocations?: readonly ControlCommand[];
  /** The store's API keys when the primary keeps them (sqlite engine; from `start`, then `api_keys`); null or absent: api-keys.json. */
  readonly apiKeys?: readonly ApiKeyConfig[] | null;
  readonly nodeId?: string;
  /** Messages that are not the engine's (ping, shutdown), for the worker's main. */
  readonly onOther?: (message: PrimaryMessage) => void;
  /** Longest wait for the primary's answer to a call; `cluster.callTimeoutMs` by default. */
  readonly callTimeoutMs?: number;
}

export interface WorkerEngine extends Engine {
  readonly sessionRouter: SessionRouter;
}

/** Control commands kept while the Node is not built yet. */
const MAX_EARLY_CONTROL = 1000;

/** Request/response over the pipe: every call is settled by its result, the pipe's end, or its deadline. */
class Link {
  readonly #pipe: PrimaryPipe;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void; timer: NodeJS.Timeout }>();
  #next = 1;

  constructor(pipe: PrimaryPipe, timeoutMs: number) {
    this.#pipe = pipe;
    this.#timeoutMs = timeoutMs;
    pipe.onClose(() => {
      for (const [id, entry] of this.#pending) {
        clearTimeout(entry.timer);
        this.#pending.delete(id);
        entry.reject(new BrokerUnavailableError('cluster primary unreachable'));
      }
    });
  }

  get up(): boolean {
    return !this.#pipe.closed;
  }

  call<K extends CallOp>(op: K, args: EngineCalls[K]['args']): Promise<EngineCalls[K]['result']> {
    if (this.#pipe.closed) return Promise.reject(new BrokerUnavailableError('cluster primary unreachable'));
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new BrokerUnavailableError(`cluster call ${op} timed out after ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      timer.unref();
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      this.#pipe.send({ type: 'call', id, op, args } as WorkerMessage);
    });
  }

  settle(message: Extract<PrimaryMessage, { type: 'result' }>): void {
    const entry = this.#pending.get(message.id);
    if (entry === undefined) return;
    this.#pending.delete(message.id);
    clearTimeout(entry.timer);
    if (message.ok) entry.resolve(message.value);
    else entry.reject(message.unavailable === true ? new BrokerUnavailableError(message.error) : new Error(message.error));
  }
}

/**
 * The console store of the primary, reached over the pipe: every method is
 * one call (no cache), so a session ended by any worker or by `herald
 * admin` beside the primary is refused by this worker's next request.
 */
function clusterAdminStore(link: Link): AdminStore {
  const store: Record<string, unknown> = {};
  for (const method of ADMIN_STORE_METHODS) {
    store[method] = async (...params: unknown[]) => {
            const result = await link.call('admin_store', { method, params });
      return result === null ? undefined : result;
    };
  }
  store['close'] = async () => {};
  return store as unknown as AdminStore;
}

/** The app store of the primary, reached over the pipe (one call per method, no cache). */
function clusterAppStore(link: Link): AppStore {
  const store: Record<string, unknown> = {};
  for (const method of APP_STORE_METHODS) {
    store[method] = async (...params: unknown[]) => {
      const result = await link.call('app_store', { method, params });
      return result === null ? undefined : result;
    };
  }
  store['close'] = async () => {};
  return store as unknown as AppStore;
}

class ClusterBroker implements Broker {
  readonly #link: Link;
  #handler: BrokerEventHandler | undefined;
  /** Channels subscribed at the primary (as far as this worker asked). */
  readonly #subscribed = new Set<string>();

  constructor(link: Link) {
    this.#link = link;
  }

  setEventHandler(handler: BrokerEventHandler): void {
    this.#handler = handler;
  }

  receive(message: Extract<PrimaryMessage, { type: 'publication' | 'join' | 'leave' }>): void {
    if (!this.#subscribed.has(message.channel)) return;
    const handler = this.#handler;
    if (handler === undefined) return;
    if (message.type === 'publication') handler.onPublication(message.channel, message.publication);
    else if (message.type === 'join') handler.onJoin(message.channel, message.info);
    else handler.onLeave(message.channel, message.info);
  }

  publish(channel: string, data: string, options: PublishOptions): Promise<StreamPosition> {
    return this.#link.call('publish', { channel, data, options });
  }

  async publishJoin(channel: string, info: ClientInfo): Promise<void> {
    await this.#link.call('publish_join', { channel, info });
  }

  async publishLeave(channel: string, info: ClientInfo): Promise<void> {
    await this.#link.call('publish_leave', { channel, info });
  }

  async subscribe(channel: string): Promise<void> {
    this.#subscribed.add(channel);
    await this.#link.call('subscribe', { channel });
  }

  async unsubscribe(channel: string): Promise<void> {
    this.#subscribed.delete(channel);
    await this.#link.call('unsubscribe', { channel });
  }

  history(channel: string, query: HistoryQuery, stream: StreamOptions): Promise<HistoryPage> {
    return this.#link.call('history', { channel, query, stream });
  }

  async close(): Promise<void> {}
}

class ClusterPresence implements PresenceStore {
  readonly #link: Link;

  constructor(link: Link) {
    this.#link = link;
  }

  async add(channel: string, info: ClientInfo): Promise<void> {
    await this.#link.call('presence_add', { channel, info });
  }

  async remove(channel: string, clientId: string): Promise<void> {
    await this.#link.call('presence_remove', { channel, clientId });
  }

  async get(channel: string): Promise<Record<string, ClientInfo>> {
    const members = await this.#link.call('presence_get', { channel });
    const result: Record<string, ClientInfo> = Object.create(null) as Record<string, ClientInfo>;
    for (const info of members) result[info.client] = info;
    return result;
  }

  stats(channel: string): Promise<PresenceStats> {
    return this.#link.call('presence_stats', { channel });
  }

  async close(): Promise<void> {}
}

class ClusterControlBus implements ControlBus {
  readonly #link: Link;
  readonly #nodeId: string;
  #handler: ((command: ControlCommand, from: string) => void) | undefined;
  #early: { command: ControlCommand; from: string }[] = [];

  constructor(link: Link, nodeId: string) {
    this.#link = link;
    this.#nodeId = nodeId;
  }

  setHandler(handler: (command: ControlCommand, from: string) => void): void {
    this.#handler = handler;
    const early = this.#early;
    this.#early = [];
    for (const { command, from } of early) handler(command, from);
  }

  receive(command: ControlCommand, from: string): void {
    if (this.#handler !== undefined) {
      this.#handler(command, from);
      return;
    }
    this.#early.push({ command, from });
    if (this.#early.length > MAX_EARLY_CONTROL) this.#early.shift();
  }

  async publish(command: ControlCommand): Promise<void> {
    await this.#link.call('control', { command, from: this.#nodeId });
  }

  async close(): Promise<void> {}
}

/** Secrets issued by worker N are `N.` followed by 22 base64url characters (128 random bits). */
const SECRET = /^([0-9]{1,9})\.[A-Za-z0-9_-]{22}$/;

class ClusterSessions implements SessionRouter {
  readonly prefix: string;
  readonly #worker: number;
  readonly #pipe: PrimaryPipe;
  readonly #callTimeoutMs: number;
  readonly #pollTimeoutMs: number;
  readonly #waiting = new Map<number, (answer: SessionAnswer) => void>();
  readonly #serving = new Map<string, AbortController>();
  #handler: ((exchange: SessionExchange, signal: AbortSignal) => Promise<SessionAnswer>) | undefined;
  #next = 1;

  /** A forward is answered within `callTimeoutMs`, beyond `pollTimeoutMs` for a poll (held at the owner). */
  constructor(pipe: PrimaryPipe, worker: number, callTimeoutMs: number, pollTimeoutMs: number) {
    this.#pipe = pipe;
    this.#worker = worker;
    this.prefix = `${worker}.`;
    this.#callTimeoutMs = callTimeoutMs;
    this.#pollTimeoutMs = pollTimeoutMs;
    pipe.onClose(() => {
      for (const finish of [...this.#waiting.values()]) finish(apiErrorAnswer('unavailable'));
      for (const controller of this.#serving.values()) controller.abort();
      this.#serving.clear();
    });
  }

  isRemote(secret: string): boolean {
    const match = SECRET.exec(secret);
    return match !== null && Number(match[1]) !== this.#worker;
  }

  forward(exchange: SessionExchange, signal: AbortSignal): Promise<SessionAnswer> {
    const target = Number(SECRET.exec(exchange.session)?.[1]);
    if (this.#pipe.closed || !Number.isInteger(target)) return Promise.resolve(apiErrorAnswer('unavailable'));
    const id = this.#next++;
    return new Promise((resolve) => {
      const finish = (answer: SessionAnswer): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', abandon);
        this.#waiting.delete(id);
        resolve(answer);
      };
      const abandon = (): void => {
        this.#pipe.send({ type: 'session_abort', id, target });
        finish(apiErrorAnswer('unavailable'));
      };
      const timer = setTimeout(abandon, exchange.op === 'poll' ? this.#pollTimeoutMs + this.#callTimeoutMs : this.#callTimeoutMs);
      timer.unref();
      this.#waiting.set(id, finish);
      if (signal.aborted) {
        abandon();
        return;
      }
      signal.addEventListener('abort', abandon, { once: true });
      this.#pipe.send({ type: 'session_forward', id, target, exchange });
    });
  }

  serve(handler: (exchange: SessionExchange, signal: AbortSignal) => Promise<SessionAnswer>): void {
    this.#handler = handler;
  }

  answered(id: number, answer: SessionAnswer): void {
    this.#waiting.get(id)?.(answer);
  }

  request(id: number, origin: number, exchange: SessionExchange): void {
    const key = `${origin}:${id}`;
    const controller = new AbortController();
    this.#serving.set(key, controller);
    const handler = this.#handler;
    const answer = handler === undefined ? Promise.resolve(apiErrorAnswer('session_unknown')) : handler(exchange, controller.signal);
    void answer
      .catch(() => apiErrorAnswer('internal'))
      .then((result) => {
        if (this.#serving.get(key) !== controller) return;
        this.#serving.delete(key);
        this.#pipe.send({ type: 'session_answer', id, origin, answer: result });
      });
  }

  abort(id: number, origin: number): void {
    const key = `${origin}:${id}`;
    const controller = this.#serving.get(key);
    if (controller === undefined) return;
    this.#serving.delete(key);
    controller.abort();
  }
}

export interface WorkerSessionOptions {
  readonly pipe: PrimaryPipe;
  /** This worker's number (node:cluster worker id); names the sessions it issues. */
  readonly worker: number;
  readonly config: Config;
  /** Messages that are not about sessions (ping, shutdown, metrics), for the worker's main. */
  readonly onOther?: (message: PrimaryMessage) => void;
  readonly callTimeoutMs?: number;
}

/**
 * Session routing alone, for a worker whose engine is not the primary's
 * (the redis engine: each worker is a Redis node of its own, and only SSE
 * and long-poll session requests still travel through the primary, between
 * the workers of one machine). Takes over the pipe's message handler; what
 * it does not handle goes to `onOther`.
 */
export function createWorkerSessions(options: WorkerSessionOptions): SessionRouter {
  const { pipe, config } = options;
  const sessions = new ClusterSessions(pipe, options.worker, options.callTimeoutMs ?? config.cluster.callTimeoutMs, config.longPoll.pollTimeoutMs);
  pipe.onMessage((message) => {
    if (!routeSessionMessage(sessions, message)) options.onOther?.(message);
  });
  return sessions;
}

/** Hands a session request, answer or abort to the worker's sessions; false for any other message. */
function routeSessionMessage(sessions: ClusterSessions, message: PrimaryMessage): boolean {
  switch (message.type) {
    case 'session_request':
      sessions.request(message.id, message.origin, message.exchange);
      return true;
    case 'session_answer':
      sessions.answered(message.id, message.answer);
      return true;
    case 'session_abort':
      sessions.abort(message.id, message.origin);
      return true;
    default:
      return false;
  }
}

/**
 * Builds the engine of one worker on its pipe to the primary. Takes over the
 * pipe's message handler; what it does not handle goes to `onOther`.
 */
export function createWorkerEngine(options: WorkerEngineOptions): WorkerEngine {
  const { pipe, config } = options;
  const nodeId = options.nodeId ?? randomUUID();
  const callTimeoutMs = options.callTimeoutMs ?? config.cluster.callTimeoutMs;
  const link = new Link(pipe, callTimeoutMs);
  const broker = new ClusterBroker(link);
  const presence = new ClusterPresence(link);
  const control = new ClusterControlBus(link, nodeId);
  const sessions = new ClusterSessions(pipe, options.worker, callTimeoutMs, config.longPoll.pollTimeoutMs);
  const revocations = new MemoryRevocationList({ retentionMs: config.auth.revocationRetentionMs });
  for (const command of options.revocations ?? []) {
    if (command.kind === 'revoke_token') revocations.revokeToken(command.tokenId, command.expiresAt);
    else if (command.kind === 'revoke_user') revocations.revokeUser(command.user, command.at);
  }
  /** Set while the primary's engine refuses writes (sqlite engine). */
  let primaryEngineFailure: string | undefined;
  /** The primary's store keys; a new array whenever they change (the verifier rebuilds on a new reference). */
  let apiKeys = options.apiKeys ?? null;
  pipe.onMessage((message) => {
    switch (message.type) {
      case 'result':
        link.settle(message);
        return;
      case 'engine_health':
        primaryEngineFailure = message.healthy ? undefined : message.reason;
        return;
      case 'api_keys':
        apiKeys = message.keys;
        return;
      case 'publication':
      case 'join':
      case 'leave':
        broker.receive(message);
        return;
      case 'control':
        control.receive(message.command, message.from);
        return;
      default:
        if (!routeSessionMessage(sessions, message)) options.onOther?.(message);
    }
  });
  return {
    name: 'cluster',
    nodeId,
    broker,
    presence,
    control,
    revocations,
    sessionRouter: sessions,
    webhookEvents: config.webhooks.endpoints.length === 0 ? undefined : workerWebhookEvents(pipe, config),
    // Apps (of the config or the store) may have webhooks: the primary's dispatcher takes the Pusher socket's events.
    webhookEmit: (event) => pipe.send({ type: 'webhook', event }),
    apiKeys: apiKeys === null ? undefined : { current: () => apiKeys ?? [] },
    adminStore: clusterAdminStore(link),
    appStore: clusterAppStore(link),
    health: (): EngineHealth => {
      if (!link.up) return { status: 'degraded', reason: 'cluster primary unreachable' };
      return primaryEngineFailure === undefined ? { status: 'ok' } : { status: 'degraded', reason: primaryEngineFailure };
    },
    close: async () => {},
  };
}

/**
 * Webhooks from a worker: connections and publications go to the primary
 * as events (it owns the outbox); channel and member transitions are the
 * primary's to decide from the subscribe and presence calls it serves.
 */
function workerWebhookEvents(pipe: PrimaryPipe, config: Config): NodeEvents {
  const wanted = new Set<WebhookEventName>(config.webhooks.endpoints.flatMap((endpoint) => endpoint.events as WebhookEventName[]));
  const publications = new Set(config.webhooks.publicationNamespaces);
  const nothing = (): void => {};
  return {
    clientConnected: (info, transport) => {
      if (wanted.has('client_connected')) pipe.send({ type: 'webhook', event: newEvent('client_connected', Date.now(), { client: info.client, user: info.user, transport }) });
    },
    clientDisconnected: (info, transport, code, reason) => {
      if (wanted.has('client_disconnected')) pipe.send({ type: 'webhook', event: newEvent('client_disconnected', Date.now(), { client: info.client, user: info.user, transport, code, reason }) });
    },
    published: (channel, dataJson, info) => {
      if (!wanted.has('publication') || !publications.has(namespaceOf(channel))) return;
      pipe.send({ type: 'webhook', event: newEvent('publication', Date.now(), { channel, data: JSON.parse(dataJson) as unknown, ...(info === undefined ? {} : { client: info.client, user: info.user }) }) });
    },
    channelSubscribed: nothing,
    channelUnsubscribed: nothing,
    presenceJoined: nothing,
    presenceLeft: nothing,
  };
}
