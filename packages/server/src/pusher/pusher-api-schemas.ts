/**
 * The Pusher HTTP API's contract (docs/pusher.md, "HTTP API"), in one place:
 * the request bodies the routes check (pusher-api.ts), the answers they
 * give, the query parameters of request signing, and the error registry.
 * The OpenAPI description (api/openapi.ts) is generated from these, so the
 * document and the routes cannot disagree. No Node or fastify imports.
 */
import { Type } from '@sinclair/typebox';

/** Every error the Pusher HTTP API answers: the `herald-error` header's code, its status, and when. */
export const PUSHER_API_ERRORS = {
  invalid_request: { status: 400, summary: 'A malformed query, a body that is not JSON or not as the route takes it, a channel or event name Pusher refuses, too many channels or events.' },
  unauthorized: { status: 401, summary: 'Request signing failed: a missing auth parameter, another app\'s key, an unsupported auth_version, a timestamp outside the window, a body that does not match body_md5, a wrong signature.' },
  app_disabled: { status: 403, summary: 'The app is disabled (`enabled: false`).' },
  app_not_found: { status: 404, summary: 'No app has the id in the path.' },
  payload_too_large: { status: 413, summary: 'The body is over `pusher.maxApiBodyBytes`, or an event\'s data over the app\'s `limits.maxEventPayloadBytes`.' },
  unsupported_media_type: { status: 415, summary: 'A body that is not `application/json`.' },
  too_many_requests: { status: 429, summary: 'Over the app\'s `limits.apiRequestsPerSecond` on this node; `Retry-After` says when to try again.' },
  unavailable: { status: 503, summary: 'The server is draining, or the engine cannot take publications now (Redis down).' },
  internal: { status: 500, summary: 'An unexpected failure (logged).' },
} as const;

export type PusherApiErrorCode = keyof typeof PUSHER_API_ERRORS;

/** `info` of a trigger or a channel query: `user_count`, `subscription_count`, comma-separated. */
const Info = Type.String({ description: 'Attributes to answer, comma-separated: `subscription_count`, `user_count` (presence channels only).' });

export const EventBody = Type.Object(
  {
    name: Type.String({ description: 'The event name (at most the app\'s `limits.maxEventNameLength`; not `pusher:…` or `pusher_internal:…`).' }),
    data: Type.String({ description: 'The event data, a string (usually JSON text), at most the app\'s `limits.maxEventPayloadBytes` in UTF-8.' }),
    channels: Type.Optional(Type.Array(Type.String(), { maxItems: 1000, description: 'The channels (1 to the app\'s `limits.maxEventChannelsAtOnce`); or `channel`.' })),
    channel: Type.Optional(Type.String({ description: 'One channel; or `channels`.' })),
    socket_id: Type.Optional(Type.String({ description: 'A connection (`digits.digits`) that does not receive the event.' })),
    info: Type.Optional(Info),
  },
  { additionalProperties: false },
);

export const BatchEvent = Type.Object(
  {
    name: Type.String(),
    data: Type.String(),
    channel: Type.String(),
    socket_id: Type.Optional(Type.String()),
    info: Type.Optional(Info),
  },
  { additionalProperties: false },
);

export const BatchBody = Type.Object(
  { batch: Type.Array(BatchEvent, { maxItems: 1000, description: '1 to the app\'s `limits.maxEventBatchSize` events, every one checked before any is published.' }) },
  { additionalProperties: false },
);

export const EmptyBody = Type.Object({}, { additionalProperties: false });

/** What the server tells of one channel (only what was asked for). */
export const ChannelInfo = Type.Object(
  {
    subscription_count: Type.Optional(Type.Integer({ minimum: 0 })),
    user_count: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);

const ChannelsByName = Type.Record(Type.String(), ChannelInfo);

/** `POST /apps/{app_id}/events`: `{}`, or the channels' info when asked for. */
export const EventsResult = Type.Object({ channels: Type.Optional(ChannelsByName) }, { additionalProperties: false });

/** `POST /apps/{app_id}/batch_events`: `{}`, or one entry per event (in order) when one asked for info. */
export const BatchResult = Type.Object({ batch: Type.Optional(Type.Array(ChannelInfo)) }, { additionalProperties: false });

/** `GET /apps/{app_id}/channels`. */
export const ChannelsResult = Type.Object({ channels: ChannelsByName }, { additionalProperties: false });

/** `GET /apps/{app_id}/channels/{channel_name}`. */
export const ChannelResult = Type.Object(
  {
    occupied: Type.Boolean(),
    subscription_count: Type.Optional(Type.Integer({ minimum: 0 })),
    user_count: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);

/** `GET /apps/{app_id}/channels/{channel_name}/users`. */
export const UsersResult = Type.Object({ users: Type.Array(Type.Object({ id: Type.String() }, { additionalProperties: false })) }, { additionalProperties: false });

/** `POST /apps/{app_id}/users/{user_id}/terminate_connections`. */
export const EmptyResult = Type.Object({}, { additionalProperties: false });

/** Request signing's query parameters (request-signing.ts), as every route takes them. */
export const SIGNING_PARAMETERS = [
  { name: 'auth_key', required: true, description: 'The key of the app the path names.' },
  { name: 'auth_timestamp', required: true, description: 'Unix seconds, within `pusher.authTimestampWindowSeconds` of the server\'s clock.' },
  { name: 'auth_version', required: true, description: '`1.0`.' },
  {
    name: 'auth_signature',
    required: true,
    description:
      'Hex HMAC-SHA256, keyed with the app\'s secret, of `METHOD\\nPATH\\nQUERY`: the method upper case, the path as sent, every other query parameter (keys lower-cased) sorted by key as `key=value` joined by `&`.',
  },
  { name: 'body_md5', required: false, description: 'The hex MD5 of the body\'s bytes, whenever there is a body.' },
] as const;

/** The routes (OpenAPI path templates) with what they take and answer. */
export const PUSHER_ROUTES = [
  { path: '/apps/{app_id}/events', method: 'post', route: 'events', summary: 'Trigger an event on one or more channels.', body: EventBody, result: EventsResult, query: [] },
  { path: '/apps/{app_id}/batch_events', method: 'post', route: 'batch_events', summary: 'Trigger several events in one request.', body: BatchBody, result: BatchResult, query: [] },
  {
    path: '/apps/{app_id}/channels',
    method: 'get',
    route: 'channels',
    summary: 'The app\'s occupied channels.',
    body: undefined,
    result: ChannelsResult,
    query: [
      { name: 'filter_by_prefix', description: 'Only channels whose name starts with this.' },
      { name: 'info', description: '`subscription_count`; `user_count` with a `presence-` prefix.' },
    ],
  },
  {
    path: '/apps/{app_id}/channels/{channel_name}',
    method: 'get',
    route: 'channel',
    summary: 'One channel: occupied, and its counts when asked for.',
    body: undefined,
    result: ChannelResult,
    query: [{ name: 'info', description: '`subscription_count`; `user_count` for presence channels.' }],
  },
  { path: '/apps/{app_id}/channels/{channel_name}/users', method: 'get', route: 'channel_users', summary: 'A presence channel\'s users, each once.', body: undefined, result: UsersResult, query: [] },
  {
    path: '/apps/{app_id}/users/{user_id}/terminate_connections',
    method: 'post',
    route: 'terminate_connections',
    summary: 'Close every connection signed in as the user, on every node.',
    body: EmptyBody,
    result: EmptyResult,
    query: [],
  },
] as const;
