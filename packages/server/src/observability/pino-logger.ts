/**
 * pino with secrets redacted (packages/server/src/observability/redact.ts): every log
 * object, child binding, message and interpolated string goes through the
 * same bounded redaction, so tokens, keys, passwords, session secrets,
 * cookies and credentials in URLs never reach a log line, at any depth.
 */
import { pino, type LogFn, type Logger as PinoLogger } from 'pino';
import { redactFields, redactText, serializeError } from './redact.ts';

export { redactText, redactUrl, serializeError } from './redact.ts';

export function createLogger(level: string, destination?: NodeJS.WritableStream): PinoLogger {
  const logger = pino(
    {
      level,
      base: { service: 'herald' },
      formatters: { log: redactFields },
      hooks: { logMethod },
      // Errors are already serialized by redactFields; anything else passes.
      serializers: { err: (value: unknown) => (value instanceof Error ? serializeError(value) : value) },
    },
    destination ?? process.stdout,
  );
  // pino applies `formatters.bindings` to the base bindings only: redact a
  // child's bindings here (children inherit this method from the root).
  const original = logger.child as unknown as (this: PinoLogger, bindings: object, options?: object) => PinoLogger;
  logger.child = function (this: PinoLogger, bindings: Record<string, unknown>, options?: object) {
    return original.call(this, redactFields(bindings), options);
  } as unknown as PinoLogger['child'];
  return logger;
}

/**
 * Runs before pino builds a line: an Error logged alone becomes `{err}`, the
 * message pino would take from an error is redacted, and so is every string
 * argument (the message and printf-style values).
 */
function logMethod(this: PinoLogger, inputArgs: Parameters<LogFn>, method: LogFn): void {
  let args = inputArgs as unknown[];
  const first = args[0];
  if (first instanceof Error) {
    args = [{ err: first }, ...(typeof args[1] === 'string' ? args.slice(1) : [first.message, ...args.slice(1)])];
  } else if (typeof first === 'object' && first !== null && (first as { err?: unknown }).err instanceof Error && typeof args[1] !== 'string') {
    args = [first, (first as { err: Error }).err.message, ...args.slice(1)];
  }
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (typeof arg === 'string') args[i] = redactText(arg);
    else if (i > 0 && typeof arg === 'object' && arg !== null) args[i] = redactFields(arg as Record<string, unknown>);
  }
  (method as (...values: unknown[]) => void).apply(this, args);
}
