/**
 * `limits.scope: "cluster"`: the limits every node counts together in the
 * redis engine's Redis (docs/operations.md, "Which limit is which"). The API
 * rate limits go to @fastify/rate-limit's RedisStore, the connection limits
 * per IP to edge/shared-connection-counts.ts. While Redis cannot be reached
 * each node counts by itself (the limit holds per node: fail to node scope,
 * neither open nor closed); the switch and the way back are logged once each.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { SharedApiCounting } from '../api/rate-limits.ts';
import { redisCountingStore, type SharedStoreWatcher } from '../util/rate-limit-stores.ts';
import { RedisConnectionCounts } from '../edge/shared-connection-counts.ts';
import type { Edge } from '../edge/edge.ts';
import type { Engine } from './engine.ts';
import { ConfigError } from '../config/load.ts';

export interface SharedLimits {
  readonly api: SharedApiCounting;
  /** Deletes this node's connection counts and stops its heartbeat (after the connections closed). */
  close(): Promise<void>;
}

/** Logs the fall back to per-node counting, and the way back, once each. */
function watcher(logger: Logger): SharedStoreWatcher {
  let failing = false;
  return {
    ok() {
      if (!failing) return;
      failing = false;
      logger.info({}, 'cluster-wide limits: Redis answers again; limits are counted across the cluster');
    },
    failed(error) {
      if (failing) return;
      failing = true;
      logger.warn({ err: error }, 'cluster-wide limits: Redis does not answer; each node counts its own limits until it does');
    },
  };
}

/** Shares `edge`'s connection limits and returns the API's shared stores; undefined for scope "node". */
export function openSharedLimits(config: Config, engine: Engine, edge: Edge, logger: Logger): SharedLimits | undefined {
  if (config.limits.scope === 'node') return undefined;
  const redis = engine.redis;
  if (redis === undefined) throw new ConfigError([`/limits/scope: "cluster" counts the limits in Redis: it needs the redis engine (this node runs the ${engine.name} engine)`]);
  const prefix = config.engine.redisPrefix;
  const heard = watcher(logger);
  const api: SharedApiCounting = {
    perIp: { store: redisCountingStore(redis, `${prefix}:limits:api-ip:`), watcher: heard },
    perKey: { store: redisCountingStore(redis, `${prefix}:limits:api-key:`), watcher: heard },
  };
  const counts = new RedisConnectionCounts({
    redis,
    prefix,
    nodeId: engine.nodeId,
    maxConnectionsPerIp: config.limits.maxConnectionsPerIp,
    newConnectionsPerIpPerSecond: config.limits.newConnectionsPerIpPerSecond,
    nodeTtlMs: config.limits.clusterNodeTtlMs,
    localCounts: () => edge.connections.openByKey,
    watcher: heard,
  });
  edge.connections.share(counts);
  return { api, close: () => counts.close() };
}
