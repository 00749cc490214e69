/**
 * The console's Apps endpoints (owner role, CSRF and Origin checked by
 * requireRole as every console change), under the base path B:
 *
 * - `GET B/api/apps`: every app (config and store) without secrets, with
 *   its connections on this node as its `limits.maxConnections` counts them:
 *   `{pusher, native}` (native: on its `/apps/{id}/connection/…` paths; null
 *   for the default app, whose native paths are the server's).
 * - `POST B/api/apps`: create ({id?, key?, name?, enabled?, clientEvents?,
 *   userAuthentication?, subscriptionCount?, allowedOrigins?, limits?,
 *   webhooks?}); answers the
 *   app and its secret, once.
 * - `POST B/api/apps/:id`: change settings (the fields above but id and key).
 * - `POST B/api/apps/:id/rotate-secret`: a new secret, answered once.
 * - `DELETE B/api/apps/:id`: delete.
 *
 * Config apps are read only (400 invalid_input). Every change is audited
 * (never with the secret) and announced to every node (`apps_changed`).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendApiError } from '../transports/http-connection.ts';
import { AppActionError, type AppAdmin, type AppView } from '../apps/app-admin.ts';
import type { AppRegistry } from '../apps/apps.ts';
import { requireRole, type ConsoleContext } from './console-guard.ts';

export interface ConsoleAppsDeps {
  readonly admin: AppAdmin;
  /** The apps served now: the connections view finds an app's users by it (console-api.ts). */
  readonly registry?: AppRegistry | undefined;
  /** An app's connections on this node, the count its cap judges by (edge.appConnections); absent: not shown. */
  readonly connections?: ((id: string) => { readonly pusher: number; readonly native: number }) | undefined;
}

/** An app's connections on this node as the console shows them; `native` null for the default app (its native paths are the server's, outside its cap). */
export interface AppConnectionsView {
  readonly pusher: number;
  readonly native: number | null;
}

/** Largest body of an app change: 256 origins and 16 webhooks fit well within it. */
const APP_BODY_LIMIT = 256 * 1024;

export function registerConsoleApps(app: FastifyInstance, ctx: ConsoleContext, deps: ConsoleAppsDeps): void {
  const base = `${ctx.basePath}/api/apps`;
  const { admin } = deps;

  const audit = (request: FastifyRequest, action: string, target: string | undefined, outcome: 'ok' | 'failed', detail?: Record<string, unknown>): void => {
    ctx.audit.record({ actor: request.consoleAdmin!.name, action, target, address: ctx.clientIp(request), outcome, detail: { via: 'console', ...detail } });
  };

  const fail = (reply: FastifyReply, error: unknown): FastifyReply => {
    if (error instanceof AppActionError) return sendApiError(reply, error.code, error.message);
    throw error;
  };

  const countOf = (view: AppView): AppConnectionsView | null => {
    if (deps.connections === undefined) return null;
    const split = deps.connections(view.id);
    return { pusher: split.pusher, native: view.default ? null : split.native };
  };
  const withCount = (view: AppView): AppView & { connections: AppConnectionsView | null } => ({ ...view, connections: countOf(view) });

  const idOf = (request: FastifyRequest): string => {
    const id = (request.params as Record<string, string>)['id'] ?? '';
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new AppActionError('not_found', 'no app with that id');
    return id;
  };

  /** Runs a change, audited as `action` with its outcome; `detail` never holds a secret. */
  const change = async (request: FastifyRequest, reply: FastifyReply, action: string, run: () => Promise<{ answer: unknown; target: string; detail?: Record<string, unknown> }>) => {
    try {
      const { answer, target, detail } = await run();
      audit(request, action, target, 'ok', detail);
      return answer;
    } catch (error) {
      const id = (request.params as Record<string, string> | undefined)?.['id'];
      const body = request.body as Record<string, unknown> | undefined;
      audit(request, action, id ?? (typeof body?.['id'] === 'string' ? body['id'].slice(0, 64) : undefined), 'failed', { reason: error instanceof AppActionError ? error.message.slice(0, 300) : 'internal' });
      return fail(reply, error);
    }
  };

  app.get(base, { preHandler: requireRole('owner') }, async () => ({ apps: (await admin.list()).map(withCount) }));

  app.get(`${base}/:id`, { preHandler: requireRole('owner') }, async (request, reply) => {
    try {
      return { app: withCount(await admin.get(idOf(request))) };
    } catch (error) {
      return fail(reply, error);
    }
  });

  app.post(base, { preHandler: requireRole('owner'), bodyLimit: APP_BODY_LIMIT }, async (request, reply) =>
    change(request, reply, 'app.create', async () => {
      const made = await admin.create(request.body);
      return { answer: { app: withCount(made.app), secret: made.secret }, target: made.app.id, detail: { key: made.app.key, name: made.app.name } };
    }),
  );

  app.post(`${base}/:id`, { preHandler: requireRole('owner'), bodyLimit: APP_BODY_LIMIT }, async (request, reply) =>
    change(request, reply, 'app.update', async () => {
      const id = idOf(request);
      const fields = request.body !== null && typeof request.body === 'object' ? Object.keys(request.body).slice(0, 16) : [];
      const view = await admin.update(id, request.body);
      return { answer: { app: withCount(view) }, target: id, detail: { fields } };
    }),
  );

  app.post(`${base}/:id/rotate-secret`, { preHandler: requireRole('owner') }, async (request, reply) =>
    change(request, reply, 'app.rotate_secret', async () => {
      const id = idOf(request);
      const rotated = await admin.rotateSecret(id);
      return { answer: { app: withCount(rotated.app), secret: rotated.secret }, target: id };
    }),
  );

  app.delete(`${base}/:id`, { preHandler: requireRole('owner') }, async (request, reply) =>
    change(request, reply, 'app.delete', async () => {
      const id = idOf(request);
      const deleted = await admin.delete(id);
      return { answer: { app: deleted }, target: id, detail: { key: deleted.key } };
    }),
  );
}
