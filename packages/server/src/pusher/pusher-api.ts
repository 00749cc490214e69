/**
 * The Pusher HTTP API on the public listener (docs/pusher.md, "HTTP API"):
 * what the `pusher` server SDKs call, per app.
 *
 *   POST /apps/{id}/events                          trigger on 1..maxEventChannelsAtOnce channels
 *   POST /apps/{id}/batch_events                    1..maxEventBatchSize triggers
 *   GET  /apps/{id}/channels                        occupied channels (filter_by_prefix, info)
 *   GET  /apps/{id}/channels/{name}                 occupied, user_count, subscription_count
 *   GET  /apps/{id}/channels/{name}/users           a presence channel's users
 *   POST /apps/{id}/users/{user}/terminate_connections
 *
 * Every request, in order: the body's bytes, at most
 * `pusher.maxApiBodyBytes` (413) → the app by the path's id (404) → request signing
 * (request-signing.ts; 401, 400 for a malformed query) → the app enabled
 * (403) → the app's `limits.apiRequestsPerSecond` on this node (429; counted
 * after the signature, so nobody without the secret spends an app's
 * budget) → the body parsed (UTF-8, depth `limits.maxJsonDepth`, no
 * prototype keys) and checked against the route's schema, then Pusher's
 * name and size rules (400, 413) → the route. Errors answer with Pusher's
 * plain-text bodies and a stable code in the `herald-error` header
 * (PUSHER_API_ERRORS). The bodies, answers and errors are declared in
 * pusher-api-schemas.ts, which the OpenAPI description is made from.
 *
 * The trigger routes (events, batch_events) with a JSON body are answered
 * by the front (edge/front.ts) with the same checks and answers, without
 * fastify's request pipeline; fastify answers the rest.
 *
 * Channels are the app's own: names in requests are app-local and go
 * through appChannel; names in answers come back through localChannel.
 * Counts are across nodes: subscribers from the node's snapshots (a peer's
 * at most three snapshot intervals old), presence users from the presence
 * store. Events are published as native publications through
 * pusher-publication.ts, so they reach native subscribers of the same
 * channel too.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Static, TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { readJson } from '@herald/protocol/json';
import { schemaDetail } from '@herald/protocol/commands';
import type { Config } from '../config/schema.ts';
import type { Node } from '../core/node.ts';
import type { ResolvedChannel } from '../core/channel-rules.ts';
import { BrokerUnavailableError } from '../broker/broker.ts';
import { appChannel, localChannel, type App, type AppRegistry } from '../apps/apps.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import { answerJson, type Front, type FrontContext } from '../edge/front.ts';
import { encodePusherData, excludeSocket } from './pusher-publication.ts';
import { channelKind } from './pusher-channels.ts';
import { parseQuery, verifySignedRequest, type SigningRefusal } from './request-signing.ts';
import { BatchBody, EmptyBody, EventBody, PUSHER_API_ERRORS, type PusherApiErrorCode } from './pusher-api-schemas.ts';

export { PUSHER_API_ERRORS, type PusherApiErrorCode };

/** What each route is counted as in the metrics (`herald_pusher_api_requests_total{route}`). */
export type PusherApiRoute = 'events' | 'batch_events' | 'channels' | 'channel' | 'channel_users' | 'terminate_connections';

/** The routes by their pattern: metric labels. */
const ROUTE_NAMES: Readonly<Record<string, PusherApiRoute>> = {
  '/apps/:appId/events': 'events',
  '/apps/:appId/batch_events': 'batch_events',
  '/apps/:appId/channels': 'channels',
  '/apps/:appId/channels/*': 'channel',
  '/apps/:appId/users/*': 'terminate_connections',
};

export interface PusherApiOptions {
  readonly config: Config;
  readonly node: Node;
  readonly apps: AppRegistry;
  readonly logger: Logger;
  /** The public listener's front (edge/front.ts): it answers the trigger routes without fastify's pipeline. */
  readonly front?: Front | undefined;
}

/** Answers an error: Pusher's plain-text body, the code in `herald-error`. */
function sendError(reply: FastifyReply, code: PusherApiErrorCode, message: string): FastifyReply {
  return reply.code(PUSHER_API_ERRORS[code].status).header('herald-error', code).type('text/plain; charset=utf-8').send(message);
}

class PusherApiError extends Error {
  readonly code: PusherApiErrorCode;
  constructor(code: PusherApiErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

const invalid = (message: string) => new PusherApiError('invalid_request', message);

const SOCKET_ID = /^\d+\.\d+$/;
/** Pusher's reserved event name prefixes: only the server sends these. */
const RESERVED_EVENT = /^pusher(_internal)?:/;

const compiled = {
  events: TypeCompiler.Compile(EventBody),
  batch: TypeCompiler.Compile(BatchBody),
  empty: TypeCompiler.Compile(EmptyBody),
};

/** Info attributes a request may ask for. */
type InfoAttribute = 'user_count' | 'subscription_count';

function parseInfo(info: string | undefined): Set<InfoAttribute> {
  const wanted = new Set<InfoAttribute>();
  if (info === undefined || info === '') return wanted;
  for (const part of info.split(',')) {
    const name = part.trim();
    if (name !== 'user_count' && name !== 'subscription_count') throw invalid(`Unknown info attribute: ${JSON.stringify(name.slice(0, 64))} (user_count, subscription_count)`);
    wanted.add(name);
  }
  return wanted;
}

const isPresence = (name: string) => name.startsWith('presence-');

/** Checks an app-local channel name as the socket does (pusher-channels.ts); `serverToUser`: `#server-to-user-{id}` is allowed (triggers only). */
function checkChannel(app: App, name: string, serverToUser: boolean): void {
  if (name.length === 0) throw invalid('Empty channel name');
  if (name.length > app.limits.maxChannelNameLength) throw invalid(`Channel name too long (at most ${app.limits.maxChannelNameLength} characters)`);
  const kind = channelKind(name, app.limits.maxChannelNameLength);
  if (kind === undefined || (kind.serverToUser !== undefined && !serverToUser)) {
    throw invalid(`Invalid channel name: ${JSON.stringify(name)} (letters, digits and _ - = @ , . ; only)`);
  }
}

/** Whether a channel the node counts is one Pusher clients can name (channel lists leave the others out). */
function listable(app: App, name: string): boolean {
  const kind = channelKind(name, app.limits.maxChannelNameLength);
  return kind !== undefined && kind.serverToUser === undefined;
}

function checkEvent(app: App, name: string, data: string, socketId: string | undefined): void {
  if (name.length === 0) throw invalid('Empty event name');
  if (name.length > app.limits.maxEventNameLength) throw invalid(`Event name too long (at most ${app.limits.maxEventNameLength} characters)`);
  if (RESERVED_EVENT.test(name)) throw invalid('Event names starting with pusher: or pusher_internal: are reserved');
  if (socketId !== undefined && !SOCKET_ID.test(socketId)) throw invalid('Invalid socket_id: digits.digits expected');
  const bytes = Buffer.byteLength(data, 'utf8');
  if (bytes > app.limits.maxEventPayloadBytes) throw new PusherApiError('payload_too_large', `Event data too large: ${bytes} bytes, at most ${app.limits.maxEventPayloadBytes}`);
}

/** One trigger, checked. */
interface Trigger {
  readonly name: string;
  readonly data: string;
  readonly channels: readonly string[];
  readonly socketId: string | undefined;
  readonly info: Set<InfoAttribute>;
}

/** Per-app request counts in one-second windows (this node). */
class AppRequestRates {
  readonly #windows = new Map<string, { start: number; count: number }>();

  /** Counts a request of `app`: true while within its limit. */
  take(app: App, nowMs: number): boolean {
    const max = app.limits.apiRequestsPerSecond;
    if (max === 0) return true;
    const start = nowMs - (nowMs % 1000);
    let window = this.#windows.get(app.id);
    if (window === undefined || window.start !== start) {
      // One entry per app; dropping stale ones keeps the map at the apps in use.
      if (this.#windows.size > 10000) this.#windows.clear();
      window = { start, count: 0 };
      this.#windows.set(app.id, window);
    }
    window.count += 1;
    return window.count <= max;
  }
}

/** A request as the checks see it, from fastify or from the front. */
interface ApiRequest {
  /** The URL as sent: path and query. */
  readonly url: string;
  readonly method: string;
  /** The app id the path names. */
  readonly appId: string;
  /** The body's bytes; undefined without one. */
  readonly body: Uint8Array | undefined;
}

interface Parsed {
  readonly app: App;
  /** The parsed JSON body (undefined without one). */
  readonly body: unknown;
  readonly params: ReadonlyMap<string, string>;
  /** The path after `/apps/{id}`. */
  readonly rest: string;
}

/** Registers the Pusher HTTP API routes on the public listener. */
export async function registerPusherApi(app: FastifyInstance, options: PusherApiOptions): Promise<void> {
  const { config, node, apps, logger } = options;
  const rates = new AppRequestRates();
  // A cache channel's history TTL is pusher.cacheTtlMs (core/channel-rules.ts).
  const resolved = (target: App, name: string): ResolvedChannel => ({ channel: appChannel(target, name), namespace: '', options: node.rules.defaultOptions(name) });

  /** Every check before a route's own (see the file's comment); throws PusherApiError. */
  const admit = (request: ApiRequest, schema: TypeCheck<TSchema> | undefined): Parsed => {
    const url = request.url;
    const mark = url.indexOf('?');
    const path = mark === -1 ? url : url.slice(0, mark);
    const id = request.appId;
    const target = apps.byId(id);
    if (target === undefined) throw new PusherApiError('app_not_found', 'Unknown app');
    const params = parseQuery(mark === -1 ? '' : url.slice(mark + 1));
    if (!(params instanceof Map)) throw invalid(params.message);
    const raw = request.body;
    const refusal: SigningRefusal | undefined = verifySignedRequest(target, { method: request.method, path, params, body: raw }, Date.now(), config.pusher.authTimestampWindowSeconds);
    if (refusal !== undefined) throw refusal.reason === 'bad_query' ? invalid(refusal.message) : new PusherApiError('unauthorized', refusal.message);
    if (!target.enabled) throw new PusherApiError('app_disabled', 'App disabled');
    if (!rates.take(target, Date.now())) throw new PusherApiError('too_many_requests', `Too many requests: this app may make ${target.limits.apiRequestsPerSecond} per second`);
    if (node.draining) throw new PusherApiError('unavailable', 'The server is shutting down; try again');
    let body: unknown;
    if (raw !== undefined && raw.length > 0) {
      let text: string;
      try {
        text = utf8.decode(raw);
      } catch {
        throw invalid('The body is not valid UTF-8');
      }
      const read = readJson(text, config.limits.maxJsonDepth);
      if (!read.ok) throw invalid(read.error === 'too_deep' ? `The body is nested deeper than ${config.limits.maxJsonDepth} levels` : read.error === 'poisoned' ? 'The body has a forbidden key (__proto__ or constructor.prototype)' : 'The body is not JSON');
      body = read.value;
    }
    if (schema !== undefined) {
      const value = body ?? {};
      if (!schema.Check(value)) throw invalid(`Invalid body: ${schemaDetail(schema, value) ?? 'not as the route takes it'}`);
    }
    const prefix = `/apps/${id}`;
    return { app: target, body, params, rest: path.startsWith(prefix) ? path.slice(prefix.length) : path };
  };

  /** Runs a route through fastify: its answer as JSON, or its error as Pusher's. */
  const route =
    (schema: TypeCheck<TSchema> | undefined, run: (parsed: Parsed) => Promise<unknown>) =>
    async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
      try {
        const body = request.body instanceof Uint8Array ? request.body : undefined;
        const parsed = admit({ url: request.raw.url ?? '', method: request.method, appId: (request.params as { appId: string }).appId, body }, schema);
        const answer = await run(parsed);
        return reply.type('application/json').send(JSON.stringify(answer));
      } catch (error) {
        return answerError(reply, error);
      }
    };

  /** What an error answers (an unexpected one is logged). */
  const failure = (error: unknown): PusherApiError => {
    if (error instanceof PusherApiError) return error;
    if (error instanceof BrokerUnavailableError) return new PusherApiError('unavailable', 'The engine cannot take publications now; try again');
    logger.error({ err: error }, 'pusher api request failed');
    return new PusherApiError('internal', 'Internal error');
  };

  const answerError = (reply: FastifyReply, error: unknown): FastifyReply => {
    const { code, message } = failure(error);
    if (code === 'too_many_requests') reply.header('retry-after', '1');
    return sendError(reply, code, message);
  };

  /** Subscriber counts of the app's channels across nodes, by app-local name. */
  const subscriptionCounts = (target: App, prefix: string): Map<string, number> => {
    const counts = new Map<string, number>();
    for (const [internal, { num_clients }] of Object.entries(node.channels(appChannel(target, prefix)))) {
      const name = localChannel(target, internal);
      if (name !== undefined && num_clients > 0) counts.set(name, num_clients);
    }
    return counts;
  };

  /** The info a trigger asked for, per channel: `{channels: {name: {...}}}`. */
  const channelInfo = async (target: App, names: readonly string[], info: Set<InfoAttribute>, counts: () => Map<string, number>): Promise<Record<string, Record<string, number>>> => {
    const out: Record<string, Record<string, number>> = Object.create(null) as Record<string, Record<string, number>>;
    await Promise.all(
      names.map(async (name) => {
        const entry: Record<string, number> = {};
        if (info.has('user_count') && isPresence(name)) entry['user_count'] = (await node.memberStats(appChannel(target, name))).numUsers;
        if (info.has('subscription_count')) entry['subscription_count'] = counts().get(name) ?? 0;
        out[name] = entry;
      }),
    );
    return out;
  };

  /** Publishes checked triggers; their channels' info after, when asked. */
  const publish = async (target: App, triggers: readonly Trigger[]): Promise<void> => {
    const publications: Promise<unknown>[] = [];
    for (const trigger of triggers) {
      const data = encodePusherData({ event: trigger.name, data: trigger.data });
      const info = trigger.socketId === undefined ? undefined : excludeSocket(trigger.socketId);
      for (const channel of trigger.channels) publications.push(node.publish(resolved(target, channel), data, info, 'api'));
    }
    await Promise.all(publications);
  };

  /** Counts read once per request, when a trigger asks for subscription_count. */
  const lazyCounts = (target: App) => {
    let counts: Map<string, number> | undefined;
    return () => (counts ??= subscriptionCounts(target, ''));
  };

  /** POST /apps/{id}/events. */
  const events = async ({ app: target, body }: Parsed): Promise<unknown> => {
    const event = body as Static<typeof EventBody>;
    if ((event.channel === undefined) === (event.channels === undefined)) throw invalid('Give either channel or channels');
    const channels = [...new Set(event.channels ?? [event.channel!])];
    if (channels.length === 0) throw invalid('channels is empty');
    if (channels.length > target.limits.maxEventChannelsAtOnce) throw invalid(`Too many channels: at most ${target.limits.maxEventChannelsAtOnce} per event`);
    for (const channel of channels) checkChannel(target, channel, true);
    if (channels.length > 1 && channels.some((c) => c.startsWith('private-encrypted-'))) throw invalid('An event to an encrypted channel names only that channel');
    checkEvent(target, event.name, event.data, event.socket_id);
    const info = parseInfo(event.info);
    await publish(target, [{ name: event.name, data: event.data, channels, socketId: event.socket_id, info }]);
    if (info.size === 0) return {};
    return { channels: await channelInfo(target, channels, info, lazyCounts(target)) };
  };

  /** POST /apps/{id}/batch_events. */
  const batch = async ({ app: target, body }: Parsed): Promise<unknown> => {
    const events = (body as Static<typeof BatchBody>).batch;
    if (events.length === 0) throw invalid('batch is empty');
    if (events.length > target.limits.maxEventBatchSize) throw invalid(`Too many events: at most ${target.limits.maxEventBatchSize} per batch`);
    const triggers = events.map((event, i): Trigger => {
      try {
        checkChannel(target, event.channel, true);
        checkEvent(target, event.name, event.data, event.socket_id);
        return { name: event.name, data: event.data, channels: [event.channel], socketId: event.socket_id, info: parseInfo(event.info) };
      } catch (error) {
        if (error instanceof PusherApiError) throw new PusherApiError(error.code, `batch[${i}]: ${error.message}`);
        throw error;
      }
    });
    await publish(target, triggers);
    if (triggers.every((t) => t.info.size === 0)) return {};
    const counts = lazyCounts(target);
    const answers = await Promise.all(triggers.map(async (t) => (t.info.size === 0 ? {} : (await channelInfo(target, t.channels, t.info, counts))[t.channels[0]!]!)));
    return { batch: answers };
  };

  const bodyLimit = config.pusher.maxApiBodyBytes;

  await app.register(async (scope) => {
    // The body's bytes as sent: body_md5 covers them; they are parsed after the signature holds.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('application/json', { parseAs: 'buffer', bodyLimit }, (_request, body, done) => done(null, body));
    scope.setErrorHandler((error: { code?: string; statusCode?: number }, _request, reply) => {
      switch (error.code) {
        case 'FST_ERR_CTP_BODY_TOO_LARGE':
          // The rest of the body is never read: end the connection after the answer.
          reply.header('connection', 'close');
          return sendError(reply, 'payload_too_large', `Request body too large (at most ${bodyLimit} bytes)`);
        case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
          return sendError(reply, 'unsupported_media_type', 'Send the body as application/json');
        case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
          return sendError(reply, 'invalid_request', 'The Content-Length does not match the body');
      }
      if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) return sendError(reply, 'invalid_request', 'Bad request');
      return answerError(reply, error);
    });
    scope.addHook('onResponse', (request, reply, done) => {
      const routeName = ROUTE_NAMES[request.routeOptions.url ?? ''];
      if (routeName !== undefined && diagnostics.pusherApi.hasSubscribers) {
        const id = (request.params as { appId?: string }).appId;
        const known = id === undefined ? undefined : apps.byId(id);
        const name = routeName === 'channel' && (request.raw.url ?? '').split('?', 1)[0]!.endsWith('/users') ? 'channel_users' : routeName;
        diagnostics.pusherApi.publish({ node: node.id, app: known?.id ?? '', route: name, status: reply.statusCode });
      }
      done();
    });

    scope.post<{ Params: { appId: string } }>(
      '/apps/:appId/events',
      { bodyLimit },
      route(compiled.events, events),
    );

    scope.post<{ Params: { appId: string } }>(
      '/apps/:appId/batch_events',
      { bodyLimit },
      route(compiled.batch, batch),
    );

    scope.get<{ Params: { appId: string } }>(
      '/apps/:appId/channels',
      route(undefined, async ({ app: target, params }) => {
        const prefix = params.get('filter_by_prefix') ?? '';
        const info = parseInfo(params.get('info'));
        if (info.has('user_count') && !isPresence(prefix)) throw invalid('user_count may only be asked for presence channels: filter_by_prefix=presence-…');
        const counts = subscriptionCounts(target, prefix);
        const names = [...counts.keys()].filter((name) => listable(target, name)).sort();
        const channels: Record<string, Record<string, number>> = Object.create(null) as Record<string, Record<string, number>>;
        const withInfo = info.size === 0 ? undefined : await channelInfo(target, names, info, () => counts);
        for (const name of names) channels[name] = withInfo?.[name] ?? {};
        return { channels };
      }),
    );

    scope.get<{ Params: { appId: string } }>(
      '/apps/:appId/channels/*',
      route(undefined, async ({ app: target, params, rest }) => {
        // rest: /channels/{name} or /channels/{name}/users (names have no '/').
        const parts = rest.split('/');
        if (parts.length < 3 || parts.length > 4 || (parts.length === 4 && parts[3] !== 'users')) throw new PusherApiError('invalid_request', 'Unknown resource: /channels/{name} or /channels/{name}/users');
        let name: string;
        try {
          name = decodeURIComponent(parts[2]!);
        } catch {
          throw invalid('The channel name is not validly percent-encoded');
        }
        checkChannel(target, name, false);
        const internal = appChannel(target, name);
        if (parts.length === 4) {
          if (!isPresence(name)) throw invalid('Users can only be listed for presence channels');
          const members = await node.members(internal);
          const users = [...new Set(Object.values(members).map((member) => member.user))].sort();
          return { users: users.map((id) => ({ id })) };
        }
        const info = parseInfo(params.get('info'));
        if (info.has('user_count') && !isPresence(name)) throw invalid('user_count may only be asked for presence channels');
        const subscriptions = subscriptionCounts(target, name).get(name) ?? 0;
        const answer: Record<string, unknown> = {};
        if (isPresence(name)) {
          // The presence store is current on every node; snapshots may lag.
          const stats = await node.memberStats(internal);
          answer['occupied'] = stats.numClients > 0 || subscriptions > 0;
          if (info.has('user_count')) answer['user_count'] = stats.numUsers;
        } else {
          answer['occupied'] = subscriptions > 0;
        }
        if (info.has('subscription_count')) answer['subscription_count'] = subscriptions;
        return answer;
      }),
    );

    scope.post<{ Params: { appId: string } }>(
      '/apps/:appId/users/*',
      { bodyLimit },
      route(compiled.empty, async ({ app: target, rest }) => {
        const parts = rest.split('/');
        if (parts.length !== 4 || parts[3] !== 'terminate_connections') throw invalid('Unknown resource: /users/{user_id}/terminate_connections');
        let user: string;
        try {
          user = decodeURIComponent(parts[2]!);
        } catch {
          throw invalid('The user id is not validly percent-encoded');
        }
        if (user === '' || user.length > 200) throw invalid('Invalid user id (1 to 200 characters)');
        await node.publishControl({ kind: 'pusher_terminate', app: target.id, user });
        return {};
      }),
    );
  });

  // The trigger routes on the front too: the same checks and answers, without fastify's request
  // pipeline, which costs more than a trigger's own work. Fastify keeps them for what the front
  // leaves (a body that is not JSON, a percent-encoded path).
  const front = options.front;
  if (front === undefined) return;
  const count = (appId: string, routeName: PusherApiRoute, status: number): void => {
    if (diagnostics.pusherApi.hasSubscribers) diagnostics.pusherApi.publish({ node: node.id, app: apps.byId(appId)?.id ?? '', route: routeName, status });
  };
  const frontRoute =
    (appId: string, routeName: PusherApiRoute, schema: TypeCheck<TSchema>, run: (parsed: Parsed) => Promise<unknown>) =>
    (request: IncomingMessage, response: ServerResponse, { headers }: FrontContext): void => {
      const answer = (error: unknown, close = false): void => {
        const { code, message } = failure(error);
        const extra = code === 'too_many_requests' ? ['retry-after', '1'] : close ? ['connection', 'close'] : [];
        answerText(response, headers, code, message, extra);
        count(appId, routeName, PUSHER_API_ERRORS[code].status);
      };
      readRawBody(
        request,
        bodyLimit,
        (body) => {
          let parsed: Parsed;
          try {
            parsed = admit({ url: request.url ?? '', method: 'POST', appId, body }, schema);
          } catch (error) {
            return answer(error);
          }
          run(parsed).then(
            (result) => {
              answerJson(response, headers, 200, JSON.stringify(result));
              count(appId, routeName, 200);
            },
            (error: unknown) => answer(error),
          );
        },
        // The rest of the body is never read: end the connection after the answer.
        () => answer(new PusherApiError('payload_too_large', `Request body too large (at most ${bodyLimit} bytes)`), true),
      );
    };
  const routed = new Set<string>();
  const onFront = (appId: string): void => {
    if (routed.has(appId) || apps.byId(appId) === undefined) return;
    routed.add(appId);
    front.route('POST', `/apps/${appId}/events`, frontRoute(appId, 'events', compiled.events, events), jsonRequest);
    front.route('POST', `/apps/${appId}/batch_events`, frontRoute(appId, 'batch_events', compiled.batch, batch), jsonRequest);
  };
  for (const known of apps.list()) onFront(known.id);
  // Apps made later (console, CLI) get their routes when they appear; a removed app's answer 404.
  apps.onChange(onFront);
}

/** What the front takes: a JSON body (its media type; fastify answers the others, 415). */
function jsonRequest(request: IncomingMessage): boolean {
  const type = request.headers['content-type'];
  if (type === undefined) return false;
  const semicolon = type.indexOf(';');
  return (semicolon === -1 ? type : type.slice(0, semicolon)).trim().toLowerCase() === 'application/json';
}

/** An error as sendError answers it, on the front. */
function answerText(response: ServerResponse, headers: readonly string[], code: PusherApiErrorCode, message: string, extra: readonly string[]): void {
  if (response.destroyed) return;
  response.writeHead(PUSHER_API_ERRORS[code].status, [
    ...headers,
    ...extra,
    'herald-error',
    code,
    'content-type',
    'text/plain; charset=utf-8',
    'content-length',
    String(Buffer.byteLength(message)),
  ]);
  response.end(message);
}

/**
 * Reads a body's bytes, at most `limit` (a declared or received excess calls
 * `onTooLarge` at once); nothing is called when the request goes away first.
 */
function readRawBody(request: IncomingMessage, limit: number, onBody: (body: Buffer) => void, onTooLarge: () => void): void {
  if (Number(request.headers['content-length']) > limit) return onTooLarge();
  let chunks: Buffer[] = [];
  let size = 0;
  const finish = (): void => {
    request.removeListener('data', onData);
    request.removeListener('end', onEnd);
    chunks = [];
  };
  const onData = (chunk: Buffer): void => {
    size += chunk.length;
    if (size <= limit) chunks.push(chunk);
    else {
      finish();
      onTooLarge();
    }
  };
  const onEnd = (): void => {
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
    finish();
    onBody(body);
  };
  request.on('data', onData);
  request.on('end', onEnd);
}

/** Refuses what is not UTF-8 instead of repairing it. */
const utf8 = new TextDecoder('utf-8', { fatal: true });
