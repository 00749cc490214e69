/**
 * The logging interface: what the core and every layer below the
 * composition root depend on (pino's surface, narrowed). Its implementation
 * is pino with redaction (src/observability/pino-logger.ts), built by the
 * composition root; tests use `silentLogger`.
 */
export interface Logger {
  debug(object: object, message?: string): void;
  info(object: object, message?: string): void;
  warn(object: object, message?: string): void;
  error(object: object, message?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};
