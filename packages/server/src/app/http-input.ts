/**
 * How the listeners judge a request before a handler runs: one JSON parser
 * for every route (strict UTF-8, nesting depth checked before parsing, then
 * secure-json-parse; any other content type is 415), one validator for every
 * route schema (TypeBox's compiler, as for commands: no type coercion, no
 * defaults, unknown keys refused rather than dropped), and 405 with `Allow`
 * for a known path asked with another method. Failures are ApiErrors with
 * registered codes, answered by the app's error handler (packages/server/src/app/http.ts).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { readJson } from '@herald/protocol/json';
import { schemaDetail } from '@herald/protocol/commands';
import { ApiError } from '../api/executor.ts';
import { sendApiError } from '../transports/http-connection.ts';

/** Refuses what is not UTF-8 (overlong forms, surrogates, truncated sequences) instead of repairing it. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Installs the JSON body parser: `maxDepth` is `limits.maxJsonDepth`. */
export function useJsonBodies(app: FastifyInstance, maxDepth: number): void {
  // Only JSON: fastify's text/plain parser would hand routes a string (and
  // let a cross-site form post through as a "simple" request).
  app.removeAllContentTypeParsers();
  // Bytes, decoded here: fastify's string decoding would replace invalid UTF-8 with U+FFFD.
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => {
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      done(new ApiError('invalid_utf8'), undefined);
      return;
    }
    const read = readJson(text, maxDepth);
    if (read.ok) done(null, read.value);
    else done(new ApiError(read.error === 'too_deep' ? 'json_too_deep' : 'invalid_json'), undefined);
  });
}

/**
 * Route schemas (`schema: { body }`, TypeBox) are checked as they are:
 * fastify's default Ajv would coerce `"channels":"x"` into an array and drop
 * unknown keys. The value is never changed.
 */
export function useStrictSchemas(app: FastifyInstance): void {
  app.setValidatorCompiler(strictValidator);
}

function strictValidator({ schema }: { schema: unknown }): (data: unknown) => true | { error: ApiError } {
  const check = TypeCompiler.Compile(schema as TSchema);
  return (data: unknown) => (check.Check(data) ? true : { error: new ApiError('bad_request', schemaDetail(check, data)) });
}

/**
 * Fastify's `schemaController` option for every listener: route schemas are
 * compiled by TypeBox (above) and answers serialized with JSON.stringify (no
 * route has a response schema), so fastify never loads Ajv or
 * fast-json-stringify, its defaults: several MiB of a process that uses
 * neither.
 */
export const schemaController = {
  compilersFactory: {
    buildValidator: () => strictValidator,
    buildSerializer: () => () => (data: unknown) => JSON.stringify(data),
  },
  // Fastify's types describe the factories by Ajv's signatures; at run time
  // (fastify lib/schema-controller.js) each returns the route compiler, as here.
} as unknown as NonNullable<FastifyServerOptions['schemaController']>;

/** Methods a route may be asked with. OPTIONS is left out: CORS answers it for every path. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH'] as const;

/**
 * The answer when no route matched: 405 `method_not_allowed` with `Allow`
 * when the path has routes for other methods, 404 `not_found` otherwise.
 * For `setNotFoundHandler`.
 */
export function answerUnmatched(app: FastifyInstance): (request: FastifyRequest, reply: FastifyReply) => FastifyReply {
  return (request, reply) => {
    const url = request.url.split('?', 1)[0] ?? '';
    const allowed = METHODS.filter((method) => app.findRoute({ method, url }) !== null);
    if (allowed.length === 0) return sendApiError(reply, 'not_found');
    reply.header('allow', allowed.join(', '));
    return sendApiError(reply, 'method_not_allowed');
  };
}
