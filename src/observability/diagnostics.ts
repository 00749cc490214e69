/**
 * Every diagnostics channel Herald publishes, in one place. Core code
 * publishes; exporters (metrics, logs) subscribe; the core never imports an
 * exporter. Publishing costs nothing when nobody subscribes.
 */
import { channel } from 'node:diagnostics_channel';
import type { TransportKind } from '../core/transport.ts';

export interface ConnectionOpenedEvent {
  readonly transport: TransportKind;
}
export interface ConnectionClosedEvent {
  readonly transport: TransportKind;
  readonly code: number;
  readonly reason: string;
}
export interface SubscriptionEvent {
  readonly transport: TransportKind;
}
export interface PublicationEvent {
  readonly channel: string;
  /** Where it came from. */
  readonly source: 'api' | 'client';
}
export interface DeliveryEvent {
  /** Connections the publication was written to on this node. */
  readonly count: number;
}
export interface CommandErrorEvent {
  readonly method: string;
  readonly code: number;
}

export const diagnostics = {
  connectionOpened: channel('herald:connection:opened'),
  connectionClosed: channel('herald:connection:closed'),
  subscribed: channel('herald:subscription:added'),
  unsubscribed: channel('herald:subscription:removed'),
  published: channel('herald:publication:accepted'),
  delivered: channel('herald:publication:delivered'),
  commandError: channel('herald:command:error'),
} as const;
