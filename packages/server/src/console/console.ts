/**
 * The console on the internal listener: builds what its routes share
 * (ConsoleContext), installs the cookie parser, answers every console
 * route with `Cache-Control: no-store`, registers the sign-in routes, and
 * sweeps expired sessions, old audit entries and forgotten limiter counters
 * once a minute. The console API (console-api.ts) and the static assets
 * (console-static.ts) register beside these with the same context.
 */
import type { FastifyInstance } from 'fastify';
import fastifyCookie from '@fastify/cookie';
import { Counter, type Registry } from '../observability/prometheus.ts';
import type { Logger as PinoLogger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Node } from '../core/node.ts';
import { createClientAddress } from '../edge/client-address.ts';
import type { AdminStore } from './admin-store.ts';
import { createAuditLog } from './audit-log.ts';
import type { ConsoleContext } from './console-guard.ts';
import { registerConsoleAuthRoutes } from './console-auth-routes.ts';
import type { PreparedOidcProvider } from './oidc.ts';
import { registerOidcRoutes } from './oidc-routes.ts';
import { registerConsoleStatic } from './console-static.ts';
import { registerConsoleApi } from './console-api.ts';
import { registerConsoleApps, type ConsoleAppsDeps } from './console-apps.ts';
import { passkeySettings } from './passkey-config.ts';
import { registerPasskeyRoutes } from './passkey-routes.ts';
import type { KeyUsage } from './key-usage.ts';
import { ApiExecutor } from '../api/executor.ts';
import { LoginLimiter } from './login-limiter.ts';
import { PasswordHasher } from './passwords.ts';
import { ConsoleSessions, sessionPolicy } from './sessions.ts';
import { StoreFactors } from './sign-in.ts';
import { registerTotpRoutes } from './totp-routes.ts';

export const SWEEP_INTERVAL_MS = 60_000;

export interface ConsoleOptions {
  readonly config: Config;
  readonly node: Node;
  readonly store: AdminStore;
  readonly metrics: Registry;
  readonly logger: PinoLogger;
  /** Whether the internal listener serves TLS itself. */
  readonly tls: boolean;
  /** Clock (tests may move it). */
  readonly now?: () => number;
  /** API keys' last uses for the key list (console/key-usage.ts); without it `lastUsedAt` is null. */
  readonly keyUsage?: KeyUsage | undefined;
  /** OpenID Connect providers for sign-in (console/oidc.ts). */
  readonly oidcProviders?: readonly PreparedOidcProvider[] | undefined;
  /** The Apps view's actions (console/console-apps.ts); without it the view answers 404. */
  readonly apps?: ConsoleAppsDeps | undefined;
}

/** Whether a URL path is one of the console's (the base path or below it). */
export function isConsolePath(basePath: string, url: string): boolean {
  const path = url.split('?', 1)[0] ?? '';
  return path === basePath || path.startsWith(basePath + '/');
}

export async function registerConsole(app: FastifyInstance, options: ConsoleOptions): Promise<ConsoleContext> {
  const { config, store, logger } = options;
  const c = config.admin.console;
  const now = options.now ?? Date.now;
  const address = createClientAddress(config.http.trustedProxies);
  const logins = new Counter({
    name: 'herald_console_logins_total',
    help: 'Console sign-in attempts by outcome: ok, failed (wrong name or password), locked (refused by the brute-force limiter).',
    labelNames: ['outcome'],
    registers: [options.metrics],
  });
  for (const outcome of ['ok', 'failed', 'locked']) logins.inc({ outcome }, 0);
  const sessions = new ConsoleSessions(store, sessionPolicy(c.sessionIdleMs, c.sessionAbsoluteMs));
  const hasher = new PasswordHasher();
  const limiter = new LoginLimiter(store, c.login);
  const audit = createAuditLog(store, { now, onError: (error, entry) => logger.error({ err: error, action: entry.action }, 'audit entry not written') });
  const ctx: ConsoleContext = {
    config,
    node: options.node,
    basePath: c.basePath,
    store,
    sessions,
    limiter,
    hasher,
    audit,
    factors: new StoreFactors(store),
    origin: { origin: c.origin, tls: options.tls, adminHost: config.admin.host },
    clientIp: (request) => address.ip(request.raw),
    now,
    countLogin: (outcome) => logins.inc({ outcome }),
  };
  await app.register(fastifyCookie);
  app.decorate('heraldConsole', ctx);
  app.decorateRequest('consoleAdmin', undefined);
  app.decorateRequest('consoleSession', undefined);
  app.addHook('onRequest', async (request, reply) => {
    if (isConsolePath(c.basePath, request.url)) reply.header('cache-control', 'no-store');
  });
  registerConsoleAuthRoutes(app, ctx);
  registerTotpRoutes(app, ctx);
  registerPasskeyRoutes(app, ctx, passkeySettings(config));
  registerOidcRoutes(app, ctx, options.oidcProviders ?? []);
  registerConsoleStatic(app, { basePath: c.basePath, warn: (message) => logger.warn(message) });
  registerConsoleApi(app, ctx, { node: options.node, executor: new ApiExecutor(options.node), keyUsage: options.keyUsage, apps: options.apps?.registry });
  if (options.apps !== undefined) registerConsoleApps(app, ctx, options.apps);
  // The stand-in hash for unknown names, made now so that no sign-in pays for it.
  hasher.warm().catch((error: unknown) => logger.error({ err: error }, 'console password hashing unavailable'));
  const sweepPolicy = {
    sessions: sessions.policy,
    auditRetentionMs: c.auditRetentionDays * 86_400_000,
    limiterWindowMs: Math.max(c.login.windowMs, c.login.lockMs),
  };
  const sweep = setInterval(() => {
    store.sweep(now(), sweepPolicy).catch((error: unknown) => logger.warn({ err: error }, 'console store sweep failed'));
  }, SWEEP_INTERVAL_MS);
  sweep.unref();
  app.addHook('onClose', async () => {
    clearInterval(sweep);
    await audit.flush();
  });
  return ctx;
}
