/**
 * Every diagnostics channel Herald publishes, in one place. Core code
 * publishes; exporters (metrics, logs) subscribe; the core never imports an
 * exporter. Publishing costs nothing when nobody subscribes.
 *
 * Channels are process-wide, and a process may run several Nodes (tests,
 * embedding): every event names its Node (`node`, the Node's id), and an
 * exporter keeps the events of its own Node.
 */
import { channel } from 'node:diagnostics_channel';
import type { TransportKind } from '../core/transport.ts';

export interface NodeEvent {
  /** Id of the Node the event happened on. */
  readonly node: string;
}

export interface ConnectionOpenedEvent extends NodeEvent {
  readonly transport: TransportKind;
}
export interface ConnectionClosedEvent extends NodeEvent {
  readonly transport: TransportKind;
  readonly code: number;
  readonly reason: string;
}
export interface SubscriptionEvent extends NodeEvent {
  readonly transport: TransportKind;
}
export interface PublicationEvent extends NodeEvent {
  readonly channel: string;
  /** Where it came from. */
  readonly source: 'api' | 'client';
}
export interface DeliveryEvent extends NodeEvent {
  /** Connections the publication was written to on this node. */
  readonly count: number;
}
export interface ConflatedEvent extends NodeEvent {
  /** Publications replaced by a newer one of their key for a connection that was behind (never written to it). */
  readonly count: number;
}
export interface CommandErrorEvent extends NodeEvent {
  readonly method: string;
  readonly code: number;
}

/** One hook call (hooks/proxy-hooks.ts on hookCall, hooks/javascript-hooks.ts on hookSandbox): its event, how it ended, how long it took. */
export interface HookCallEvent extends NodeEvent {
  readonly event: string;
  readonly outcome: 'allow' | 'deny' | 'failed';
  /** Why it failed (timeout, status_502, answer_schema, in_flight_limit; memory, stack, threw, queue_full, …). */
  readonly reason: string | undefined;
  readonly ms: number;
}

export interface WebhookOutcomeEvent extends NodeEvent {
  readonly endpoint: string;
  /** delivered (2xx), retried (a failed attempt), dead (a dead letter), dropped (outbox full or not writable). */
  readonly outcome: 'delivered' | 'retried' | 'dead' | 'dropped';
  readonly count: number;
}

/** One request of the Pusher HTTP API (pusher/pusher-api.ts), answered. */
export interface PusherApiEvent extends NodeEvent {
  /** The app's id; '' when the path named no app. */
  readonly app: string;
  readonly route: string;
  readonly status: number;
}

/** A Pusher socket (pusher/pusher-endpoint.ts) of an app opened (`code` undefined) or closed (its close code). */
export interface PusherConnectionEvent extends NodeEvent {
  readonly app: string;
  readonly code: number | undefined;
}

/** A Pusher client event (pusher/pusher-connection.ts): accepted and published, or refused (4301). */
export interface PusherClientEventEvent extends NodeEvent {
  readonly app: string;
  readonly outcome: 'accepted' | 'refused';
}

export const diagnostics = {
  connectionOpened: channel('herald:connection:opened'),
  connectionClosed: channel('herald:connection:closed'),
  subscribed: channel('herald:subscription:added'),
  unsubscribed: channel('herald:subscription:removed'),
  published: channel('herald:publication:accepted'),
  delivered: channel('herald:publication:delivered'),
  conflated: channel('herald:publication:conflated'),
  commandError: channel('herald:command:error'),
  hookCall: channel('herald:hook:call'),
  hookSandbox: channel('herald:hook:javascript'),
  webhook: channel('herald:webhook:outcome'),
  pusherApi: channel('herald:pusher:api'),
  pusherConnection: channel('herald:pusher:connection'),
  pusherClientEvent: channel('herald:pusher:client-event'),
} as const;
