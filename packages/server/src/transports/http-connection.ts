/**
 * What SSE and long polling share: the session registry (a secret per
 * connection that authorizes its HTTP commands), opening a connection from
 * an HTTP request (connect + subscriptions, with recovery from a position
 * vector), and the command endpoint. In cluster mode a session request
 * that reaches a worker other than the session's owner is forwarded to the
 * owner through a SessionRouter (packages/server/src/cluster/worker-engine.ts).
 */
import type { AppPaths, AppScope } from './app-paths.ts';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { validateCommand } from '@herald/protocol/commands';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { apiErrors, decodePositions, disconnects, encodePush, replyErrors, type ApiErrorCode, type ConnectResult, type StreamPosition } from '@herald/protocol';
import { CommandError, DisconnectError, type Client, type HeldSubscription } from '../core/client.ts';
import type { Node } from '../core/node.ts';
import { EncodedFrame } from '../core/encoded-frame.ts';
import { answerJson, apiErrorBody } from '../edge/front.ts';

export const SESSION_HEADER = 'herald-session';
export const MAX_COMMANDS_PER_POST = 100;

/** A request for a session as it travels to the worker that owns the session (cluster mode). */
export interface SessionExchange {
  readonly op: 'command' | 'close' | 'poll';
  /** The secret from the `Herald-Session` header ('' when absent). */
  readonly session: string;
  /** The parsed, already validated request body. */
  readonly body: unknown;
}

/** An HTTP answer: status and JSON text. */
export interface SessionAnswer {
  readonly status: number;
  readonly body: string;
}

export type SessionHandler = (session: string, body: unknown, signal: AbortSignal) => Promise<SessionAnswer>;

/**
 * Cluster mode: a session lives on the worker that opened it, but its next
 * HTTP request may reach any worker. Secrets issued here start with `prefix`
 * (naming this worker); a request with another worker's secret is forwarded
 * to that worker and its answer relayed unchanged. Without a router every
 * session is local.
 */
export interface SessionRouter {
  readonly prefix: string;
  /** True when the secret names another worker. */
  isRemote(secret: string): boolean;
  /** Sends the exchange to the owner; `signal` aborts when the HTTP request goes away. Never rejects. */
  forward(exchange: SessionExchange, signal: AbortSignal): Promise<SessionAnswer>;
  /** Installs what answers exchanges forwarded to this worker. */
  serve(handler: (exchange: SessionExchange, signal: AbortSignal) => Promise<SessionAnswer>): void;
}

/**
 * 16 random bytes for a session secret, cut from a pool filled 256 secrets
 * at a time: one call to the system's CSPRNG per 256 sessions instead of
 * one each (a reconnect storm opens thousands at once).
 */
const SECRETS_PER_FILL = 256;
let secretPool = Buffer.alloc(0);
let secretOffset = 0;
/** 16 random bytes from the pool, as base64url text (22 characters). */
function secretText(): string {
  if (secretOffset + 16 > secretPool.length) {
    secretPool = randomBytes(16 * SECRETS_PER_FILL);
    secretOffset = 0;
  }
  const text = secretPool.toString('base64url', secretOffset, secretOffset + 16);
  secretOffset += 16;
  return text;
}

/** Session secrets → clients. A secret is 128 random bits (after the router's prefix); the client id alone authorizes nothing. */
export class SessionRegistry {
  readonly #sessions = new Map<string, Client>();
  readonly #handlers = new Map<SessionExchange['op'], SessionHandler>();
  readonly #router: SessionRouter | undefined;
  readonly #prefix: string;

  constructor(router?: SessionRouter) {
    this.#router = router;
    this.#prefix = router?.prefix ?? '';
    router?.serve((exchange, signal) => this.answer(exchange, signal));
  }

  register(client: Client): string {
    const secret = this.#prefix + secretText();
    this.#sessions.set(secret, client);
    client.onClosed(() => this.#sessions.delete(secret));
    return secret;
  }

  get(secret: unknown): Client | undefined {
    if (typeof secret !== 'string' || secret.length !== this.#prefix.length + 22 || !secret.startsWith(this.#prefix)) return undefined;
    const client = this.#sessions.get(secret);
    return client === undefined || client.isClosed ? undefined : client;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** How `op` is answered for a session held here (set by the route that serves it). */
  handle(op: SessionExchange['op'], handler: SessionHandler): void {
    this.#handlers.set(op, handler);
  }

  /** Answers an exchange for a session held here. */
  answer(exchange: SessionExchange, signal: AbortSignal): Promise<SessionAnswer> {
    const handler = this.#handlers.get(exchange.op);
    return handler === undefined ? Promise.resolve(apiErrorAnswer('session_unknown')) : handler(exchange.session, exchange.body, signal);
  }

  /** Answers an HTTP request for a session wherever it lives: here, or on the worker its secret names. */
  async route(op: SessionExchange['op'], secret: unknown, body: unknown, reply: FastifyReply): Promise<FastifyReply> {
    const answer = await this.#exchange(op, secret, body, reply.raw);
    return reply.code(answer.status).type('application/json').send(answer.body);
  }

  /** `route` for a request served by the front (../edge/front.ts); `headers` are the context's. */
  async routeRaw(op: SessionExchange['op'], secret: unknown, body: unknown, response: ServerResponse, headers: readonly string[]): Promise<void> {
    const answer = await this.#exchange(op, secret, body, response);
    answerJson(response, headers, answer.status, answer.body);
  }

  async #exchange(op: SessionExchange['op'], secret: unknown, body: unknown, response: ServerResponse): Promise<SessionAnswer> {
    const controller = new AbortController();
    // Abort only a request that goes away unanswered (aborting builds a
    // DOMException: not on every answered poll).
    let answered = false;
    response.once('close', () => {
      if (!answered) controller.abort();
    });
    const exchange: SessionExchange = { op, session: typeof secret === 'string' ? secret : '', body };
    const router = this.#router;
    const answer =
      router !== undefined && exchange.session !== '' && router.isRemote(exchange.session)
        ? await router.forward(exchange, controller.signal)
        : await this.answer(exchange, controller.signal);
    answered = true;
    return answer;
  }
}

/** A registered API error as a SessionAnswer. */
export function apiErrorAnswer(code: ApiErrorCode, detail?: string): SessionAnswer {
  return { status: apiErrors[code].status, body: JSON.stringify(apiErrorBody(code, detail)) };
}


/**
 * The edge's word on a new connection (WebSocket upgrade, SSE GET, long-poll
 * open), asked before anything is opened: the origin allowlist, the
 * connection caps, and a credential found outside the protocol (the token
 * cookie, only for an allowed `Origin`). Implemented by packages/server/src/edge/edge.ts.
 */
export interface ConnectionGate {
  /**
   * Synchronous when the limits are per node; a promise (never rejected)
   * when they are counted in Redis. `scope`: the app of a request on
   * `/apps/{id}/connection/…` (its origins and connection cap apply).
   */
  open(request: IncomingMessage, scope?: AppScope): GateAnswer | Promise<GateAnswer>;
  /** Asked once `connect` succeeded: false when the user already holds too many connections on this node. */
  admitUser(client: Client): boolean;
}

/** Something a connection holds until it closes; `release` is idempotent. */
export interface Releasable {
  release(): void;
}

export type GateAnswer =
  | { readonly refused: ApiErrorCode; readonly retryAfterSeconds?: number | undefined }
  | {
      readonly refused?: undefined;
      /** Token for `client.fallbackToken` (used by `connect` when it carries none). */
      readonly fallbackToken: string | undefined;
      /**
       * The connection's place under the caps: the transport releases it
       * (idempotent) when the connection is gone, or when opening it failed.
       */
      readonly place: Releasable;
      /** The client's address (trusted proxies honoured), for the console's connection list; absent: the socket's peer. */
      readonly address?: string | undefined;
    };

const noPlace: Releasable = { release: () => {} };

/** A gate that admits everything (when no edge is configured). */
export const openGate: ConnectionGate = {
  open: () => ({ fallbackToken: undefined, place: noPlace }),
  admitUser: () => true,
};

/** Answers a refused connection request with its registered error (and `Retry-After`). */
export function sendRefusal(reply: FastifyReply, answer: { readonly refused: ApiErrorCode; readonly retryAfterSeconds?: number | undefined }): FastifyReply {
  if (answer.retryAfterSeconds !== undefined) reply.header('retry-after', String(answer.retryAfterSeconds));
  return sendApiError(reply, answer.refused);
}

export interface OpenRequest {
  readonly token: string | undefined;
  readonly channels: readonly string[];
  /** Position vector from Last-Event-ID or a cursor. */
  readonly vector: string | undefined;
  /** The client announced batched frames (`batch=1`); `connected` then says `batch: true`. */
  readonly batch?: boolean;
  /** The connection's name (the `connect` command's `name`); WebSocket opens only. */
  readonly name?: string | undefined;
}

export type OpenFailure = { readonly error: ApiErrorCode; readonly detail?: string };

/**
 * Connects the client and checks every requested channel before anything is
 * streamed, so that failures are plain HTTP errors. Returns the subscribe
 * requests to run once the stream has started: at once (no promise) when
 * `connect` asks nothing (no token to verify, no connect hook).
 */
export function connectHttpClient(client: Client, node: Node, request: OpenRequest): Opened | OpenFailure | Promise<Opened | OpenFailure> {
  let connecting: ConnectResult | Promise<ConnectResult>;
  try {
    connecting = client.connect(request.token, request.name, request.batch === true);
  } catch (error) {
    return connectRefused(client, error);
  }
  // At once when connect asked nothing (no token, no hook): no promise per open.
  if (connecting instanceof Promise) return connecting.then((connected) => channelsOf(client, node, request, connected), (error: unknown) => connectRefused(client, error));
  return channelsOf(client, node, request, connecting);
}

/** A connection opened from an HTTP request: its `connected` result, and the subscriptions to run once it has started. */
export interface Opened {
  readonly connected: ConnectResult;
  readonly subscribe: readonly ConnectTimeSubscription[];
}

/** `connect` failed: the client is closed, and the HTTP error says why. */
function connectRefused(client: Client, error: unknown): OpenFailure {
  if (error instanceof DisconnectError) {
    if (error.entry !== undefined) {
      // The connect hook refused: its reason goes in the detail.
      client.close(error.entry.code, error.entry.reason);
      return { error: 'connection_denied', detail: error.entry.reason };
    }
    client.disconnect(error.disconnect);
    if (error.disconnect === 'token_expired') return { error: 'token_expired' };
    if (error.disconnect === 'hook_unavailable') return { error: 'hook_unavailable' };
    // permission_denied at connect: no token, and no namespace allows anonymous access
    return { error: error.disconnect === 'permission_denied' ? 'anonymous_not_allowed' : 'unauthorized' };
  }
  client.disconnect('internal');
  return { error: 'internal' };
}

/** `connectHttpClient` once connected: every requested channel checked, in the vector's order, then by name. */
function channelsOf(client: Client, node: Node, request: OpenRequest, connected: ConnectResult): Opened | OpenFailure {
  // The vector's positions (shared by the opens that send the same vector), then the channels asked by name, each once.
  const vector = request.vector === undefined ? null : decodeVector(request.vector, node.config.channels.maxNameBytes);
  let named: string[] | undefined;
  if (request.channels.length > 0) {
    const seen = new Set<string>();
    for (const channel of request.channels) {
      if (seen.has(channel) || vector?.positions.has(channel) === true) continue;
      seen.add(channel);
      (named ??= []).push(channel);
    }
  }
  const max = node.config.limits.maxChannelsPerConnection;
  if ((vector?.subscribe.length ?? 0) + (named?.length ?? 0) > max) {
    client.disconnect('bad_request');
    return { error: 'bad_request', detail: `more than limits.maxChannelsPerConnection (${max}) channels` };
  }
  // The vector's subscriptions as they are, unless a channel of it is private (reported, not subscribed) or others are named.
  let subscribe: ConnectTimeSubscription[] | undefined;
  const fromVector = vector?.subscribe ?? noSubscriptions;
  for (let i = 0; i < fromVector.length; i++) {
    const wanted = fromVector[i]!;
    const checked = checkChannel(client, node, wanted);
    if ('error' in checked) return checked;
    if (checked !== wanted) subscribe ??= fromVector.slice(0, i);
    subscribe?.push(checked);
  }
  if (named !== undefined) {
    subscribe ??= fromVector.slice();
    for (const channel of named) {
      const checked = checkChannel(client, node, { channel });
      if ('error' in checked) return checked;
      subscribe.push(checked);
    }
  }
  return { connected, subscribe: subscribe ?? fromVector };
}

const noSubscriptions: readonly ConnectTimeSubscription[] = [];

/** A requested channel checked for the client: the subscription to run (`wanted` itself, or reported: a private channel), or why the open fails. */
function checkChannel(client: Client, node: Node, wanted: ConnectTimeSubscription): ConnectTimeSubscription | OpenFailure {
  const resolved = node.rules.resolve(wanted.channel);
  if ('reply' in resolved) {
    client.disconnect('bad_request');
    return resolved.detail === undefined ? { error: resolved.reply } : { error: resolved.reply, detail: resolved.detail };
  }
  try {
    node.authorizeSubscribe(client, resolved);
  } catch {
    client.disconnect('permission_denied');
    return { error: 'anonymous_not_allowed' };
  }
  if (!resolved.options.private) return wanted;
  // Private channels need a subscription token, which a URL or a
  // resumed position cannot carry: asked for by name it is refused;
  // from a position vector it is reported `unsubscribed`, so the client
  // resubscribes by POST with its token and position.
  if (wanted.since === undefined) {
    client.disconnect('permission_denied');
    return { error: 'subscription_token_required' };
  }
  return { channel: wanted.channel, since: wanted.since, needsToken: true };
}

/** A decoded position vector: its positions, and a connect-time subscription per position (shared, read-only). */
interface DecodedVector {
  readonly positions: ReadonlyMap<string, StreamPosition>;
  readonly subscribe: readonly ConnectTimeSubscription[];
}

/**
 * The last position vector decoded at an open (null: malformed): in a
 * reconnect storm most clients of a channel send the same vector (the last
 * publication they all got), so one decoding, and one list of subscriptions
 * made of it, serves them all. Read-only: an open that adds to the list
 * copies it.
 */
let lastVector: string | undefined;
let lastVectorMaxBytes = 0;
let lastDecoded: DecodedVector | null = null;
function decodeVector(vector: string, maxNameBytes: number): DecodedVector | null {
  if (vector !== lastVector || maxNameBytes !== lastVectorMaxBytes) {
    const positions = decodePositions(vector, maxNameBytes);
    const subscribe: ConnectTimeSubscription[] = [];
    if (positions !== null) for (const [channel, since] of positions) subscribe.push({ channel, since });
    lastDecoded = positions === null ? null : { positions, subscribe };
    lastVector = vector;
    lastVectorMaxBytes = maxNameBytes;
  }
  return lastDecoded;
}

export interface ConnectTimeSubscription {
  readonly channel: string;
  readonly since?: StreamPosition;
  /** A private channel from a position vector: reported, not subscribed. */
  readonly needsToken?: boolean;
}

/**
 * Runs the connect-time subscriptions after the stream has started. The
 * server holds them for the client (packages/server/src/core/client.ts `addHeld`):
 * all of them enter the connection's position vector before the first is
 * established (so every event id names every resumed position), their
 * positions stay there throughout, and while the engine is unavailable they
 * are retried in the background. Undefined when all of them are done
 * already: nothing waited (no subscription token or hook asked, an engine and
 * presence store that answer from memory), as in a connect storm.
 */
export function subscribeHttpClient(client: Client, subscribe: readonly ConnectTimeSubscription[]): Promise<void> | undefined {
  const added: HeldSubscription[] = [];
  for (let i = 0; i < subscribe.length; i++) {
    const held = addOneHeld(client, subscribe[i]!);
    if (held === 'stop') return undefined;
    if (held instanceof Promise) return addHeldRest(client, subscribe, i, held, added);
    if (held !== 'skip') added.push(held);
  }
  return establishAll(client, added, 0);
}

/**
 * One connect-time subscription into the client's vector: held (a promise of it when a subscription token or a
 * subscribe hook is asked), 'skip' (refused: told to the client as an `unsubscribed` push) or 'stop' (the client is
 * closed, or failed).
 */
function addOneHeld(client: Client, { channel, since, needsToken }: ConnectTimeSubscription): HeldSubscription | Promise<HeldSubscription> | 'skip' | 'stop' {
  if (client.isClosed) return 'stop';
  if (needsToken === true) {
    const entry = disconnects.permission_denied;
    client.writePush(new EncodedFrame(encodePush({ push: 'unsubscribed', channel, code: entry.code, reason: 'subscription token required' })));
    return 'skip';
  }
  try {
    return client.addHeld(since === undefined ? { channel } : { channel, recover: true, epoch: since.epoch, offset: since.offset });
  } catch (error) {
    return heldRefused(client, channel, error);
  }
}

/** `addHeld` refused `channel`: a CommandError is told to the client as a push ('skip'); anything else closes it ('stop'). */
function heldRefused(client: Client, channel: string, error: unknown): 'skip' | 'stop' {
  if (error instanceof CommandError) {
    // Tell the client, as a push, what a subscribe reply would have said.
    const entry = error.entry ?? replyErrors[error.reply];
    client.writePush(new EncodedFrame(encodePush({ push: 'unsubscribed', channel, code: entry.code, reason: entry.message })));
    return 'skip';
  }
  client.node.logger.error({ err: error }, 'connect-time subscribe failed');
  client.disconnect('internal');
  return 'stop';
}

/** `subscribeHttpClient` from the `index`th subscription on, once one had to ask a token or a hook (`pending`). */
async function addHeldRest(client: Client, subscribe: readonly ConnectTimeSubscription[], index: number, pending: Promise<HeldSubscription>, added: HeldSubscription[]): Promise<void> {
  for (let i = index; i < subscribe.length; i++) {
    let held: HeldSubscription | Promise<HeldSubscription> | 'skip' | 'stop' = i === index ? pending : addOneHeld(client, subscribe[i]!);
    if (held instanceof Promise) {
      try {
        held = await held;
      } catch (error) {
        held = heldRefused(client, subscribe[i]!.channel, error);
      }
    }
    if (held === 'stop') return;
    if (held !== 'skip') added.push(held);
  }
  await establishAll(client, added, 0);
}

/** The first attempt at each held subscription from `from` on, in order; undefined when none had to wait. */
function establishAll(client: Client, added: readonly HeldSubscription[], from: number): Promise<void> | undefined {
  for (let i = from; i < added.length; i++) {
    if (client.isClosed) return undefined;
    let attempt: Promise<void> | undefined;
    try {
      attempt = client.establishHeld(added[i]!);
    } catch (error) {
      establishFailed(client, error);
      return undefined;
    }
    if (attempt !== undefined) {
      return attempt.then(
        () => establishAll(client, added, i + 1),
        (error: unknown) => establishFailed(client, error),
      );
    }
  }
  return undefined;
}

function establishFailed(client: Client, error: unknown): void {
  client.node.logger.error({ err: error }, 'connect-time subscribe failed');
  client.disconnect('internal');
}

export type CommandBatchResult = { readonly status: 200; readonly body: string } | { readonly error: ApiErrorCode; readonly detail?: string };

/** Runs POSTed commands (one or an array) in order; answers the JSON array of replies. */
export async function runCommandBatch(client: Client, body: unknown): Promise<CommandBatchResult> {
  const batch = Array.isArray(body);
  const list = batch ? body : [body];
  if (list.length === 0 || list.length > MAX_COMMANDS_PER_POST) return { error: 'bad_request', detail: `a batch holds 1 to ${MAX_COMMANDS_PER_POST} commands` };
  const replies: string[] = [];
  const sink = (frame: string) => {
    replies.push(frame);
  };
  const commands = [];
  for (const [index, value] of list.entries()) {
    const decoded = validateCommand(value, batch ? `/${index}` : '');
    if (!decoded.ok && decoded.error === 'malformed') return decoded.detail === undefined ? { error: 'bad_request' } : { error: 'bad_request', detail: decoded.detail };
    commands.push(decoded);
  }
  for (const decoded of commands) {
    if (client.isClosed) break;
    const admitted = client.admitInbound();
    if (client.isClosed) break;
    if (!decoded.ok) {
      if (decoded.error === 'method_not_found') client.replyError(decoded.id, 'method_not_found', sink);
      else if (decoded.error === 'bad_params') client.replyError(decoded.id, 'bad_request', sink, decoded.detail);
      continue;
    }
    if (!admitted) {
      if (decoded.command.id !== undefined) client.replyError(decoded.command.id, 'too_many_requests', sink);
      continue;
    }
    await client.handleCommand(decoded.command, sink);
  }
  return { status: 200, body: '[' + replies.join(',') + ']' };
}

export const COMMAND_PATH = '/connection/command';
export const CLOSE_PATH = '/connection/close';

/** POST /connection/command and /connection/close, shared by SSE and long polling. */
export function registerHttpCommands(app: FastifyInstance, node: Node, sessions: SessionRegistry, appPaths?: AppPaths): void {
  sessions.handle('command', async (secret, body) => {
    const client = sessions.get(secret);
    if (client === undefined) return apiErrorAnswer('session_unknown');
    const result = await runCommandBatch(client, body);
    return 'error' in result ? apiErrorAnswer(result.error, result.detail) : { status: 200, body: result.body };
  });
  sessions.handle('close', async (secret) => {
    const client = sessions.get(secret);
    if (client === undefined) return apiErrorAnswer('session_unknown');
    client.close(1000, 'closed by client');
    return { status: 200, body: '{}' };
  });
  app.post(COMMAND_PATH, { bodyLimit: node.config.limits.maxMessageBytes }, (request, reply) =>
    sessions.route('command', request.headers[SESSION_HEADER], request.body, reply),
  );
  app.post(CLOSE_PATH, (request, reply) => sessions.route('close', request.headers[SESSION_HEADER], undefined, reply));
  if (appPaths === undefined) return;
  // The same under /apps/{id}/ (transports/app-paths.ts). A session belongs to the app it was opened on: the path's app is only checked to exist and be enabled.
  const refusal = (url: string): ApiErrorCode | undefined => appPaths.match(url.split('?', 1)[0] ?? '')?.refused;
  app.post(`/apps/:appId${COMMAND_PATH}`, { bodyLimit: node.config.limits.maxMessageBytes }, (request, reply) => {
    const refused = refusal(request.url);
    if (refused !== undefined) return sendApiError(reply, refused);
    return sessions.route('command', request.headers[SESSION_HEADER], request.body, reply);
  });
  app.post(`/apps/:appId${CLOSE_PATH}`, (request, reply) => {
    const refused = refusal(request.url);
    if (refused !== undefined) return sendApiError(reply, refused);
    return sessions.route('close', request.headers[SESSION_HEADER], undefined, reply);
  });
}

/** A query flag (`batch`, `connect`) set: `1` or `true`, the first value when repeated. */
export function queryFlag(value: unknown): boolean {
  const one = Array.isArray(value) ? (value as unknown[])[0] : value;
  return one === '1' || one === 'true';
}

export function sendApiError(reply: FastifyReply, code: ApiErrorCode, detail?: string): FastifyReply {
  return reply.code(apiErrors[code].status).type('application/json').send(apiErrorBody(code, detail));
}
