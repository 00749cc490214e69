/**
 * The health endpoints, the same on both listeners:
 *
 * - `GET /health/live`: liveness. 200 `{"status":"ok"}` whenever the process
 *   answers at all, draining included: a restart would not help it. No
 *   answer (a blocked event loop) is the failure.
 * - `GET /health/ready`: readiness. 200 `{"status":"ready"}` when this
 *   process should get traffic; 503 `{"status":"not_ready","reasons":[…]}`
 *   while it drains, while the engine is degraded, while the delivery probe
 *   fails (broker/delivery-probe.ts), while the watchdog is over a threshold,
 *   and in cluster mode while any worker is (or a worker slot has no ready
 *   worker).
 * - `GET /health`: as before, the engine and drain only (`ok`, `draining`,
 *   `degraded`); 503 unless `ok`.
 */
import type { FastifyInstance } from 'fastify';
import type { Node } from '../core/node.ts';
import type { Watchdog } from '../observability/watchdog.ts';

/** Why a process (or a worker of its cluster) is not ready. */
export interface NotReadyReason {
  /** `draining`, `engine_degraded`, `delivery_probe`, `event_loop_delay`, `live_heap`, `rss`, `worker_not_running`. */
  readonly reason: string;
  readonly detail?: string;
  /** Cluster mode: the worker it concerns. */
  readonly worker?: number;
}

export interface ReadinessSources {
  readonly node: Node;
  readonly watchdog: Watchdog;
  /** The delivery probe's verdict (broker/delivery-probe.ts, or the redis engine's own): why delivery is judged broken, or undefined. */
  readonly probe?: (() => string | undefined) | undefined;
  /** Cluster mode: what the primary last said about the other workers (this one excluded). */
  readonly cluster?: (() => readonly NotReadyReason[]) | undefined;
}

export function readiness(sources: ReadinessSources): { readonly status: 'ready' | 'not_ready'; readonly reasons: readonly NotReadyReason[] } {
  const reasons: NotReadyReason[] = [];
  const health = sources.node.health();
  if (health.status === 'draining') reasons.push({ reason: 'draining' });
  else if (health.status === 'degraded') reasons.push({ reason: 'engine_degraded', ...(health.reason === undefined ? {} : { detail: health.reason }) });
  const probe = sources.probe?.();
  if (probe !== undefined) reasons.push({ reason: 'delivery_probe', detail: probe });
  for (const threshold of sources.watchdog.over()) reasons.push({ reason: threshold });
  if (sources.cluster !== undefined) reasons.push(...sources.cluster());
  return { status: reasons.length === 0 ? 'ready' : 'not_ready', reasons };
}

export function registerHealthRoutes(app: FastifyInstance, sources: ReadinessSources): void {
  app.get('/health', async (_request, reply) => {
    const health = sources.node.health();
    if (health.status !== 'ok') return reply.code(503).send(health);
    return health;
  });
  app.get('/health/live', async () => ({ status: 'ok' }));
  app.get('/health/ready', async (_request, reply) => {
    const state = readiness(sources);
    if (state.status !== 'ready') return reply.code(503).send(state);
    return { status: 'ready' };
  });
}
