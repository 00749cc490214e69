/**
 * pino with secrets redacted: tokens, keys, session secrets and cookies never
 * reach a log line, and URLs lose their `token` query parameter.
 */
import { pino, type Logger as PinoLogger } from 'pino';

export const redactPaths = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers["herald-session"]',
  'req.headers.cookie',
  'token',
  '*.token',
  'hmacSecret',
  '*.hmacSecret',
  'apiKey',
  '*.apiKey',
  'session',
  '*.session',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): PinoLogger {
  return pino(
    {
      level,
      base: { service: 'herald' },
      redact: { paths: redactPaths, censor: '[redacted]' },
      serializers: { err: serializeError },
    },
    destination ?? process.stdout,
  );
}

/** Removes credentials from a request URL before it is logged. */
export function redactUrl(url: string): string {
  return url.replace(/([?&](?:token|api_key|apikey|key|session)=)[^&]*/gi, '$1[redacted]');
}

/** Errors are logged by type, code and message: never a stack trace. */
export function serializeError(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error).slice(0, 200) };
  const code = (error as { code?: unknown }).code;
  return { type: error.name, message: error.message.slice(0, 500), ...(code === undefined ? {} : { code }) };
}
