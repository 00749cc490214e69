/**
 * How the public listener reads request bodies: one JSON parser for every
 * route (nesting depth checked before parsing, then secure-json-parse).
 * Failures are ApiErrors with registered codes, answered by the app's error
 * handler (src/app/http.ts).
 */
import type { FastifyInstance } from 'fastify';
import { readJson } from '../protocol/safe-json.ts';
import { ApiError } from '../api/executor.ts';

/** Installs the JSON body parser: `maxDepth` is `limits.maxJsonDepth`. */
export function useJsonBodies(app: FastifyInstance, maxDepth: number): void {
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const read = readJson(body as string, maxDepth);
    if (read.ok) done(null, read.value);
    else done(new ApiError(read.error === 'too_deep' ? 'json_too_deep' : 'invalid_json'), undefined);
  });
}
