/**
 * The server API, independent of HTTP: validates a method's body against its
 * schema, checks the key's scope, and runs it on the Node. Every failure is
 * an ApiError with a registered code.
 */
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { apiErrors, replyErrors, type ApiErrorCode, type JsonText, type ReplyErrorName } from '@herald/protocol';
import { createApiSchemas, type ApiMethodName, type ApiRequest, type ApiResult, type ApiSchemaLimits } from '@herald/protocol/api';
import { utf8Length } from '@herald/protocol/commands';
import { schemaDetail } from '@herald/protocol/commands';
import type { ApiScope } from '../config/schema.ts';
import { allows, type ApiPrincipal } from '../auth/api-keys.ts';
import { CommandError } from '../core/client.ts';
import { BrokerUnavailableError } from '../broker/broker.ts';
import type { Node } from '../core/node.ts';
import { isReservedUserId } from '../apps/apps.ts';

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

/** `Type.Unknown()` accepts a missing key: `data` is checked by hand. */
const noData = '/data: expected required property';

interface MethodSpec {
  readonly scope: ApiScope;
  readonly schema: TSchema;
  readonly run: (node: Node, body: never) => Promise<unknown> | unknown;
}

/** What a method answers: its result (docs/protocol.md), or the same as JSON text. */
type Answer<M extends ApiMethodName> = ApiResult<M> | JsonText;

/**
 * The methods: their schemas come from `@herald/protocol/api` (shared with
 * the server SDK and docs/openapi.json), their bodies are typed from them.
 */
export function createApiMethods(limits: ApiSchemaLimits, maxDataBytes: number) {
  const schemas = createApiSchemas(limits);
  const method = <M extends ApiMethodName>(name: M, run: (node: Node, body: ApiRequest<M>) => Promise<Answer<M>> | Answer<M>): MethodSpec => ({
    scope: schemas[name].scope,
    schema: schemas[name].request,
    run: run as (node: Node, body: never) => unknown,
  });
  const serialize = (data: unknown): string => {
    const json = JSON.stringify(data);
    if (json === undefined) throw new ApiError('bad_request');
    // A UTF-16 unit is at most 3 bytes of UTF-8: short text needs no count.
    if (json.length * 3 > maxDataBytes && utf8Length(json) > maxDataBytes) throw new ApiError('payload_too_large');
    return json;
  };
  return {
    // Not async: what it throws, ApiExecutor.run turns into the same rejection.
    publish: method('publish', (node, body) => {
      if (!('data' in body)) throw new ApiError('bad_request', noData);
      const resolved = node.resolve(body.channel);
      return node.publish(resolved, serialize(body.data), undefined, 'api', body.idempotency_key);
    }),
    broadcast: method('broadcast', async (node, body) => {
      if (!('data' in body)) throw new ApiError('bad_request', noData);
      const data = serialize(body.data);
      // Every publish is handed to the engine in order before any is awaited: the
      // sqlite engine commits them together (one transaction, not one per channel).
      const pending = body.channels.map((channel) => settle(() => node.publish(node.resolve(channel), data, undefined, 'api', body.idempotency_key)));
      const results: ApiResult<'broadcast'>['results'] = [];
      for (const [i, channel] of body.channels.entries()) {
        const outcome = await pending[i]!;
        if (outcome.ok) results.push({ channel, ...outcome.value });
        else {
          const code = toApiCode(outcome.error);
          results.push({ channel, error: { code, message: apiErrors[code].message } });
        }
      }
      return { results };
    }),
    batch: method('batch', async (node, body) => {
      // Every item must carry data before anything is published: a malformed batch publishes nothing.
      body.publishes.forEach((item, i) => {
        if (!('data' in item)) throw new ApiError('bad_request', `/publishes/${String(i)}/data: expected required property`);
      });
      // Handed to the engine in order before any is awaited (one commit on the sqlite engine).
      const pending = body.publishes.map(({ channel, data, idempotency_key }) =>
        settle(() => node.publish(node.resolve(channel), serialize(data), undefined, 'api', idempotency_key)),
      );
      const results: ApiResult<'batch'>['results'] = [];
      for (const [i, { channel }] of body.publishes.entries()) {
        const outcome = await pending[i]!;
        if (outcome.ok) results.push({ channel, ...outcome.value });
        else {
          const code = toApiCode(outcome.error);
          if (code === 'internal') node.logger.error({ err: outcome.error, method: 'batch' }, 'api method failed');
          results.push({ channel, error: { code, message: apiErrors[code].message } });
        }
      }
      return { results };
    }),
    history: method('history', (node, body) => node.history(node.resolve(body.channel), body)),
    presence: method('presence', (node, body) => node.presence(node.resolve(body.channel))),
    presence_stats: method('presence_stats', (node, body) => node.presenceStats(node.resolve(body.channel))),
    channels: method('channels', (node, body) => ({ channels: node.channels(body.prefix ?? '') })),
    disconnect: method('disconnect', async (node, body) => ({ disconnected: await node.disconnectUser(serverUser(body.user), body.reconnect === true) })),
    revoke_token: method('revoke_token', async (node, body) => ({
      disconnected: await node.revokeToken(body.jti, body.expires_at === undefined ? undefined : body.expires_at * 1000),
    })),
    revoke_user: method('revoke_user', async (node, body) => ({ disconnected: await node.revokeUser(serverUser(body.user)) })),
    info: method('info', (node) => node.info()),
  } satisfies Record<ApiMethodName, MethodSpec>;
}

/**
 * A user id of the server's own (`/api` reaches no app's users): one
 * beginning with `~` is refused, as the node counts app X's `ann` as
 * `~X~ann` (Client.userKey) and no token or hook gives such an id.
 */
function serverUser(user: string): string {
  if (isReservedUserId(user)) throw new ApiError('invalid_input', 'user: an id beginning with "~" is no user of the server (app users are reached through their app)');
  return user;
}

/** Starts `run` now and never rejects: its value, or what it threw (synchronously or not). */
function settle<T>(run: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return run().then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
  } catch (error) {
    return Promise.resolve({ ok: false as const, error });
  }
}

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
    const { maxBroadcastChannels, maxBatchPublishes } = node.config.api;
    this.#methods = createApiMethods({ maxBroadcastChannels, maxBatchPublishes }, node.config.limits.maxMessageBytes);
    for (const [name, spec] of Object.entries(this.#methods)) this.#checks.set(name, TypeCompiler.Compile(spec.schema));
  }

  has(name: string): boolean {
    return Object.hasOwn(this.#methods, name);
  }

  /** Every method name: the routes `POST /api/<method>` (docs/openapi.json lists the same). */
  get methods(): readonly string[] {
    return Object.keys(this.#methods);
  }

  /**
   * Runs a method. Rejects with ApiError (never throws); unexpected failures
   * become `internal` (logged, never shown).
   */
  run(name: string, body: unknown, principal: ApiPrincipal): Promise<unknown> {
    let spec: MethodSpec;
    let value: unknown;
    try {
      [spec, value] = this.#admit(name, body, principal);
    } catch (error) {
      return Promise.reject(error as ApiError);
    }
    // Not an async function: a publish costs one promise here, not an await per layer.
    let result: unknown;
    try {
      result = spec.run(this.#node, value as never);
    } catch (error) {
      return Promise.reject(this.failure(error, name));
    }
    if (!(result instanceof Promise)) return Promise.resolve(result);
    return result.then(undefined, (error: unknown) => {
      throw this.failure(error, name);
    });
  }

  /**
   * `run` without its promise layer (the publish routes' lean path): a
   * request refused before the method runs (method, scope, schema) throws
   * the ApiError `run` rejects with; otherwise the method runs and its
   * value goes to `onValue`, what it throws or rejects with to `onFailure`
   * as the ApiError `run` would reject with. The callbacks must not throw.
   */
  start(name: string, body: unknown, principal: ApiPrincipal, onValue: (value: unknown) => void, onFailure: (error: ApiError) => void): void {
    const [spec, value] = this.#admit(name, body, principal);
    let result: unknown;
    try {
      result = spec.run(this.#node, value as never);
    } catch (error) {
      return onFailure(this.failure(error, name));
    }
    if (!(result instanceof Promise)) return onValue(result);
    result.then(onValue, (error: unknown) => onFailure(this.failure(error, name)));
  }

  /** The method and the body to run it with; throws the ApiError of a refused request. */
  #admit(name: string, body: unknown, principal: ApiPrincipal): [MethodSpec, unknown] {
    if (!Object.hasOwn(this.#methods, name)) throw new ApiError('not_found');
    const spec = this.#methods[name]!;
    if (!allows(principal, spec.scope)) throw new ApiError('forbidden');
    const value = body ?? {};
    const check = this.#checks.get(name)!;
    if (!check.Check(value)) throw new ApiError('bad_request', schemaDetail(check, value));
    return [spec, value];
  }

  /** The ApiError a method's failure answers (unexpected ones logged, as `internal`). */
  failure(error: unknown, name: string): ApiError {
    const code = toApiCode(error);
    if (code === 'internal') this.#node.logger.error({ err: error, method: name }, 'api method failed');
    return new ApiError(code, code === 'internal' ? undefined : toDetail(error));
  }
}

export { replyErrors };
