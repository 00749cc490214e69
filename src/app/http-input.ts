/**
 * How the public listener reads request bodies: one JSON parser for every
 * route (strict UTF-8, nesting depth checked before parsing, then
 * secure-json-parse). Failures are ApiErrors with registered codes, answered
 * by the app's error handler (src/app/http.ts).
 */
import type { FastifyInstance } from 'fastify';
import { readJson } from '../protocol/safe-json.ts';
import { ApiError } from '../api/executor.ts';

/** Refuses what is not UTF-8 (overlong forms, surrogates, truncated sequences) instead of repairing it. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Installs the JSON body parser: `maxDepth` is `limits.maxJsonDepth`. */
export function useJsonBodies(app: FastifyInstance, maxDepth: number): void {
  app.removeContentTypeParser('application/json');
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
