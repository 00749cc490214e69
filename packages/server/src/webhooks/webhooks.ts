/**
 * Webhooks for one process: resolves the endpoints' secrets, builds the
 * dispatcher on the engine's outbox, and turns this Node's reports
 * (core/node-events.ts) into events through a TransitionTracker. The
 * composition root builds it; in cluster mode the primary owns it and
 * workers send their reports over IPC (cluster/*).
 */
import { readFileSync } from 'node:fs';
import type { ClientInfo } from '@herald/protocol';
import type { Config } from '../config/schema.ts';
import { MIN_SECRET_CHARS } from '../config/schema.ts';
import type { Logger } from '../core/logger.ts';
import type { NodeEvents } from '../core/node-events.ts';
import { namespaceOf, newEvent, type WebhookEvent, type WebhookEventName } from './events.ts';
import { WebhookDispatcher, type WebhookEndpoint, type WebhookOutcome } from './dispatcher.ts';
import type { WebhookOutbox } from './outbox.ts';
import { TransitionTracker, type MemberRef } from './transitions.ts';
import type { TransitionJournal } from './journal.ts';
import { RedisTransitions } from './redis-transitions.ts';

/** Reads each endpoint's keys (files, environment); problems name the config path, never the secret. */
export function resolveEndpoints(config: Config, env: Readonly<Record<string, string | undefined>>, problems: string[]): WebhookEndpoint[] {
  const endpoints: WebhookEndpoint[] = [];
  const names = new Set<string>();
  config.webhooks.endpoints.forEach((endpoint, i) => {
    const at = `/webhooks/endpoints/${i}`;
    if (names.has(endpoint.name)) problems.push(`${at}/name: "${endpoint.name}" is used twice`);
    names.add(endpoint.name);
    const url = URL.canParse(endpoint.url) ? new URL(endpoint.url) : undefined;
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '') {
      problems.push(`${at}/url: an http or https URL without user name or password`);
    }
    const keys: { id: string; secret: string }[] = [];
    endpoint.keys.forEach((key, k) => {
      const keyAt = `${at}/keys/${k}`;
      if ((key.secretFile === undefined) === (key.secretEnv === undefined)) {
        problems.push(`${keyAt}: set secretFile or secretEnv (one of them)`);
        return;
      }
      let secret: string | undefined;
      if (key.secretFile !== undefined) {
        try {
          secret = readFileSync(key.secretFile, 'utf8').trim();
        } catch (error) {
          problems.push(`${keyAt}/secretFile: cannot read ${key.secretFile} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
          return;
        }
      } else {
        secret = env[key.secretEnv!]?.trim();
        if (secret === undefined || secret === '') {
          problems.push(`${keyAt}/secretEnv: the environment variable ${key.secretEnv} is not set`);
          return;
        }
      }
      if (secret.length < MIN_SECRET_CHARS) problems.push(`${keyAt}: the secret is shorter than ${MIN_SECRET_CHARS} characters (generate one: \`openssl rand -base64 32\`)`);
      keys.push({ id: key.id, secret });
    });
    if (new Set(endpoint.keys.map((key) => key.id)).size !== endpoint.keys.length) problems.push(`${at}/keys: key ids must differ`);
    endpoints.push({
      name: endpoint.name,
      url: endpoint.url,
      events: new Set(endpoint.events as WebhookEventName[]),
      namespaces: endpoint.namespaces === undefined ? undefined : new Set(endpoint.namespaces),
      keys,
    });
  });
  return endpoints;
}

export interface Webhooks {
  readonly dispatcher: WebhookDispatcher;
  /** This process's transitions (and, in cluster mode, its workers'); on the redis engine Redis decides them instead. */
  readonly tracker: TransitionTracker;
  /** What a Node in this process reports to (source: this process). */
  readonly nodeEvents: NodeEvents;
  /** Stops sending; on the redis engine first writes the last reports and releases this node's channels and members. */
  close(): Promise<void>;
}

/** The redis engine: transitions decided in Redis across every node (redis-transitions.ts). */
export interface SharedTransitionsOptions {
  readonly redis: import('ioredis').Redis | import('ioredis').Cluster;
  readonly prefix: string;
  readonly node: string;
  readonly nodeTtlMs: number;
}

export interface WebhooksOptions {
  readonly config: Config;
  readonly endpoints: readonly WebhookEndpoint[];
  readonly outbox: WebhookOutbox;
  readonly logger: Logger;
  readonly userAgent: string;
  readonly now?: () => number;
  readonly onOutcome?: (endpoint: string, outcome: WebhookOutcome, count: number) => void;
  /** Where open channels and members are journaled (the sqlite state file), to announce their end after a crash; none on memory. */
  readonly journal?: TransitionJournal | undefined;
  /** The redis engine: transitions are decided in Redis, shared by every node. */
  readonly shared?: SharedTransitionsOptions | undefined;
  /** Endpoints may be added while the server runs (apps' webhooks): transitions are followed even when no endpoint takes them yet. */
  readonly endpointsMayChange?: boolean | undefined;
}

export function createWebhooks(options: WebhooksOptions): Webhooks {
  const { config } = options;
  const w = config.webhooks;
  const now = options.now ?? Date.now;
  const dispatcher = new WebhookDispatcher({
    outbox: options.outbox,
    endpoints: options.endpoints,
    batchWindowMs: w.batchWindowMs,
    batchMaxEvents: w.batchMaxEvents,
    timeoutMs: w.timeoutMs,
    retryForMs: w.retryForMs,
    backoffMinMs: w.backoffMinMs,
    backoffMaxMs: w.backoffMaxMs,
    maxPending: w.maxPending,
    pollIntervalMs: w.pollIntervalMs,
    userAgent: options.userAgent,
    logger: options.logger,
    now,
    ...(options.onOutcome === undefined ? {} : { onOutcome: options.onOutcome }),
  });
  const member = (name: WebhookEventName, channel: string, ref: MemberRef): void => {
    if (!dispatcher.wants(name)) return;
    dispatcher.emit(newEvent(name, now(), memberFields(name, channel, ref)));
  };
  const journal = options.journal;
  // Asked at each transition: an app's endpoints may change while the server runs (pusher/pusher-webhooks.ts).
  const wantsMembersNow = (): boolean => dispatcher.wants('member_added') || dispatcher.wants('member_removed');
  const wantsChannelsNow = (): boolean => dispatcher.wants('channel_occupied') || dispatcher.wants('channel_vacated');
  const wantsMembers = wantsMembersNow();
  const wantsChannels = wantsChannelsNow();
  /** A journal that cannot be written costs only the announcement after a crash, never the event. */
  const record = (what: () => void): void => {
    try {
      what();
    } catch (error) {
      options.logger.error({ err: error }, 'webhook transition not written to the state file (a crash would not announce its end)');
    }
  };
  if (journal !== undefined) {
    // The previous process crashed with these open: this one has no subscribers, so they ended.
    const left = journal.leftovers();
    for (const entry of left.members) member('member_removed', entry.channel, entry.member);
    for (const channel of left.channels) dispatcher.emit(newEvent('channel_vacated', now(), { channel }));
    if (left.channels.length + left.members.length > 0) {
      options.logger.warn({ channels: left.channels.length, members: left.members.length }, 'webhooks: the previous run ended without a drain; announced the end of its channels and members');
    }
    journal.clear();
  }
  // After close nothing is journaled or sent: what is still open stays in the journal, announced at the next start.
  let closed = false;
  const tracker = new TransitionTracker({
    occupied: (channel) => {
      if (closed) return;
      if (journal !== undefined && wantsChannelsNow()) record(() => journal.opened(channel));
      dispatcher.emit(newEvent('channel_occupied', now(), { channel }));
    },
    vacated: (channel) => {
      if (closed) return;
      if (journal !== undefined && wantsChannelsNow()) record(() => journal.closed(channel));
      dispatcher.emit(newEvent('channel_vacated', now(), { channel }));
    },
    memberAdded: (channel, ref) => {
      if (closed) return;
      if (journal !== undefined && wantsMembersNow()) record(() => journal.opened(channel, ref));
      member('member_added', channel, ref);
    },
    memberRemoved: (channel, ref) => {
      if (closed) return;
      if (journal !== undefined && wantsMembersNow()) record(() => journal.closed(channel, ref));
      member('member_removed', channel, ref);
    },
  });
  const publicationNamespaces = new Set(w.publicationNamespaces);
  const direct: DirectEvents = {
    connected: (info, transport) => {
      if (dispatcher.wants('client_connected')) dispatcher.emit(newEvent('client_connected', now(), { client: info.client, user: info.user, transport }));
    },
    disconnected: (info, transport, code, reason) => {
      if (dispatcher.wants('client_disconnected')) dispatcher.emit(newEvent('client_disconnected', now(), { client: info.client, user: info.user, transport, code, reason }));
    },
    published: (channel, dataJson, info) => {
      if (!publicationNamespaces.has(namespaceOf(channel)) || !dispatcher.wants('publication')) return;
      dispatcher.emit(
        newEvent('publication', now(), {
          channel,
          data: JSON.parse(dataJson) as unknown,
          ...(info === undefined ? {} : { client: info.client, user: info.user }),
        }),
      );
    },
  };
  const shared = options.shared;
  const redis =
    shared === undefined || !(wantsChannels || wantsMembers || options.endpointsMayChange === true)
      ? undefined
      : new RedisTransitions({
          ...shared,
          maxPending: w.maxPending,
          logger: options.logger,
          now,
          build: (name, time, channel, ref) => {
            const event = newEvent(name, time, ref === undefined ? { channel } : memberFields(name, channel, ref));
            return { id: event.id, json: JSON.stringify(event), endpoints: dispatcher.endpointsFor(name, channel) };
          },
          onWritten: (endpoints) => {
            for (const endpoint of endpoints) {
              if (endpoint.startsWith('!')) dispatcher.dropped(endpoint.slice(1), 1);
              else dispatcher.appended(endpoint, 1);
            }
          },
        });
  const nodeEvents: NodeEvents =
    shared === undefined
      ? trackerEvents(tracker, 'local', direct)
      : {
          clientConnected: (info, transport) => direct.connected(info, transport),
          clientDisconnected: (info, transport, code, reason) => direct.disconnected(info, transport, code, reason),
          channelSubscribed: (channel) => redis?.subscribed(channel),
          channelUnsubscribed: (channel) => redis?.unsubscribed(channel),
          presenceJoined: (channel, info) => redis?.joined(channel, info),
          presenceLeft: (channel, info) => redis?.left(channel, info),
          published: (channel, dataJson, info) => direct.published(channel, dataJson, info),
        };
  return {
    dispatcher,
    tracker,
    nodeEvents,
    close: async () => {
      closed = true;
      // The last reports and the release of this node's channels are written (and kicked) before sending stops.
      await redis?.close();
      dispatcher.close();
    },
  };
}

/** The fields of a member event. */
function memberFields(name: WebhookEventName, channel: string, ref: MemberRef): Omit<WebhookEvent, 'id' | 'name' | 'time_ms'> {
  return {
    channel,
    user: ref.user,
    ...(ref.client === undefined ? {} : { client: ref.client }),
    ...(name === 'member_added' && ref.info !== undefined ? { info: ref.info } : {}),
  };
}

/** Events that need no tracking (connections, publications): sent where they happen. */
export interface DirectEvents {
  connected(info: ClientInfo, transport: string): void;
  disconnected(info: ClientInfo, transport: string, code: number, reason: string): void;
  published(channel: string, dataJson: string, info: ClientInfo | undefined): void;
}

/** NodeEvents feeding a tracker as `source`, and the direct events to `direct`. */
export function trackerEvents(tracker: TransitionTracker, source: string, direct: DirectEvents): NodeEvents {
  return {
    clientConnected: (info, transport) => direct.connected(info, transport),
    clientDisconnected: (info, transport, code, reason) => direct.disconnected(info, transport, code, reason),
    channelSubscribed: (channel) => tracker.subscribed(source, channel),
    channelUnsubscribed: (channel) => tracker.unsubscribed(source, channel),
    presenceJoined: (channel, info) => tracker.joined(source, channel, info),
    presenceLeft: (channel, info) => tracker.left(source, channel, info),
    published: (channel, dataJson, info) => direct.published(channel, dataJson, info),
  };
}
