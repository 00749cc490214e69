/**
 * Decodes client commands from untrusted text. Never throws: every input maps
 * to a command or to a decode error naming the reply or disconnect to send.
 *
 * Rules (docs/protocol.md, "Commands"):
 * - at most `maxBytes` bytes of UTF-8 (checked before parsing);
 * - arrays and objects nested at most `maxDepth` deep (checked before parsing);
 * - valid JSON, without `__proto__` or `constructor.prototype` keys anywhere;
 * - an object `{id, method, params}` matching the method's schema, with no
 *   unknown keys outside `data`.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { Command, CommandMethod } from './frames.ts';
import { DEFAULT_MAX_JSON_DEPTH, parseJsonSafely, readJson } from './safe-json.ts';
import { schemaDetail } from './schema-detail.ts';

export { parseJsonSafely };
export { schemaDetail };

const Id = Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 });
const Channel = Type.String({ minLength: 1, maxLength: 1024 });
const Epoch = Type.String({ minLength: 1, maxLength: 32 });
const Offset = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Empty = Type.Object({}, { additionalProperties: false });

const paramSchemas = {
  connect: Type.Object(
    {
      token: Type.Optional(Type.String({ maxLength: 16384 })),
      name: Type.Optional(Type.String({ maxLength: 64 })),
      batch: Type.Optional(Type.Boolean()),
    },
    { additionalProperties: false },
  ),
  subscribe: Type.Object(
    {
      channel: Channel,
      token: Type.Optional(Type.String({ maxLength: 16384 })),
      recover: Type.Optional(Type.Boolean()),
      epoch: Type.Optional(Epoch),
      offset: Type.Optional(Offset),
    },
    { additionalProperties: false },
  ),
  unsubscribe: Type.Object({ channel: Channel }, { additionalProperties: false }),
  publish: Type.Object({ channel: Channel, data: Type.Unknown() }, { additionalProperties: false }),
  history: Type.Object(
    {
      channel: Channel,
      limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 10000 })),
      since: Type.Optional(Type.Object({ epoch: Epoch, offset: Offset }, { additionalProperties: false })),
      reverse: Type.Optional(Type.Boolean()),
    },
    { additionalProperties: false },
  ),
  presence: Type.Object({ channel: Channel }, { additionalProperties: false }),
  presence_stats: Type.Object({ channel: Channel }, { additionalProperties: false }),
  refresh: Type.Object({ token: Type.String({ minLength: 1, maxLength: 16384 }) }, { additionalProperties: false }),
  rpc: Type.Object(
    { method: Type.String({ minLength: 1, maxLength: 256, pattern: '^[A-Za-z0-9_.:/-]+$' }), data: Type.Optional(Type.Unknown()) },
    { additionalProperties: false },
  ),
  ping: Empty,
  pong: Empty,
} satisfies Record<CommandMethod, TSchema>;

const paramsOptional: ReadonlySet<string> = new Set(['connect', 'ping', 'pong']);

const Envelope = Type.Object(
  {
    id: Type.Optional(Id),
    method: Type.String({ maxLength: 1024 }),
    params: Type.Optional(Type.Object({})),
  },
  { additionalProperties: false },
);

const envelopeCheck = TypeCompiler.Compile(Envelope);
const paramChecks = {} as Record<CommandMethod, TypeCheck<TSchema>>;
for (const method of Object.keys(paramSchemas) as CommandMethod[]) {
  paramChecks[method] = TypeCompiler.Compile<TSchema>(paramSchemas[method]);
}

export type DecodeFailure =
  /** Larger than the message limit. */
  | { readonly ok: false; readonly error: 'too_large' }
  /** Not JSON, or JSON that is not an object with a method: protocol violation. `detail` says what is wrong, when known. */
  | { readonly ok: false; readonly error: 'malformed'; readonly detail?: string }
  /** Well-formed envelope with an unknown method: answerable with a reply error. */
  | { readonly ok: false; readonly error: 'method_not_found'; readonly id: number }
  /** Well-formed envelope whose params break the schema; `detail` names the field (`/params/channel: expected string`). */
  | { readonly ok: false; readonly error: 'bad_params'; readonly id: number; readonly detail?: string }
  /** Nested deeper than the limit, with an `id` to answer (without one it is `malformed`). */
  | { readonly ok: false; readonly error: 'too_deep'; readonly id: number };

export type DecodeResult = { readonly ok: true; readonly command: Command } | DecodeFailure;

const tooLarge: DecodeFailure = { ok: false, error: 'too_large' };
const malformed: DecodeFailure = { ok: false, error: 'malformed' };

/** UTF-8 byte length of a string, without Node APIs. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * Validates an already-parsed value as a command. `path` is where the value
 * sits in the request (`/2` in an HTTP batch), for the `detail` of failures.
 */
export function validateCommand(value: unknown, path = ''): DecodeResult {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, error: 'malformed', detail: `${path || '/'}: expected object` };
  if (!envelopeCheck.Check(value)) {
    const id = (value as { id?: unknown }).id;
    const detail = schemaDetail(envelopeCheck, value, path);
    if (typeof id === 'number' && Number.isInteger(id) && id > 0 && id < 2 ** 31) {
      return detail === undefined ? { ok: false, error: 'bad_params', id } : { ok: false, error: 'bad_params', id, detail };
    }
    return detail === undefined ? malformed : { ok: false, error: 'malformed', detail };
  }
  const envelope = value as { id?: number; method: string; params?: object };
  const method = envelope.method;
  if (!Object.hasOwn(paramChecks, method)) {
    if (envelope.id === undefined) return malformed;
    return { ok: false, error: 'method_not_found', id: envelope.id };
  }
  const params = envelope.params;
  if (params === undefined ? !paramsOptional.has(method) : !paramChecks[method as CommandMethod].Check(params)) {
    if (envelope.id === undefined) return { ok: false, error: 'malformed', detail: `${path}/id: expected required property` };
    const detail = params === undefined ? `${path}/params: expected required property` : schemaDetail(paramChecks[method as CommandMethod], params, `${path}/params`);
    return detail === undefined ? { ok: false, error: 'bad_params', id: envelope.id } : { ok: false, error: 'bad_params', id: envelope.id, detail };
  }
  if (envelope.id === undefined && method !== 'pong') return { ok: false, error: 'malformed', detail: `${path}/id: expected required property` };
  return { ok: true, command: envelope as Command };
}

/** Decodes one command from text (a WebSocket message). */
export function decodeCommand(text: string, maxBytes: number, maxDepth: number = DEFAULT_MAX_JSON_DEPTH): DecodeResult {
  if (text.length > maxBytes || utf8Length(text) > maxBytes) return tooLarge;
  const read = readJson(text, maxDepth);
  if (read.ok) return validateCommand(read.value);
  if (read.error !== 'too_deep') return malformed;
  const id = topLevelId(text);
  return id === undefined ? malformed : { ok: false, error: 'too_deep', id };
}

/**
 * The `id` of a command too deep to decode, so that it can be answered.
 * JSON.parse does not recurse (V8), and nothing here walks below the top level.
 */
function topLevelId(text: string): number | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, 'id')) return undefined;
  const id = (value as { id: unknown }).id;
  return typeof id === 'number' && Number.isInteger(id) && id > 0 && id < 2 ** 31 ? id : undefined;
}
