/**
 * Cluster mode on the redis engine: what a worker holds in Redis presence
 * (its clients' presence entries, and the joins it announced) is mirrored
 * to the primary, so that when the worker dies without draining (SIGKILL,
 * crash, a drain cut short) another worker of the machine removes those
 * entries and announces a leave for each join at once, as the primary does
 * itself on the memory and sqlite engines, instead of the entries lingering
 * until `engine.presenceTtlMs` expires them with no leave at all.
 *
 * Guarantees: best effort, like presence removal anywhere (a removal Redis
 * cannot take is left to the TTL). A worker that drains removes its own
 * entries first, so its mirror is empty when it exits.
 */
import type { ClientInfo } from '@herald/protocol';
import type { Broker, PresenceStore } from '../broker/broker.ts';
import type { Engine } from '../app/engine.ts';

/** One change of what a worker holds: `info` null when it was removed (or its leave announced). */
export interface PresenceTrack {
  readonly what: 'presence' | 'join';
  readonly channel: string;
  readonly client: string;
  readonly info: ClientInfo | null;
}

/** What a dead worker left behind: entries to remove, joins owing a leave. */
export interface PresenceOrphans {
  readonly presence: readonly { readonly channel: string; readonly client: string }[];
  readonly joins: readonly { readonly channel: string; readonly info: ClientInfo }[];
}

/** The engine with its presence and join/leave calls reported to `track` (the worker sends them to the primary). */
export function mirrorPresence(engine: Engine, track: (change: PresenceTrack) => void): Engine {
  const { broker, presence } = engine;
  const mirroredBroker: Broker = {
    setEventHandler: (handler) => broker.setEventHandler(handler),
    publish: (channel, data, options) => broker.publish(channel, data, options),
    publishJoin: (channel, info) => {
      track({ what: 'join', channel, client: info.client, info });
      return broker.publishJoin(channel, info);
    },
    publishLeave: (channel, info) => {
      track({ what: 'join', channel, client: info.client, info: null });
      return broker.publishLeave(channel, info);
    },
    subscribe: (channel) => broker.subscribe(channel),
    unsubscribe: (channel) => broker.unsubscribe(channel),
    history: (channel, query, stream) => broker.history(channel, query, stream),
    close: () => broker.close(),
  };
  const mirroredPresence: PresenceStore = {
    add: (channel, info) => {
      track({ what: 'presence', channel, client: info.client, info });
      return presence.add(channel, info);
    },
    remove: (channel, client) => {
      track({ what: 'presence', channel, client, info: null });
      return presence.remove(channel, client);
    },
    get: (channel) => presence.get(channel),
    stats: (channel) => presence.stats(channel),
    close: () => presence.close(),
  };
  return { ...engine, broker: mirroredBroker, presence: mirroredPresence };
}

/** The primary's copy of what one worker holds. */
export class HeldPresence {
  readonly #presence = new Map<string, { channel: string; client: string }>();
  readonly #joins = new Map<string, { channel: string; info: ClientInfo }>();

  apply(change: PresenceTrack): void {
    const key = `${change.channel}\0${change.client}`;
    if (change.what === 'presence') {
      if (change.info === null) this.#presence.delete(key);
      else this.#presence.set(key, { channel: change.channel, client: change.client });
    } else if (change.info === null) this.#joins.delete(key);
    else this.#joins.set(key, { channel: change.channel, info: change.info });
  }

  /** What is left (empty after a drain). */
  orphans(): PresenceOrphans | undefined {
    if (this.#presence.size === 0 && this.#joins.size === 0) return undefined;
    return { presence: [...this.#presence.values()], joins: [...this.#joins.values()] };
  }
}

/** Run by a live worker: removes a dead worker's entries and announces its leaves (on the unmirrored engine). */
export async function cleanOrphans(engine: Engine, orphans: PresenceOrphans): Promise<{ removed: number; leaves: number; failed: number }> {
  let failed = 0;
  const results = await Promise.allSettled([
    ...orphans.presence.map(({ channel, client }) => engine.presence.remove(channel, client)),
    ...orphans.joins.map(({ channel, info }) => engine.broker.publishLeave(channel, info)),
  ]);
  for (const result of results) if (result.status === 'rejected') failed++;
  return { removed: orphans.presence.length, leaves: orphans.joins.length, failed };
}
