/**
 * The primary's half of the cluster link. It owns the machine's streams and
 * presence (a MemoryBroker, or the sqlite engine's SqliteBroker, and a
 * MemoryPresenceStore), so offsets are
 * assigned in one place per channel; it forwards each publication, join and
 * leave only to the workers that subscribed to its channel; it relays
 * control commands to every worker (the sender included) and keeps the
 * revocations still in force for workers that start later (and, on the
 * sqlite engine, persists them so they outlive the primary); on the sqlite
 * engine it hands workers the API keys of its state file, at start and
 * whenever they change; and it routes session requests between workers.
 *
 * When a worker goes away its subscriptions end, its presence entries are
 * removed (with a leave for each join it had announced), session requests
 * waiting on it are answered `session_unknown`, and those it was waiting
 * for are aborted at their owners.
 *
 * Knows nothing of node:cluster: workers are pipes (packages/server/src/cluster/pipe.ts).
 */
import { MemoryBroker, MemoryPresenceStore } from '../broker/memory-broker.ts';
import { BrokerUnavailableError, type Broker } from '../broker/broker.ts';
import type { ControlCommand } from '../broker/control.ts';
import { apiErrors, type ClientInfo } from '@herald/protocol';
import type { SessionAnswer } from '../transports/http-connection.ts';
import type { ApiKeyConfig } from '../config/schema.ts';
import type { CallMessage, PrimaryMessage, WorkerMessage } from './ipc-messages.ts';
import type { Pipe } from './pipe.ts';
import { ADMIN_STORE_METHODS, MemoryAdminStore, type AdminStore } from '../console/admin-store.ts';
import { APP_STORE_METHODS, MemoryAppStore, type AppStore } from '../apps/app-store.ts';
import type { TransitionTracker } from '../webhooks/transitions.ts';
import type { WebhookEvent } from '../webhooks/events.ts';

/**
 * Webhooks in cluster mode: the primary sees every worker's subscribe and
 * presence calls, so it alone decides when a channel is occupied or vacated
 * and a member added or removed (one tracker, a source per worker; a
 * worker that goes away is dropped from it, once). Workers send the events
 * they see themselves (connections, publications) to `emit`.
 */
export interface PrimaryWebhooks {
  readonly tracker: TransitionTracker;
  emit(event: WebhookEvent): void;
}

export type WorkerPipe = Pipe<WorkerMessage, PrimaryMessage>;

export interface PrimaryHubOptions {
  /** How long revocations without an expiry of their own are replayed to new workers. */
  readonly revocationRetentionMs: number;
  readonly now?: () => number;
  readonly sweepIntervalMs?: number;
  /** Most revocations kept for replay; the oldest go first. */
  readonly maxRevocations?: number;
  /** The streams' broker (the sqlite engine's); a MemoryBroker when absent. The hub closes it. */
  readonly broker?: SweepingBroker;
  /** Where revocations are persisted (the sqlite engine's state file); nothing outlives the primary when absent. */
  readonly revocationStore?: RevocationStore;
  /** The store's API keys when the primary keeps them (sqlite engine; `setApiKeys` when they change); workers read api-keys.json when absent. */
  readonly apiKeys?: readonly ApiKeyConfig[];
  /** The console store workers reach over IPC (the sqlite engine's state file); a MemoryAdminStore when absent. The hub closes it. */
  readonly adminStore?: AdminStore;
  /** The app store workers reach over IPC (the sqlite engine's state file); a MemoryAppStore when absent. */
  readonly appStore?: AppStore;
  /** Webhooks (the primary owns the outbox); none when absent. */
  readonly webhooks?: PrimaryWebhooks | undefined;
}

export type SweepingBroker = Broker & { sweep(): void };

/** Durable revocations of the cluster: loaded at start (replayed to every worker), saved as they arrive. */
export interface RevocationStore {
  /** Revocations still in force, with the time each ends. */
  load(now: number): { readonly command: ControlCommand; readonly until: number }[];
  save(command: ControlCommand, until: number): void;
}

interface WorkerState {
  readonly id: number;
  readonly pipe: WorkerPipe;
  readonly channels: Set<string>;
  /** channel → client id → the presence entry this worker added. */
  readonly presence: Map<string, Map<string, ClientInfo>>;
  /** channel + NUL + client id → the join it announced (a leave is owed). */
  readonly joins: Map<string, { readonly channel: string; readonly info: ClientInfo }>;
  /** Forwards of this worker waiting for an answer: id → target worker. */
  readonly forwards: Map<number, number>;
  /** Requests of other workers this worker is answering: `origin:id`. */
  readonly serving: Set<string>;
  /** Non-engine messages (pong, ready, leaving), for the supervisor. */
  readonly other: ((message: WorkerMessage) => void) | undefined;
}

const unknownSession: SessionAnswer = {
  status: apiErrors.session_unknown.status,
  body: JSON.stringify({ error: { code: 'session_unknown', message: apiErrors.session_unknown.message } }),
};

export class PrimaryHub {
  /** Exposed for tests that move the stream clock (`sweep`). */
  readonly broker: SweepingBroker;
  readonly presence = new MemoryPresenceStore();
  readonly #workers = new Map<number, WorkerState>();
  readonly #subscribers = new Map<string, Set<number>>();
  #revocations: { readonly command: ControlCommand; readonly until: number }[] = [];
  readonly #retentionMs: number;
  readonly #maxRevocations: number;
  readonly #now: () => number;
  readonly #revocationStore: RevocationStore | undefined;
  #engineFailure: string | undefined;
  #apiKeys: readonly ApiKeyConfig[] | null;
  readonly adminStore: AdminStore;
  readonly appStore: AppStore;
  readonly #webhooks: PrimaryWebhooks | undefined;

  constructor(options: PrimaryHubOptions) {
    this.#webhooks = options.webhooks;
    this.#now = options.now ?? Date.now;
    this.#retentionMs = options.revocationRetentionMs;
    this.#maxRevocations = options.maxRevocations ?? 100_000;
    this.broker = options.broker ?? new MemoryBroker({ now: this.#now, ...(options.sweepIntervalMs === undefined ? {} : { sweepIntervalMs: options.sweepIntervalMs }) });
    this.#revocationStore = options.revocationStore;
    this.#apiKeys = options.apiKeys ?? null;
    this.adminStore = options.adminStore ?? new MemoryAdminStore();
    this.appStore = options.appStore ?? new MemoryAppStore();
    if (this.#revocationStore !== undefined) this.#revocations = this.#revocationStore.load(this.#now()).slice(-this.#maxRevocations);
    this.broker.setEventHandler({
      onPublication: (channel, publication) => this.#fanOut(channel, { type: 'publication', channel, publication }),
      onJoin: (channel, info) => this.#fanOut(channel, { type: 'join', channel, info }),
      onLeave: (channel, info) => this.#fanOut(channel, { type: 'leave', channel, info }),
      // The primary's own streams never lose data while it runs.
      onStreamReset: () => {},
    });
  }

  get workerCount(): number {
    return this.#workers.size;
  }

  /** Links a worker; `other` receives its non-engine messages (pong, ready, leaving). */
  attach(id: number, pipe: WorkerPipe, other?: (message: WorkerMessage) => void): void {
    const state: WorkerState = {
      id,
      pipe,
      channels: new Set(),
      presence: new Map(),
      joins: new Map(),
      forwards: new Map(),
      serving: new Set(),
      other,
    };
    this.#workers.set(id, state);
    pipe.onMessage((message) => this.#receive(state, message));
    pipe.onClose(() => this.detach(id));
  }

  /** Unlinks a worker and releases everything it held. Idempotent. */
  detach(id: number): void {
    const state = this.#workers.get(id);
    if (state === undefined) return;
    this.#workers.delete(id);
    // Its members leave, then its channels: member_removed before vacated, each once.
    this.#webhooks?.tracker.dropSource(String(id));
    for (const channel of state.channels) this.#unsubscribe(state, channel);
    for (const [channel, clients] of state.presence) for (const client of clients.keys()) void this.presence.remove(channel, client);
    for (const { channel, info } of state.joins.values()) void this.broker.publishLeave(channel, info);
    for (const [forward, target] of state.forwards) this.#workers.get(target)?.pipe.send({ type: 'session_abort', id: forward, origin: id });
    for (const key of state.serving) {
      const [origin, forward] = key.split(':').map(Number) as [number, number];
      const waiting = this.#workers.get(origin);
      if (waiting?.forwards.delete(forward) === true) waiting.pipe.send({ type: 'session_answer', id: forward, answer: unknownSession });
    }
  }

  /** The engine's health changed (sqlite state file refusing or accepting writes again): every worker's health follows. */
  setEngineHealth(healthy: boolean, reason: string): void {
    this.#engineFailure = healthy ? undefined : reason;
    for (const worker of this.#workers.values()) worker.pipe.send({ type: 'engine_health', healthy, reason });
  }

  /** Tells a worker that just started what the engine's health is, when it is not ok. */
  sendEngineHealth(id: number): void {
    if (this.#engineFailure !== undefined) this.#workers.get(id)?.pipe.send({ type: 'engine_health', healthy: false, reason: this.#engineFailure });
  }

  /** The store's API keys when the primary keeps them (sqlite engine), for a worker that starts now; null otherwise. */
  apiKeys(): readonly ApiKeyConfig[] | null {
    return this.#apiKeys;
  }

  /** New store keys (`herald keys` changed the state file): every worker gets the whole list. */
  setApiKeys(keys: readonly ApiKeyConfig[]): void {
    this.#apiKeys = keys;
    for (const worker of this.#workers.values()) worker.pipe.send({ type: 'api_keys', keys });
  }

  /** A control command of the primary's own (`herald apps` left a notice): every worker gets it, as one a worker sent. */
  control(command: ControlCommand): void {
    this.#remember(command);
    for (const worker of this.#workers.values()) worker.pipe.send({ type: 'control', command, from: 'primary' });
  }

  /** Revocations still in force, oldest first, for a worker that starts now. */
  revocations(): ControlCommand[] {
    this.#pruneRevocations();
    return this.#revocations.map((entry) => entry.command);
  }

  async close(): Promise<void> {
    for (const id of [...this.#workers.keys()]) this.detach(id);
    await this.broker.close();
    await this.presence.close();
    await this.adminStore.close();
  }

  #receive(state: WorkerState, message: WorkerMessage): void {
    switch (message.type) {
      case 'call':
        this.#call(state, message);
        return;
      case 'session_forward': {
        const target = this.#workers.get(message.target);
        if (target === undefined) {
          state.pipe.send({ type: 'session_answer', id: message.id, answer: unknownSession });
          return;
        }
        state.forwards.set(message.id, target.id);
        target.serving.add(`${state.id}:${message.id}`);
        target.pipe.send({ type: 'session_request', id: message.id, origin: state.id, exchange: message.exchange });
        return;
      }
      case 'session_abort': {
        if (state.forwards.delete(message.id)) {
          const target = this.#workers.get(message.target);
          if (target?.serving.delete(`${state.id}:${message.id}`) === true) target.pipe.send({ type: 'session_abort', id: message.id, origin: state.id });
        }
        return;
      }
      case 'session_answer': {
        if (!state.serving.delete(`${message.origin}:${message.id}`)) return;
        const origin = this.#workers.get(message.origin);
        if (origin?.forwards.delete(message.id) === true) origin.pipe.send({ type: 'session_answer', id: message.id, answer: message.answer });
        return;
      }
      case 'webhook':
        this.#webhooks?.emit(message.event);
        return;
      default:
        state.other?.(message);
    }
  }

  #call(state: WorkerState, message: CallMessage): void {
    let result: Promise<unknown>;
    try {
      result = this.#run(state, message);
    } catch (error) {
      result = Promise.reject(error as Error);
    }
    result.then(
      (value) => state.pipe.send({ type: 'result', id: message.id, ok: true, value: (value ?? null) as never }),
      (error: unknown) =>
        state.pipe.send({ type: 'result', id: message.id, ok: false, error: error instanceof Error ? error.message : String(error), unavailable: error instanceof BrokerUnavailableError }),
    );
  }

  /** Runs one call. The synchronous part (state changes) happens in message order. */
  async #run(state: WorkerState, message: CallMessage): Promise<unknown> {
    switch (message.op) {
      case 'publish': {
        const { channel, data, options } = message.args;
        return this.broker.publish(channel, data, options);
      }
      case 'publish_join': {
        const { channel, info } = message.args;
        state.joins.set(channel + '\0' + info.client, { channel, info });
        return this.broker.publishJoin(channel, info);
      }
      case 'publish_leave': {
        const { channel, info } = message.args;
        state.joins.delete(channel + '\0' + info.client);
        return this.broker.publishLeave(channel, info);
      }
      case 'subscribe': {
        const { channel } = message.args;
        if (state.channels.has(channel)) return null;
        state.channels.add(channel);
        let set = this.#subscribers.get(channel);
        if (set === undefined) {
          set = new Set();
          this.#subscribers.set(channel, set);
          void this.broker.subscribe(channel);
        }
        set.add(state.id);
        this.#webhooks?.tracker.subscribed(String(state.id), channel);
        return null;
      }
      case 'unsubscribe':
        this.#unsubscribe(state, message.args.channel);
        return null;
      case 'history': {
        const { channel, query, stream } = message.args;
        return this.broker.history(channel, query, stream);
      }
      case 'presence_add': {
        const { channel, info } = message.args;
        let clients = state.presence.get(channel);
        if (clients === undefined) {
          clients = new Map();
          state.presence.set(channel, clients);
        }
        if (!clients.has(info.client)) this.#webhooks?.tracker.joined(String(state.id), channel, info);
        clients.set(info.client, info);
        return this.presence.add(channel, info);
      }
      case 'presence_remove': {
        const { channel, clientId } = message.args;
        const clients = state.presence.get(channel);
        const info = clients?.get(clientId);
        if (clients !== undefined && info !== undefined) {
          clients.delete(clientId);
          if (clients.size === 0) state.presence.delete(channel);
          this.#webhooks?.tracker.left(String(state.id), channel, info);
        }
        return this.presence.remove(channel, clientId);
      }
      case 'presence_get':
        return Object.values(await this.presence.get(message.args.channel));
      case 'presence_stats':
        return this.presence.stats(message.args.channel);
      case 'control': {
        const { command, from } = message.args;
        this.#remember(command);
        for (const worker of this.#workers.values()) worker.pipe.send({ type: 'control', command, from });
        return null;
      }
      case 'admin_store': {
        const { method, params } = message.args;
        if (!ADMIN_STORE_METHODS.includes(method)) throw new Error(`unknown console store method ${String(method)}`);
        return (this.adminStore[method] as (...args: unknown[]) => Promise<unknown>).apply(this.adminStore, [...params]);
      }
      case 'app_store': {
        const { method, params } = message.args;
        if (!APP_STORE_METHODS.includes(method)) throw new Error(`unknown app store method ${String(method)}`);
        return (this.appStore[method] as (...args: unknown[]) => Promise<unknown>).apply(this.appStore, [...params]);
      }
    }
  }

  #unsubscribe(state: WorkerState, channel: string): void {
    if (!state.channels.delete(channel)) return;
    this.#webhooks?.tracker.unsubscribed(String(state.id), channel);
    const set = this.#subscribers.get(channel);
    if (set === undefined) return;
    set.delete(state.id);
    if (set.size === 0) {
      this.#subscribers.delete(channel);
      void this.broker.unsubscribe(channel);
    }
  }

  #fanOut(channel: string, message: PrimaryMessage): void {
    const set = this.#subscribers.get(channel);
    if (set === undefined) return;
    for (const id of set) this.#workers.get(id)?.pipe.send(message);
  }

  #remember(command: ControlCommand): void {
    let until: number;
    if (command.kind === 'revoke_token') until = command.expiresAt ?? this.#now() + this.#retentionMs;
    else if (command.kind === 'revoke_user') until = command.at + this.#retentionMs;
    else return;
    this.#pruneRevocations();
    this.#revocations.push({ command, until });
    this.#revocationStore?.save(command, until);
    if (this.#revocations.length > this.#maxRevocations) this.#revocations.shift();
  }

  #pruneRevocations(): void {
    const now = this.#now();
    if (this.#revocations.some((entry) => entry.until <= now)) this.#revocations = this.#revocations.filter((entry) => entry.until > now);
  }
}
