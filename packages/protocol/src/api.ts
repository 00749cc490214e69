/**
 * The server HTTP API (`POST /api/<method>`, docs/protocol.md "Server HTTP
 * API") as TypeBox schemas: for each method its scope, its request body and
 * its result, plus the error body. One source for the server (which checks
 * requests against them), the server SDK (whose request and result types are
 * `Static<>` of them, and which checks answers against them) and the OpenAPI
 * description (docs/openapi.json).
 *
 * Requests are strict: an unknown key is a `bad_request`. Results and the
 * error body allow keys they do not name, so a newer server may add fields
 * without breaking an older SDK.
 *
 * No Node APIs; TypeBox only. Not part of the main entry: the browser SDK
 * does not carry TypeBox.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { apiErrors, type ApiErrorCode } from './codes.ts';

/** Who may call a method: `admin` keys may call every method. */
export type ApiScope = 'publish' | 'read' | 'admin';

/** Limits that shape the schemas; the server passes its config, documents use the defaults. */
export interface ApiSchemaLimits {
  /** `api.maxBroadcastChannels`: most channels in one broadcast. */
  readonly maxBroadcastChannels: number;
  /** `api.maxBatchPublishes`: most publishes in one batch. */
  readonly maxBatchPublishes: number;
}

/** The config's defaults (`api.maxBroadcastChannels`, `api.maxBatchPublishes`). */
export const defaultApiLimits: ApiSchemaLimits = Object.freeze({ maxBroadcastChannels: 1000, maxBatchPublishes: 1000 });

const strict = { additionalProperties: false } as const;

const Channel = Type.String({ minLength: 1, maxLength: 1024, description: 'Channel name, `namespace:name` (docs/protocol.md "Channels").' });
const User = Type.String({
  minLength: 1,
  maxLength: 256,
  description: 'User id: the `sub` claim of the user\'s tokens. Never begins with `~` (the server\'s names for apps\' users; refused with `invalid_input`).',
});
const Offset = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
/** A position in a request: its epoch is never empty. */
const Since = Type.Object({ epoch: Type.String({ minLength: 1, maxLength: 32 }), offset: Offset }, { ...strict, description: 'A stream position: publications after it.' });
/** The epoch of a stream; empty in a namespace without history. */
const Epoch = Type.String({ maxLength: 32, description: 'The stream\'s epoch; empty when the namespace keeps no history.' });
/** What makes a publish safe to retry (docs/protocol.md "Idempotent publish"). */
const idempotencyKey = (more = '') =>
  Type.String({
    minLength: 1,
    maxLength: 128,
    pattern: '^[\\x21-\\x7E]+$',
    description: `Makes the publish safe to retry: within \`api.idempotencyWindowMs\` (default 5 minutes) a publish to the same channel with the same key answers the first publish's position and publishes nothing. 1 to 128 printable ASCII characters, no spaces.${more}`,
  });
const Disconnected = Type.Integer({ minimum: 0, description: 'Connections closed on the node that answered (other nodes close theirs too).' });

const ClientInfo = Type.Object(
  {
    client: Type.String({ description: 'Connection id.' }),
    user: Type.String({ description: 'User id (`""` when anonymous).' }),
    conn_info: Type.Optional(Type.Unknown({ description: 'The `info` claim of the connection token (or what the connect hook set).' })),
    chan_info: Type.Optional(Type.Unknown({ description: 'What the subscribe hook attached for this channel (docs/hooks.md).' })),
  },
  { description: 'A connection, as presence and publications show it.' },
);

const Publication = Type.Object(
  {
    offset: Offset,
    data: Type.Unknown({ description: 'The published JSON value.' }),
    info: Type.Optional(ClientInfo),
  },
  { description: 'A publication from history; `info` names the publishing client (client-side publish only).' },
);

/** `{code, message}` of a failed channel in a broadcast or batch. */
const ErrorCode = Type.Union(
  (Object.keys(apiErrors) as ApiErrorCode[]).map((code) => Type.Literal(code)),
  { description: 'An API error code (docs/errors.md).' },
);

/** The body of every failed answer (status from docs/errors.md). */
export const ApiErrorBody = Type.Object(
  {
    error: Type.Object({
      code: ErrorCode,
      message: Type.String({ description: 'The fixed text of the code.' }),
      detail: Type.Optional(Type.String({ description: 'What in the request was wrong, when known: `/channel: expected string`.' })),
    }),
  },
  { description: 'An error: `{"error":{"code","message","detail?"}}`.' },
);
export type ApiErrorBody = Static<typeof ApiErrorBody>;

export interface ApiMethodSchema<Request extends TSchema = TSchema, Result extends TSchema = TSchema> {
  readonly scope: ApiScope;
  /** One line, for the OpenAPI description. */
  readonly summary: string;
  readonly request: Request;
  readonly result: Result;
}

function method<Request extends TSchema, Result extends TSchema>(scope: ApiScope, summary: string, request: Request, result: Result): ApiMethodSchema<Request, Result> {
  return { scope, summary, request, result };
}

/** Every method of the server API, with the schemas of its request body and result. */
export function createApiSchemas(limits: ApiSchemaLimits = defaultApiLimits) {
  return {
    publish: method(
      'publish',
      'Publish a JSON value to a channel.',
      Type.Object({ channel: Channel, data: Type.Unknown({ description: 'Any JSON value (required).' }), idempotency_key: Type.Optional(idempotencyKey()) }, strict),
      Type.Object({ epoch: Epoch, offset: Type.Integer({ minimum: 0, description: 'The publication\'s offset; 0 when the namespace keeps no history.' }) }),
    ),
    broadcast: method(
      'publish',
      'Publish one JSON value to many channels; each channel succeeds or fails on its own.',
      Type.Object(
        {
          channels: Type.Array(Channel, { minItems: 1, maxItems: limits.maxBroadcastChannels, uniqueItems: true }),
          data: Type.Unknown({ description: 'Any JSON value (required).' }),
          idempotency_key: Type.Optional(idempotencyKey(' Remembered per channel: a retried broadcast publishes again to none of the channels the first one reached.')),
        },
        strict,
      ),
      Type.Object({
        results: Type.Array(
          Type.Union([
            Type.Object({ channel: Type.String(), epoch: Epoch, offset: Offset }),
            Type.Object({ channel: Type.String(), error: Type.Object({ code: ErrorCode, message: Type.String() }) }),
          ]),
          { description: 'One entry per channel, in the order asked.' },
        ),
      }),
    ),
    batch: method(
      'publish',
      'Publish many JSON values, each to its channel, in order; each publish succeeds or fails on its own.',
      Type.Object(
        {
          publishes: Type.Array(
            Type.Object({ channel: Channel, data: Type.Unknown({ description: 'Any JSON value (required).' }), idempotency_key: Type.Optional(idempotencyKey()) }, strict),
            { minItems: 1, maxItems: limits.maxBatchPublishes, description: 'Published in this order; a channel may appear more than once.' },
          ),
        },
        strict,
      ),
      Type.Object({
        results: Type.Array(
          Type.Union([
            Type.Object({ channel: Type.String(), epoch: Epoch, offset: Offset }),
            Type.Object({ channel: Type.String(), error: Type.Object({ code: ErrorCode, message: Type.String() }) }),
          ]),
          { description: 'One entry per publish, in the order asked.' },
        ),
      }),
    ),
    history: method(
      'read',
      'Read a channel\'s stream: its position and up to `limit` publications.',
      Type.Object(
        {
          channel: Channel,
          limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 10000, description: 'Most publications to return (0, the default: only the position); capped by the namespace\'s historySize.' })),
          since: Type.Optional(Since),
          reverse: Type.Optional(Type.Boolean({ description: 'Newest first (ignored with `since`).' })),
        },
        strict,
      ),
      Type.Object({ epoch: Epoch, offset: Offset, publications: Type.Array(Publication) }),
    ),
    presence: method(
      'read',
      'Who is subscribed to a channel (namespaces with presence).',
      Type.Object({ channel: Channel }, strict),
      Type.Object({ clients: Type.Record(Type.String(), ClientInfo, { description: 'By connection id.' }) }),
    ),
    presence_stats: method(
      'read',
      'How many connections and distinct users are subscribed to a channel.',
      Type.Object({ channel: Channel }, strict),
      Type.Object({ num_clients: Type.Integer({ minimum: 0 }), num_users: Type.Integer({ minimum: 0 }) }),
    ),
    channels: method(
      'read',
      'Channels with subscribers, and how many, across nodes.',
      Type.Object({ prefix: Type.Optional(Type.String({ maxLength: 1024, description: 'Only channels starting with this.' })) }, strict),
      Type.Object({ channels: Type.Record(Type.String(), Type.Object({ num_clients: Type.Integer({ minimum: 0 }) })) }),
    ),
    disconnect: method(
      'admin',
      'Close every connection of a user, on every node.',
      Type.Object({ user: User, reconnect: Type.Optional(Type.Boolean({ description: 'Close with 3007 (reconnect) instead of 3503 (do not).' })) }, strict),
      Type.Object({ disconnected: Disconnected }),
    ),
    revoke_token: method(
      'admin',
      'Refuse a token by its `jti` and close the connections that use it.',
      Type.Object(
        {
          jti: Type.String({ minLength: 1, maxLength: 256 }),
          expires_at: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 40, description: 'Unix seconds: refused until then (default: auth.revocationRetentionMs).' })),
        },
        strict,
      ),
      Type.Object({ disconnected: Disconnected }),
    ),
    revoke_user: method(
      'admin',
      'Refuse every token of a user issued until now and close the user\'s connections.',
      Type.Object({ user: User }, strict),
      Type.Object({ disconnected: Disconnected }),
    ),
    info: method(
      'read',
      'The server\'s version, uptime and nodes.',
      Type.Object({}, strict),
      Type.Object({
        version: Type.String(),
        uptime_ms: Type.Integer({ minimum: 0 }),
        nodes: Type.Array(
          Type.Object({
            id: Type.String(),
            version: Type.String(),
            connections: Type.Integer({ minimum: 0 }),
            authenticated: Type.Integer({ minimum: 0 }),
            channels: Type.Integer({ minimum: 0 }),
            uptime_ms: Type.Integer({ minimum: 0 }),
            process: Type.Optional(
              Type.Object(
                {
                  event_loop_delay_max_ms: Type.Number({ minimum: 0 }),
                  event_loop_delay_p99_ms: Type.Number({ minimum: 0 }),
                  heap_used_bytes: Type.Integer({ minimum: 0 }),
                  live_heap_bytes: Type.Integer({ minimum: 0 }),
                  rss_bytes: Type.Integer({ minimum: 0 }),
                  over_threshold: Type.Array(Type.String()),
                },
                {
                  description:
                    'The node process as its watchdog last sampled it: longest and 99th-percentile event-loop delay in the last interval, heap used, live heap (after the last full collection), RSS, and the thresholds it is over (then /health/ready answers 503).',
                },
              ),
            ),
          }),
        ),
      }),
    ),
  };
}

export type ApiSchemas = ReturnType<typeof createApiSchemas>;
export type ApiMethodName = keyof ApiSchemas;

/** The schemas with the default limits (the SDK, docs/openapi.json). */
export const apiSchemas: ApiSchemas = createApiSchemas();

/** Every method name, in the order of docs/protocol.md. */
export const apiMethodNames = Object.keys(apiSchemas) as readonly ApiMethodName[];

/** The request body of a method. */
export type ApiRequest<M extends ApiMethodName> = Static<ApiSchemas[M]['request']>;
/** The result of a method (the body of a 200 answer). */
export type ApiResult<M extends ApiMethodName> = Static<ApiSchemas[M]['result']>;

/** What a check of a value against one of these schemas found wrong (`/offset: expected integer`); never quotes the value. */
export { schemaDetail } from './schema-detail.ts';
