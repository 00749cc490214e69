/**
 * The server API, independent of HTTP: validates a method's body against its
 * schema, checks the key's scope, and runs it on the Node. Every failure is
 * an ApiError with a registered code.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { replyErrors, type ApiErrorCode, type ReplyErrorName } from '@herald/protocol';
import { utf8Length } from '@herald/protocol/commands';
import { schemaDetail } from '@herald/protocol/commands';
import type { ApiScope } from '../config/schema.ts';
import { allows, type ApiPrincipal } from '../auth/api-keys.ts';
import { CommandError } from '../core/client.ts';
import { BrokerUnavailableError } from '../broker/broker.ts';
import type { Node } from '../core/node.ts';

export class ApiError extends Error {
  readonly code: ApiErrorCode;
  /** What in the request was wrong (the answer's `detail`), when known. */
  readonly detail: string | undefined;
  constructor(code: ApiErrorCode, detail?: string) {
    super(code);
    this.code = code;
    this.detail = detail;
  }
}

const Channel = Type.String({ minLength: 1, maxLength: 1024 });
const Position = Type.Object({ epoch: Type.String({ minLength: 1, maxLength: 32 }), offset: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }) }, { additionalProperties: false });
const strict = { additionalProperties: false } as const;
/** `Type.Unknown()` accepts a missing key: `data` is checked by hand. */
const noData = '/data: expected required property';

interface MethodSpec {
  readonly scope: ApiScope;
  readonly schema: TSchema;
  readonly run: (node: Node, body: never) => Promise<unknown> | unknown;
}

function method<B>(scope: ApiScope, schema: TSchema, run: (node: Node, body: B) => Promise<unknown> | unknown): MethodSpec {
  return { scope, schema, run: run as (node: Node, body: never) => unknown };
}

export function createApiMethods(maxBroadcastChannels: number, maxDataBytes: number) {
  const serialize = (data: unknown): string => {
    const json = JSON.stringify(data);
    if (json === undefined) throw new ApiError('bad_request');
    if (utf8Length(json) > maxDataBytes) throw new ApiError('payload_too_large');
    return json;
  };
  return {
    publish: method<{ channel: string; data: unknown }>('publish', Type.Object({ channel: Channel, data: Type.Unknown() }, strict), async (node, body) => {
      if (!('data' in body)) throw new ApiError('bad_request', noData);
      const resolved = node.resolve(body.channel);
      return node.publish(resolved, serialize(body.data), undefined, 'api');
    }),
    broadcast: method<{ channels: string[]; data: unknown }>(
      'publish',
      Type.Object({ channels: Type.Array(Channel, { minItems: 1, maxItems: maxBroadcastChannels, uniqueItems: true }), data: Type.Unknown() }, strict),
      async (node, body) => {
        if (!('data' in body)) throw new ApiError('bad_request', noData);
        const data = serialize(body.data);
        const results = [];
        for (const channel of body.channels) {
          try {
            const position = await node.publish(node.resolve(channel), data, undefined, 'api');
            results.push({ channel, ...position });
          } catch (error) {
            const code = toApiCode(error);
            results.push({ channel, error: { code, message: code } });
          }
        }
        return { results };
      },
    ),
    history: method<{ channel: string; limit?: number; since?: { epoch: string; offset: number }; reverse?: boolean }>(
      'read',
      Type.Object({ channel: Channel, limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 10000 })), since: Type.Optional(Position), reverse: Type.Optional(Type.Boolean()) }, strict),
      (node, body) => node.history(node.resolve(body.channel), body),
    ),
    presence: method<{ channel: string }>('read', Type.Object({ channel: Channel }, strict), (node, body) => node.presence(node.resolve(body.channel))),
    presence_stats: method<{ channel: string }>('read', Type.Object({ channel: Channel }, strict), (node, body) => node.presenceStats(node.resolve(body.channel))),
    channels: method<{ prefix?: string }>('read', Type.Object({ prefix: Type.Optional(Type.String({ maxLength: 1024 })) }, strict), (node, body) => ({
      channels: node.channels(body.prefix ?? ''),
    })),
    disconnect: method<{ user: string; reconnect?: boolean }>(
      'admin',
      Type.Object({ user: Type.String({ minLength: 1, maxLength: 256 }), reconnect: Type.Optional(Type.Boolean()) }, strict),
      async (node, body) => ({ disconnected: await node.disconnectUser(body.user, body.reconnect === true) }),
    ),
    revoke_token: method<{ jti: string; expires_at?: number }>(
      'admin',
      Type.Object({ jti: Type.String({ minLength: 1, maxLength: 256 }), expires_at: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 40 })) }, strict),
      async (node, body) => ({ disconnected: await node.revokeToken(body.jti, body.expires_at === undefined ? undefined : body.expires_at * 1000) }),
    ),
    revoke_user: method<{ user: string }>('admin', Type.Object({ user: Type.String({ minLength: 1, maxLength: 256 }) }, strict), async (node, body) => ({
      disconnected: await node.revokeUser(body.user),
    })),
    info: method<Record<string, never>>('read', Type.Object({}, strict), (node) => node.info()),
  } satisfies Record<string, MethodSpec>;
}

export type ApiMethodName = keyof ReturnType<typeof createApiMethods>;

const replyToApi: Partial<Record<ReplyErrorName, ApiErrorCode>> = {
  invalid_channel: 'invalid_channel',
  unknown_namespace: 'unknown_namespace',
  not_available: 'not_available',
  bad_request: 'bad_request',
  message_too_large: 'payload_too_large',
};

/** What an error says about the request, for the answer's `detail`. */
function toDetail(error: unknown): string | undefined {
  return error instanceof ApiError || error instanceof CommandError ? error.detail : undefined;
}

function toApiCode(error: unknown): ApiErrorCode {
  if (error instanceof ApiError) return error.code;
  if (error instanceof BrokerUnavailableError) return 'unavailable';
  if (error instanceof CommandError) return replyToApi[error.reply] ?? 'internal';
  return 'internal';
}

export class ApiExecutor {
  readonly #node: Node;
  readonly #methods: Record<string, MethodSpec>;
  readonly #checks = new Map<string, TypeCheck<TSchema>>();

  constructor(node: Node) {
    this.#node = node;
    this.#methods = createApiMethods(node.config.api.maxBroadcastChannels, node.config.limits.maxMessageBytes);
    for (const [name, spec] of Object.entries(this.#methods)) this.#checks.set(name, TypeCompiler.Compile(spec.schema));
  }

  has(name: string): boolean {
    return Object.hasOwn(this.#methods, name);
  }

  /** Runs a method. Throws ApiError; unexpected failures become `internal` (logged, never shown). */
  async run(name: string, body: unknown, principal: ApiPrincipal): Promise<unknown> {
    if (!Object.hasOwn(this.#methods, name)) throw new ApiError('not_found');
    const spec = this.#methods[name]!;
    if (!allows(principal, spec.scope)) throw new ApiError('forbidden');
    const value = body ?? {};
    const check = this.#checks.get(name)!;
    if (!check.Check(value)) throw new ApiError('bad_request', schemaDetail(check, value));
    try {
      return await spec.run(this.#node, value as never);
    } catch (error) {
      const code = toApiCode(error);
      if (code === 'internal') this.#node.logger.error({ err: error, method: name }, 'api method failed');
      throw new ApiError(code, code === 'internal' ? undefined : toDetail(error));
    }
  }
}

export { replyErrors };
