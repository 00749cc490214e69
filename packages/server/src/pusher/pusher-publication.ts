/**
 * How a Pusher event and a native publication are one thing (docs/pusher.md,
 * "Channels shared with the native protocol"). Brokers store and move a
 * publication's `data` as JSON text and its `info` as the publisher's
 * ClientInfo; a Pusher event rides in them unchanged on every engine:
 *
 * - A Pusher event (HTTP API trigger, client event) is stored as the JSON
 *   object `{"event": name, "data": data}` (plus `"user_id"` for a client
 *   event on a presence channel). Native subscribers receive that object.
 * - A native publication reaches Pusher subscribers as the event named by
 *   its data when the data is such an object (`event` a string, `data`
 *   present); any other data arrives as event `herald:publication` with the
 *   JSON text as its `data` string.
 * - Exclusion: the Pusher connection whose socket id is `info.client` does
 *   not receive the event (a trigger's `socket_id`, a client event's sender).
 *   Native client ids are UUIDs and never match a socket id.
 */
import type { ClientInfo } from '@herald/protocol';
import type { StoredPublication } from '../broker/broker.ts';

/** The event name a native publication that is not Pusher-shaped arrives under. */
export const NATIVE_PUBLICATION_EVENT = 'herald:publication';

export interface PusherEvent {
  readonly event: string;
  /** The event's data as Pusher sends it: a string (a trigger's), or any JSON value (a client event's). */
  readonly data: unknown;
  /** A client event on a presence channel: the sender's user id. */
  readonly userId?: string | undefined;
}

/** The publication data text of a Pusher event. */
export function encodePusherData(event: PusherEvent): string {
  const head = '{"event":' + JSON.stringify(event.event) + ',"data":' + (JSON.stringify(event.data) ?? 'null');
  return event.userId === undefined ? head + '}' : head + ',"user_id":' + JSON.stringify(event.userId) + '}';
}

/** The publisher info that makes the connection `socketId` skip its own event (a trigger's `socket_id`). */
export function excludeSocket(socketId: string): ClientInfo {
  return { client: socketId, user: '' };
}

/** A publication as Pusher subscribers see it: event name, data as a string, user id; the socket id it skips. */
export interface PusherDelivery {
  readonly event: string;
  /** Always a string on the wire: a trigger's string as is, other values as JSON text. */
  readonly data: string;
  readonly userId: string | undefined;
  readonly excludeSocket: string | undefined;
}

/** Reads a stored publication for Pusher subscribers. Parses the data once (call once per publication, not per subscriber). */
export function pusherDelivery(publication: StoredPublication): PusherDelivery {
  const excluded = publication.info?.client;
  let parsed: unknown;
  try {
    parsed = JSON.parse(publication.data);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
    const record = parsed as Record<string, unknown>;
    if (typeof record['event'] === 'string' && 'data' in record) {
      const data = record['data'];
      return {
        event: record['event'],
        data: typeof data === 'string' ? data : JSON.stringify(data),
        userId: typeof record['user_id'] === 'string' ? record['user_id'] : undefined,
        excludeSocket: excluded,
      };
    }
  }
  return { event: NATIVE_PUBLICATION_EVENT, data: publication.data, userId: undefined, excludeSocket: excluded };
}
