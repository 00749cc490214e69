/**
 * The console's data and action endpoints, under the base path B on the
 * internal listener, every one behind `requireRole` (console-guard.ts):
 *
 * - viewer: `GET B/api/overview/stream` (SSE, one frame per second:
 *   overview.ts), `GET B/api/channels?app=`, `GET B/api/channels/:channel?app=`,
 *   `GET B/api/connections?user=&app=`, `GET B/api/connections/apps`.
 * - operator: `POST B/api/channels/:channel/publish` (with an optional `app`),
 *   `POST B/api/users/:user/disconnect`, `POST B/api/users/:user/revoke`
 *   (both with an optional `app`), `POST B/api/tokens/:id/revoke`.
 *
 * Users and channels are an app's (apps/apps.ts): `app` names the app whose
 * user `user` or channel `channel` is (default: the default app, whose users
 * and channels are the server's own). The node keeps another app's channels
 * as `~{id}~name` and counts its users as `~{id}~user` (Client.userKey);
 * those names stay inside: requests and answers carry the app's own names.
 * - owner: `GET|POST B/api/keys…`, `GET B/api/audit`, `GET B/api/audit/export`.
 *
 * Actions run through the server API's executor (api/executor.ts) with an
 * admin-scoped principal, so they behave exactly as `POST /api/<method>`
 * (validation, error codes, cluster-wide effect). Every action, allowed or
 * failed, is written to the audit log with the admin, the client address
 * and the outcome. docs/console.md describes each answer.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { encodeResult, JsonText, type ApiErrorCode } from '@herald/protocol';
import { ApiError, type ApiExecutor } from '../api/executor.ts';
import type { ApiPrincipal } from '../auth/api-keys.ts';
import { isReservedUserId, localChannel, nativeName, type App, type AppRegistry } from '../apps/apps.ts';
import { CommandError } from '../core/client.ts';
import type { Node } from '../core/node.ts';
import type { ResolvedChannel } from '../core/channel-rules.ts';
import { sendApiError } from '../transports/http-connection.ts';
import type { AuditEntry, AuditQuery } from './admin-store.ts';
import { requireRole, type ConsoleContext } from './console-guard.ts';
import { ConsoleKeys, KeyActionError, parseGrace, parseKeyName, parseScopeList } from './console-keys.ts';
import type { KeyUsage } from './key-usage.ts';
import { OverviewTicker } from './overview.ts';
import { SESSION_COOKIE } from './sessions.ts';

export interface ConsoleApiDeps {
  readonly node: Node;
  readonly executor: ApiExecutor;
  /** Without it, keys show `lastUsedAt: null`. */
  readonly keyUsage?: KeyUsage | undefined;
  /** The apps served now; without it, users are the server's own only. */
  readonly apps?: AppRegistry | undefined;
}

/** A user of an app as the node counts it (Client.userKey), and the app for the audit log (undefined: the default app). */
interface AppUser {
  readonly key: string;
  readonly app: string | undefined;
}

/**
 * The app a channel request names: what its channels are prefixed with
 * inside the server ('' for the default app, whose channels are the
 * server's own), and its id for the audit log (undefined: the default app).
 */
interface ChannelScope {
  readonly prefix: string;
  readonly app: string | undefined;
}

const SERVER_CHANNELS: ChannelScope = { prefix: '', app: undefined };

/** A Pusher presence channel: its members are in the presence store whatever the namespace says (pusher/pusher-api.ts). */
const isPusherPresence = (name: string): boolean => name.startsWith('presence-');

/** Overview streams one session may hold open at once (tabs); one more is answered 429. */
export const MAX_STREAMS_PER_SESSION = 4;
/** Overview streams this process serves at once, whatever the sessions (an admin may sign in many times). */
export const MAX_STREAMS = 100;
/** How often an open stream checks that its session is still in force (it ends when not). */
export const STREAM_SESSION_CHECK_MS = 10_000;
/** Channels one search answers at most. */
export const MAX_CHANNEL_RESULTS = 1000;
/** Publications of a channel's detail (newest first). */
export const DETAIL_HISTORY = 20;
/** Presence members of a channel's detail at most. */
export const DETAIL_PRESENCE = 100;
/** Longest user id, token id or channel prefix accepted (bytes). */
export const MAX_ID_BYTES = 255;
/** Entries one export writes at most. */
export const MAX_EXPORT = 100_000;
/** Headers of the answers this module writes itself (SSE, export): what the console's other answers carry. */
const STREAM_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
} as const;

/** Longest audit filter value (characters). */
const MAX_FILTER = 256;

class InputError extends Error {
  readonly code: ApiErrorCode;
  constructor(message: string, code: ApiErrorCode = 'invalid_input') {
    super(message);
    this.code = code;
  }
}

function text(value: unknown, field: string, { required = false, max = MAX_ID_BYTES } = {}): string | undefined {
  if (value === undefined || value === '') {
    if (required) throw new InputError(`${field}: required`);
    return undefined;
  }
  if (typeof value !== 'string') throw new InputError(`${field}: a string`);
  if (Buffer.byteLength(value) > max) throw new InputError(`${field}: at most ${max} bytes`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new InputError(`${field}: no control characters`);
  return value;
}

function integer(value: unknown, field: string, min: number, max: number): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^-?\d{1,16}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new InputError(`${field}: an integer from ${min} to ${max}`);
  return n;
}

/** An epoch-ms integer or an ISO 8601 time. */
function instant(value: unknown, field: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value === 'string' && /^\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?$/.test(value)) {
    const at = Date.parse(value);
    if (!Number.isNaN(at)) return at;
  }
  return integer(value, `${field} (epoch ms or ISO 8601)`, 0, 8.64e15);
}

function bodyObject(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw new InputError('the body must be a JSON object');
  return body as Record<string, unknown>;
}

function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(body)) if (!allowed.includes(key)) throw new InputError(`unknown field "${key.slice(0, 32)}"`);
}

function params(request: FastifyRequest): Record<string, string> {
  return request.params as Record<string, string>;
}

function query(request: FastifyRequest): Record<string, unknown> {
  return request.query as Record<string, unknown>;
}

/** The channel's rules, or the server API's error for a bad name. */
function resolveChannel(node: Node, channel: string): ResolvedChannel {
  try {
    return node.resolve(channel);
  } catch (error) {
    if (error instanceof CommandError) throw new ApiError(error.reply === 'unknown_namespace' ? 'unknown_namespace' : 'invalid_channel', error.detail);
    throw error;
  }
}

export function registerConsoleApi(app: FastifyInstance, ctx: ConsoleContext, deps: ConsoleApiDeps): void {
  const base = `${ctx.basePath}/api`;
  const { node, executor } = deps;
  const ticker = new OverviewTicker(node, ctx.now);
  const keys = new ConsoleKeys(ctx.config, (name) => deps.keyUsage?.lastUsed(name), ctx.now);
  const streamsBySession = new Map<string, number>();
  const openStreams = new Set<(reason?: string) => void>();

  const principal = (request: FastifyRequest): ApiPrincipal => ({ name: `console:${request.consoleAdmin!.name}`, scopes: new Set(['admin']) });

  /** Records an action; `detail` never holds secrets. */
  const audit = (request: FastifyRequest, action: string, target: string | undefined, outcome: 'ok' | 'failed', detail?: Record<string, unknown>): void => {
    ctx.audit.record({ actor: request.consoleAdmin!.name, action, target, address: ctx.clientIp(request), outcome, detail: { via: 'console', ...detail } });
  };

  /** Answers an error thrown by a handler with its registered code. */
  const fail = (reply: FastifyReply, error: unknown): FastifyReply => {
    if (error instanceof InputError) return sendApiError(reply, error.code, error.message);
    if (error instanceof KeyActionError) return sendApiError(reply, error.code, error.message);
    if (error instanceof ApiError) return sendApiError(reply, error.code, error.detail);
    throw error;
  };

  /** Runs an action; audited (with `detail`, never a secret). `run` throws ApiError or InputError. */
  const audited = async (request: FastifyRequest, reply: FastifyReply, action: string, target: string, detail: Record<string, unknown> | undefined, run: () => Promise<unknown>): Promise<unknown> => {
    try {
      const result = await run();
      audit(request, action, target, 'ok', { ...detail, result: result instanceof JsonText ? undefined : result });
      return reply.type('application/json').send(encodeResult(result));
    } catch (error) {
      const code = error instanceof ApiError || error instanceof InputError ? error.code : 'internal';
      audit(request, action, target, 'failed', { ...detail, code });
      return fail(reply, error);
    }
  };

  /** A node call made for a server API method the console cannot send as is (another app's names); its failures answered as that method's. */
  const nodeCall = async (method: string, run: () => Promise<unknown>): Promise<unknown> => {
    try {
      return await run();
    } catch (error) {
      throw executor.failure(error, method);
    }
  };

  /** Runs a server API method as the admin; audited (with `detail`, never a secret). */
  const act = (request: FastifyRequest, reply: FastifyReply, action: string, target: string, method: string, body: Record<string, unknown>, detail?: Record<string, unknown>): Promise<unknown> =>
    audited(request, reply, action, target, detail, () => executor.run(method, body, principal(request)));

  /** The app named `appId` (undefined: the default app, or none is served); 404 for an app that does not exist. */
  const namedApp = (appId: string | undefined): App | undefined => {
    if (appId === undefined) return undefined;
    const found = deps.apps?.byId(appId);
    if (found === undefined) throw new InputError(`app: no app with id "${appId.slice(0, 64)}"`, 'not_found');
    return found.channelPrefix === '' ? undefined : found;
  };

  /** `user` of the app named `appId` (absent: the default app, whose users are the server's own); 404 for an app that does not exist. */
  const appUser = (user: string, appId: string | undefined): AppUser => {
    // `~x~ann` is how the node counts app x's `ann`: never a user id of its own (isReservedUserId); `app` names the app.
    if (isReservedUserId(user)) throw new InputError('user: an id beginning with "~" is no user id (name the app with `app`)');
    const found = namedApp(appId);
    return found === undefined ? { key: user, app: undefined } : { key: found.channelPrefix + user, app: found.id };
  };

  /** The channels of the app named `appId` (absent: the default app's, the server's own); 404 for an app that does not exist. */
  const channelScope = (appId: string | undefined): ChannelScope => {
    const found = namedApp(appId);
    return found === undefined ? SERVER_CHANNELS : { prefix: found.channelPrefix, app: found.id };
  };

  /**
   * An app-local channel name checked by the native grammar and namespaces
   * (a Pusher name is a native name of the default namespace; `~` is in
   * neither grammar, so a name never reaches another app's), then named as
   * the node keeps it.
   */
  const scopedChannel = (channel: string, scope: ChannelScope): ResolvedChannel => {
    const resolved = resolveChannel(node, channel);
    return scope.prefix === '' ? resolved : { ...resolved, channel: scope.prefix + resolved.channel };
  };

  // --- overview --------------------------------------------------------
  app.get(`${base}/overview/stream`, { preHandler: requireRole('viewer') }, async (request, reply) => {
    const session = request.consoleAdmin!.sessionId;
    const open = streamsBySession.get(session) ?? 0;
    if (open >= MAX_STREAMS_PER_SESSION || openStreams.size >= MAX_STREAMS) {
      reply.header('retry-after', '5');
      return sendApiError(reply, 'too_many_requests', open >= MAX_STREAMS_PER_SESSION ? `at most ${MAX_STREAMS_PER_SESSION} overview streams per session` : 'too many overview streams open on this node');
    }
    streamsBySession.set(session, open + 1);
    const cookie = request.cookies[SESSION_COOKIE];
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      ...STREAM_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
    });
    res.write('retry: 2000\n\n');
    let ended = false;
    const end = (reason?: string): void => {
      if (ended) return;
      ended = true;
      stop();
      clearInterval(check);
      openStreams.delete(end);
      const left = (streamsBySession.get(session) ?? 1) - 1;
      if (left <= 0) streamsBySession.delete(session);
      else streamsBySession.set(session, left);
      if (reason !== undefined && !res.destroyed) res.write(`event: end\ndata: ${JSON.stringify({ reason })}\n\n`);
      res.end();
    };
    openStreams.add(end);
    const stop = ticker.add((frame) => {
      if (!res.destroyed && res.writableLength < 1 << 20) res.write(`data: ${frame}\n\n`);
    });
    const check = setInterval(() => {
      ctx.sessions.check(cookie, ctx.now()).then(
        (live) => {
          if (live === undefined) end('session_ended');
        },
        () => end('session_unknown'),
      );
    }, STREAM_SESSION_CHECK_MS);
    res.on('close', () => end());
  });
  app.addHook('preClose', async () => {
    for (const end of [...openStreams]) end('shutdown');
    ticker.close();
  });

  // --- channels --------------------------------------------------------
  app.get(`${base}/channels`, { preHandler: requireRole('viewer') }, async (request, reply) => {
    try {
      const q = query(request);
      const prefix = text(q['prefix'], 'prefix') ?? '';
      const limit = integer(q['limit'], 'limit', 1, MAX_CHANNEL_RESULTS) ?? 100;
      const scope = channelScope(text(q['app'], 'app'));
      const all = node.channels(scope.prefix + prefix);
      // By the app's names; the default app's list leaves out every other app's `~{id}~…`.
      const named: [string, number][] = [];
      for (const [internal, { num_clients }] of Object.entries(all)) {
        const name = localChannel({ channelPrefix: scope.prefix }, internal);
        if (name !== undefined) named.push([name, num_clients]);
      }
      named.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const channels = named.slice(0, limit).map(([channel, subscribers]) => ({ channel, subscribers }));
      return { channels, truncated: named.length > limit };
    } catch (error) {
      return fail(reply, error);
    }
  });

  app.get(`${base}/channels/:channel`, { preHandler: requireRole('viewer') }, async (request, reply) => {
    let method = 'presence';
    try {
      const channel = text(params(request)['channel'], 'channel', { required: true })!;
      const scope = channelScope(text(query(request)['app'], 'app'));
      const resolved = scopedChannel(channel, scope);
      const subscribers = node.channels(resolved.channel)[resolved.channel]?.num_clients ?? 0;
      let presence: unknown[] | null = null;
      if (resolved.options.presence || isPusherPresence(channel)) {
        presence = Object.values(await node.members(resolved.channel)).slice(0, DETAIL_PRESENCE);
      }
      let stream: { epoch: string; offset: number } | null = null;
      let history: unknown[] = [];
      if (resolved.options.historySize > 0) {
        method = 'history';
        const page = JSON.parse(encodeResult(await node.history(resolved, { limit: DETAIL_HISTORY, reverse: true }))) as {
          epoch: string;
          offset: number;
          publications: unknown[];
        };
        stream = { epoch: page.epoch, offset: page.offset };
        history = page.publications;
      }
      return { channel, ...(scope.app === undefined ? {} : { app: scope.app }), subscribers, presence, stream, history };
    } catch (error) {
      // The engine's failures answered as the server API's (`unavailable`, or `internal` logged).
      return fail(reply, error instanceof InputError || error instanceof ApiError ? error : executor.failure(error, method));
    }
  });

  const publishBodyLimit = ctx.config.limits.maxMessageBytes + 1024;
  app.post(`${base}/channels/:channel/publish`, { preHandler: requireRole('operator'), bodyLimit: publishBodyLimit }, async (request, reply) => {
    let channel: string;
    let body: Record<string, unknown>;
    let scope: ChannelScope;
    try {
      channel = text(params(request)['channel'], 'channel', { required: true })!;
      body = bodyObject(request.body);
      onlyFields(body, ['data', 'app']);
      if (!('data' in body)) throw new InputError('data: required');
      scope = channelScope(text(body['app'], 'app'));
    } catch (error) {
      return fail(reply, error);
    }
    if (scope.app === undefined) return act(request, reply, 'channel.publish', channel, 'publish', { channel, data: body['data'] });
    // Another app's channel: the same checks as the server API's `publish` (name, size), to the channel as the node keeps it.
    const data = body['data'];
    const appId = scope.app;
    return audited(request, reply, 'channel.publish', channel, { app: appId }, async () => {
      const resolved = scopedChannel(channel, scope);
      const json = JSON.stringify(data);
      if (json === undefined) throw new ApiError('bad_request');
      if (Buffer.byteLength(json) > ctx.config.limits.maxMessageBytes) throw new ApiError('payload_too_large');
      return nodeCall('publish', () => node.publish(resolved, json, undefined, 'api'));
    });
  });

  // --- connections and users --------------------------------------------
  app.get(`${base}/connections`, { preHandler: requireRole('viewer') }, async (request, reply) => {
    try {
      const user = text(query(request)['user'], 'user', { required: true })!;
      const { key, app: appId } = appUser(user, text(query(request)['app'], 'app'));
      const { connections, missing } = await node.userConnections(key);
      // The app's channel names, never the server-internal `~{id}~name`.
      return { connections: appId === undefined ? connections : connections.map((c) => ({ ...c, channels: c.channels.map(nativeName) })), missing };
    } catch (error) {
      return fail(reply, error);
    }
  });

  app.get(`${base}/connections/apps`, { preHandler: requireRole('viewer') }, async () => ({
    apps: (deps.apps?.list() ?? []).map((a) => ({ id: a.id, name: a.name, default: a.channelPrefix === '' })),
  }));

  app.post(`${base}/users/:user/disconnect`, { preHandler: requireRole('operator') }, async (request, reply) => {
    let user: string;
    let reconnect: boolean;
    let target: AppUser;
    try {
      user = text(params(request)['user'], 'user', { required: true })!;
      const body = bodyObject(request.body);
      onlyFields(body, ['reconnect', 'app']);
      if (body['reconnect'] !== undefined && typeof body['reconnect'] !== 'boolean') throw new InputError('reconnect: true or false');
      reconnect = body['reconnect'] === true;
      target = appUser(user, text(body['app'], 'app'));
    } catch (error) {
      return fail(reply, error);
    }
    if (target.app === undefined) return act(request, reply, 'user.disconnect', user, 'disconnect', { user, reconnect });
    // Another app's user: `/api` refuses its `~{id}~user` (it reaches the server's users only); the node's own call does what `disconnect` does.
    const key = target.key;
    return audited(request, reply, 'user.disconnect', user, { app: target.app }, () => nodeCall('disconnect', async () => ({ disconnected: await node.disconnectUser(key, reconnect) })));
  });

  app.post(`${base}/users/:user/revoke`, { preHandler: requireRole('operator') }, async (request, reply) => {
    let user: string;
    let target: AppUser;
    try {
      user = text(params(request)['user'], 'user', { required: true })!;
      const body = bodyObject(request.body);
      onlyFields(body, ['app']);
      target = appUser(user, text(body['app'], 'app'));
    } catch (error) {
      return fail(reply, error);
    }
    if (target.app === undefined) return act(request, reply, 'user.revoke', user, 'revoke_user', { user });
    const key = target.key;
    return audited(request, reply, 'user.revoke', user, { app: target.app }, () => nodeCall('revoke_user', async () => ({ disconnected: await node.revokeUser(key) })));
  });

  app.post(`${base}/tokens/:id/revoke`, { preHandler: requireRole('operator') }, async (request, reply) => {
    let jti: string;
    let expiresAt: number | undefined;
    try {
      jti = text(params(request)['id'], 'id', { required: true })!;
      const body = bodyObject(request.body);
      onlyFields(body, ['expiresAt']);
      expiresAt = integer(body['expiresAt'], 'expiresAt (epoch seconds)', 1, 253402300799);
    } catch (error) {
      return fail(reply, error);
    }
    return act(request, reply, 'token.revoke', jti, 'revoke_token', { jti, ...(expiresAt === undefined ? {} : { expires_at: expiresAt }) });
  });

  // --- API keys (owner) --------------------------------------------------
  app.get(`${base}/keys`, { preHandler: requireRole('owner') }, async () => ({ keys: keys.list() }));

  app.post(`${base}/keys`, { preHandler: requireRole('owner') }, async (request, reply) => {
    let name: string | undefined;
    try {
      const body = bodyObject(request.body);
      onlyFields(body, ['name', 'scopes']);
      name = parseKeyName(body['name']);
      const made = keys.create(name, parseScopeList(body['scopes']));
      audit(request, 'key.create', name, 'ok', { scopes: made.key.scopes, prefix: made.key.prefix });
      return { key: made.key, secret: made.secret };
    } catch (error) {
      if (name !== undefined) audit(request, 'key.create', name, 'failed', { reason: (error as Error).message });
      return fail(reply, error);
    }
  });

  app.post(`${base}/keys/:id/rotate`, { preHandler: requireRole('owner') }, async (request, reply) => {
    let name: string | undefined;
    try {
      name = parseKeyName(params(request)['id'], 'id');
      const body = bodyObject(request.body);
      onlyFields(body, ['graceSeconds', 'name']);
      const grace = parseGrace(body['graceSeconds']);
      const newName = body['name'] === undefined ? undefined : parseKeyName(body['name']);
      const rotated = keys.rotate(name, grace, newName);
      audit(request, 'key.rotate', name, 'ok', { newKey: rotated.key.name, prefix: rotated.key.prefix, graceSeconds: grace });
      return { key: rotated.key, secret: rotated.secret, old: rotated.old };
    } catch (error) {
      if (name !== undefined) audit(request, 'key.rotate', name, 'failed', { reason: (error as Error).message });
      return fail(reply, error);
    }
  });

  app.post(`${base}/keys/:id/revoke`, { preHandler: requireRole('owner') }, async (request, reply) => {
    let name: string | undefined;
    try {
      name = parseKeyName(params(request)['id'], 'id');
      const body = bodyObject(request.body);
      onlyFields(body, ['graceSeconds']);
      const grace = parseGrace(body['graceSeconds']);
      const key = keys.revoke(name, grace);
      audit(request, 'key.revoke', name, 'ok', { graceSeconds: grace });
      return { key };
    } catch (error) {
      if (name !== undefined) audit(request, 'key.revoke', name, 'failed', { reason: (error as Error).message });
      return fail(reply, error);
    }
  });

  // --- audit log (owner) ---------------------------------------------------
  const auditQuery = (request: FastifyRequest): AuditQuery => {
    const q = query(request);
    return {
      actor: text(q['actor'], 'actor', { max: MAX_FILTER }),
      action: text(q['action'], 'action', { max: 64 }),
      since: instant(q['since'], 'since'),
      until: instant(q['until'], 'until'),
      before: integer(q['before'], 'before', 1, Number.MAX_SAFE_INTEGER)?.toString(),
      limit: integer(q['limit'], 'limit', 1, 1000),
    };
  };

  app.get(`${base}/audit`, { preHandler: requireRole('owner') }, async (request, reply) => {
    try {
      const entries = await ctx.store.queryAudit(auditQuery(request));
      return { entries };
    } catch (error) {
      return fail(reply, error);
    }
  });

  app.get(`${base}/audit/export`, { preHandler: requireRole('owner') }, async (request, reply) => {
    let q: AuditQuery;
    try {
      q = auditQuery(request);
    } catch (error) {
      return fail(reply, error);
    }
    audit(request, 'audit.export', undefined, 'ok', { filter: { actor: q.actor, action: q.action, since: q.since, until: q.until } });
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      ...STREAM_HEADERS,
      'content-type': 'application/x-ndjson; charset=utf-8',
      'content-disposition': 'attachment; filename="herald-audit.ndjson"',
    });
    let written = 0;
    let before = q.before;
    try {
      while (written < MAX_EXPORT && !res.destroyed) {
        const page: AuditEntry[] = await ctx.store.queryAudit({ ...q, before, limit: 1000 });
        if (page.length === 0) break;
        const lines = page.slice(0, MAX_EXPORT - written).map((entry) => JSON.stringify(entry) + '\n');
        written += lines.length;
        if (!res.write(lines.join(''))) await new Promise((resolve) => res.once('drain', resolve));
        before = page[page.length - 1]!.id;
        if (page.length < 1000) break;
      }
    } catch (error) {
      request.log.error({ err: error }, 'audit export failed');
    }
    res.end();
  });
}

