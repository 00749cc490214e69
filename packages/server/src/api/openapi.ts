/**
 * The OpenAPI 3.1 description of the server HTTP API, generated from the
 * TypeBox schemas of `@herald/protocol/api` (TypeBox schemas are JSON
 * Schema, OpenAPI 3.1's schema dialect): one path `POST /api/<method>` per
 * method, its request body and result as components, the error answers
 * with the registered codes of each status, and the two ways to present a
 * key (Bearer, X-API-Key); and the Pusher HTTP API of each app
 * (`/apps/{app_id}/…`, tag `pusher`) from pusher/pusher-api-schemas.ts: the
 * bodies its routes check, their answers, request signing's query
 * parameters and its plain-text errors. Nothing here is written by hand twice:
 * `npm run docs:openapi` writes it to docs/openapi.json (a test compares),
 * and the internal listener serves it at `GET /openapi.json` with the
 * running config's limits.
 */
import { apiErrors, type ApiErrorCode } from '@herald/protocol';
import { ApiErrorBody, createApiSchemas, defaultApiLimits, type ApiSchemaLimits } from '@herald/protocol/api';
import { PUSHER_API_ERRORS, PUSHER_ROUTES, SIGNING_PARAMETERS, type PusherApiErrorCode } from '../pusher/pusher-api-schemas.ts';

/** The error answers of every API route: status → the codes it may carry (docs/errors.md). */
const errorAnswers: Readonly<Record<number, readonly ApiErrorCode[]>> = {
  400: ['bad_request', 'invalid_json', 'invalid_utf8', 'json_too_deep', 'invalid_channel', 'unknown_namespace', 'not_available'],
  401: ['unauthorized'],
  403: ['forbidden', 'origin_not_allowed'],
  413: ['payload_too_large'],
  415: ['unsupported_media_type'],
  429: ['too_many_requests'],
  500: ['internal'],
  503: ['unavailable'],
};

const scopeHelp = {
  publish: 'an API key with scope `publish` (or `admin`)',
  read: 'an API key with scope `read` (or `admin`)',
  admin: 'an API key with scope `admin`',
} as const;

/** A TypeBox schema as plain JSON Schema (TypeBox's symbol keys dropped). */
function plain(schema: unknown): Record<string, unknown> {
  return JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
}

/** `presence_stats` → `PresenceStats`. */
function pascal(name: string): string {
  return name
    .split('_')
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}

const json = (ref: string) => ({ 'application/json': { schema: { $ref: ref } } });

export interface OpenApiOptions {
  /** Herald's version (`info.version`). */
  readonly version: string;
  /** The limits the schemas carry; the config's defaults unless given. */
  readonly limits?: ApiSchemaLimits;
}

export function createOpenApiDocument(options: OpenApiOptions): Record<string, unknown> {
  const methods = createApiSchemas(options.limits ?? defaultApiLimits);
  const schemas: Record<string, unknown> = { ErrorBody: plain(ApiErrorBody) };
  const responses: Record<string, unknown> = {};
  for (const [status, codes] of Object.entries(errorAnswers)) {
    const list = codes.map((code) => `\`${code}\` (${apiErrors[code].message})`).join(', ');
    responses[`Error${status}`] = {
      description: `Codes: ${list}.`,
      ...(status === '429' ? { headers: { 'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer', minimum: 1 } } } } : {}),
      content: json('#/components/schemas/ErrorBody'),
    };
  }
  const paths: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(methods)) {
    const base = pascal(name);
    schemas[`${base}Request`] = plain(method.request);
    schemas[`${base}Result`] = plain(method.result);
    paths[`/api/${name}`] = {
      post: {
        operationId: name,
        summary: method.summary,
        description: `Needs ${scopeHelp[method.scope]}.`,
        tags: [method.scope],
        'x-herald-scope': method.scope,
        requestBody: { required: true, content: json(`#/components/schemas/${base}Request`) },
        responses: {
          200: { description: 'The result.', content: json(`#/components/schemas/${base}Result`) },
          ...Object.fromEntries(Object.keys(errorAnswers).map((status) => [status, { $ref: `#/components/responses/Error${status}` }])),
        },
      },
    };
  }
  addPusherRoutes(paths, schemas, responses);
  return {
    openapi: '3.1.0',
    info: {
      title: 'Herald server API',
      version: options.version,
      description:
        'The server HTTP API of Herald (docs/protocol.md, "Server HTTP API"): `POST /api/<method>` with a JSON body. ' +
        'Requests are strict (unknown keys are a `bad_request`); results may gain fields. ' +
        'Errors are `{"error":{"code","message","detail?"}}` with the codes of docs/errors.md. ' +
        'Requests are limited per client IP and per key (429 with Retry-After). ' +
        'The Pusher HTTP API of each app (`/apps/{app_id}/…`, tag `pusher`; docs/pusher.md, "HTTP API") is signed as Pusher defines it, in the query string, and answers errors in plain text with the code in the `herald-error` header.',
      license: { name: 'MIT', identifier: 'MIT' },
    },
    servers: [{ url: '{origin}', description: "Herald's public listener", variables: { origin: { default: 'http://127.0.0.1:8000', description: "Herald's public URL" } } }],
    security: [{ bearer: [] }, { apiKey: [] }],
    tags: [
      { name: 'publish', description: 'Methods for keys with scope `publish`.' },
      { name: 'read', description: 'Methods for keys with scope `read`.' },
      { name: 'admin', description: 'Methods for keys with scope `admin` (which may call every method).' },
      { name: 'pusher', description: 'The Pusher HTTP API of an app, as the `pusher` server SDKs call it: signed with the app\'s key and secret (no API key).' },
    ],
    paths,
    components: {
      schemas,
      responses,
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'An API key: `Authorization: Bearer <key>`. Never in the URL.' },
        apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'An API key in the `X-API-Key` header.' },
      },
    },
  };
}

/** The statuses each Pusher route may answer: every route, and with a body 413 and 415. */
function pusherStatuses(hasBody: boolean): number[] {
  const statuses = new Set<number>();
  for (const [code, { status }] of Object.entries(PUSHER_API_ERRORS)) {
    if (!hasBody && (code === 'payload_too_large' || code === 'unsupported_media_type')) continue;
    statuses.add(status);
  }
  return [...statuses].sort((a, b) => a - b);
}

/** The Pusher HTTP API's paths (pusher/pusher-api-schemas.ts), their schemas and error answers. */
function addPusherRoutes(paths: Record<string, unknown>, schemas: Record<string, unknown>, responses: Record<string, unknown>): void {
  const byStatus = new Map<number, PusherApiErrorCode[]>();
  for (const [code, { status }] of Object.entries(PUSHER_API_ERRORS) as [PusherApiErrorCode, (typeof PUSHER_API_ERRORS)[PusherApiErrorCode]][]) {
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  schemas['PusherError'] = { type: 'string', description: 'Pusher\'s plain-text error message (what failed, never a secret).' };
  for (const [status, codes] of byStatus) {
    responses[`PusherError${status}`] = {
      description: codes.map((code) => `\`${code}\`: ${PUSHER_API_ERRORS[code].summary}`).join(' '),
      headers: {
        'herald-error': { description: 'The stable error code.', schema: { type: 'string', enum: codes } },
        ...(status === 429 ? { 'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer', minimum: 1 } } } : {}),
      },
      content: { 'text/plain': { schema: { $ref: '#/components/schemas/PusherError' } } },
    };
  }
  const signing = SIGNING_PARAMETERS.map((p) => ({ name: p.name, in: 'query', required: p.required, description: p.description, schema: { type: 'string' } }));
  for (const route of PUSHER_ROUTES) {
    const base = `Pusher${pascal(route.route)}`;
    schemas[`${base}Result`] = plain(route.result);
    if (route.body !== undefined) schemas[`${base}Request`] = plain(route.body);
    const inPath = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!);
    const parameters = [
      ...inPath.map((name) => ({ name, in: 'path', required: true, schema: { type: 'string' } })),
      ...route.query.map((q) => ({ name: q.name, in: 'query', required: false, description: q.description, schema: { type: 'string' } })),
      ...signing,
    ];
    const operation: Record<string, unknown> = {
      operationId: `pusher_${route.route}`,
      summary: route.summary,
      description: 'Signed with the app\'s key and secret (docs/pusher.md, "Request signing"); no API key.',
      tags: ['pusher'],
      security: [],
      parameters,
      ...(route.body === undefined
        ? {}
        : { requestBody: { required: route.route !== 'terminate_connections', content: json(`#/components/schemas/${base}Request`) } }),
      responses: {
        200: { description: 'The answer.', content: json(`#/components/schemas/${base}Result`) },
        ...Object.fromEntries(pusherStatuses(route.body !== undefined).map((status) => [status, { $ref: `#/components/responses/PusherError${status}` }])),
      },
    };
    paths[route.path] = { [route.method]: operation };
  }
}

/** The document as docs/openapi.json holds it. */
export function renderOpenApi(options: OpenApiOptions): string {
  return JSON.stringify(createOpenApiDocument(options), null, 2) + '\n';
}
