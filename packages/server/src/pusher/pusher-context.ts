/**
 * What a Pusher connection reaches of its endpoint (pusher-endpoint.ts
 * implements it): the node, the shared channel taps, the users registry.
 * One object per endpoint; connections hold a reference, not closures.
 */
import type { Config } from '../config/schema.ts';
import type { App } from '../apps/apps.ts';
import type { Node } from '../core/node.ts';
import type { Logger } from '../core/logger.ts';
import type { ResolvedChannel } from '../core/channel-rules.ts';
import type { PusherEventSink } from './pusher-events.ts';
import type { ChannelKind, PusherChannel } from './pusher-channels.ts';
import type { PusherSocket } from './pusher-connection.ts';
import type { PusherUsers } from './pusher-users.ts';

export interface PusherContext {
  readonly config: Config;
  readonly node: Node;
  readonly logger: Logger;
  readonly events: PusherEventSink | undefined;
  readonly users: PusherUsers;
  now(): number;
  /** The socket closed (with `code`): leave its channels, sign it out. */
  closed(socket: PusherSocket, code: number): void;
  /**
   * The tap of an app's channel, created (and its broker subscription
   * started, `ready`) when it is the first here; held until `release`, so a
   * subscription in progress keeps it.
   */
  acquire(app: App, name: string, kind: ChannelKind): PusherChannel;
  /** Drops a hold of `acquire`; a tap with no hold and no subscriber is removed. */
  release(tap: PusherChannel): void;
  /** Removes the tap when it has no hold and no subscriber. */
  releaseIfEmpty(tap: PusherChannel): void;
  /** The channel as node.publish takes it (the default namespace's options). */
  resolved(internal: string): ResolvedChannel;
  /** Cache channels: the last event to `socket`, or pusher:cache_miss. */
  replayCache(socket: PusherSocket, tap: PusherChannel): Promise<void>;
}
