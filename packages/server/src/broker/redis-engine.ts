/**
 * The Redis engine: broker, presence, the node-to-node control channel, a
 * periodic end-to-end delivery probe, revocations kept in Redis, and health.
 * It is handed its two Redis clients (commands, pub/sub); it never creates
 * connections itself.
 *
 * On a Redis Cluster (the pub/sub client is a `ShardedPubSub`) every topic
 * is a shard channel (SSUBSCRIBE/SPUBLISH): a channel's topic in its stream's
 * slot, the control topic in one fixed slot (`{control}`), and one probe
 * topic per master (redis-shard-probe.ts). A topic whose shard subscription
 * came back (reconnect, failover, slot moved, lost probe) resynchronizes its
 * channel only.
 */
import type { Cluster, Redis } from 'ioredis';
import type { ControlBus, ControlCommand } from './control.ts';
import { BrokerUnavailableError, RedisBroker } from './redis-broker.ts';
import { RedisPresenceStore } from './redis-presence.ts';
import { ShardedPubSub } from './redis-sharded-pubsub.ts';
import { ShardProbes } from './redis-shard-probe.ts';
import { MemoryRevocationList, type RevocationList } from '../auth/revocation.ts';
import type { ConnectionIdentity } from '../auth/jwt.ts';

export interface RedisEngineOptions {
  readonly nodeId: string;
  readonly command: Redis | Cluster;
  /** One Redis's pub/sub connection, or a cluster's sharded pub/sub. */
  readonly subscriber: Redis | ShardedPubSub;
  readonly prefix: string;
  readonly streamMetaTtlMs: number;
  readonly presenceTtlMs: number;
  readonly probeIntervalMs: number;
  /** A probe not heard back within this time makes the engine's probe fail (`engine.probeDeadlineMs`). */
  readonly probeDeadlineMs: number;
  readonly revocationRetentionMs: number;
  readonly onError: (error: unknown, what: string) => void;
  readonly onHealthChange?: (healthy: boolean, reason: string) => void;
}

export type RedisHealth = { readonly status: 'ok' } | { readonly status: 'degraded'; readonly reason: string };

/**
 * The Redis engine's end-to-end delivery probe, as readiness sees it.
 * Guarantees: `failure()` answers a reason while the oldest probe not yet
 * heard back is older than the deadline (judged at every probe interval)
 * and every Redis connection is up (a lost connection is the engine's
 * health, not the probe's); undefined again from the first probe heard
 * back after that. Every `onChange` listener is called on every flip.
 */
export interface RedisDeliveryProbe {
  failure(): string | undefined;
  onChange(listener: (failure: string | undefined) => void): void;
}

export interface RedisEngineParts {
  readonly broker: RedisBroker;
  readonly presence: RedisPresenceStore;
  readonly control: ControlBus;
  readonly revocations: RevocationList;
  readonly probe: RedisDeliveryProbe;
  /** Degraded while a Redis connection is not ready. */
  health(): RedisHealth;
  close(): Promise<void>;
}

/** Probes kept waiting at most (as broker/delivery-probe.ts). */
export const MAX_PENDING_PROBES = 64;

/** The topic of node-to-node control commands under an engine prefix: one Redis's pub/sub channel, or on a Redis Cluster a shard channel in the fixed `{control}` slot. */
function controlTopicOf(prefix: string, sharded: boolean): string {
  return sharded ? `${prefix}:{control}` : `${prefix}:control`;
}

/**
 * Sends a control command to every node of the engine as a node does
 * (`from` names the sender; nodes ignore only their own snapshots and
 * queries by it). For processes that are no node: `herald apps` tells the
 * running servers of a change (apps/apps-notice.ts).
 */
export async function publishControlCommand(command: Redis | Cluster, prefix: string, sharded: boolean, from: string, cmd: ControlCommand): Promise<void> {
  const topic = controlTopicOf(prefix, sharded);
  const message = JSON.stringify({ from, command: cmd });
  await (sharded ? command.spublish(topic, message) : command.publish(topic, message));
}

export async function createRedisEngineParts(options: RedisEngineOptions): Promise<RedisEngineParts> {
  const { command, subscriber, prefix, nodeId, onError } = options;
  const broker = new RedisBroker({ command, subscriber, prefix, streamMetaTtlMs: options.streamMetaTtlMs, onError });
  const presence = new RedisPresenceStore({ command, prefix, ttlMs: options.presenceTtlMs, onError });
  const sharded = subscriber instanceof ShardedPubSub ? subscriber : undefined;
  const single = subscriber instanceof ShardedPubSub ? undefined : subscriber;
  const controlTopic = controlTopicOf(prefix, sharded !== undefined);
  const probeTopic = `${prefix}:probe:${nodeId}`;
  const publishRaw = (topic: string, message: string): Promise<unknown> => (sharded === undefined ? command.publish(topic, message) : command.spublish(topic, message));
  const shardProbes =
    sharded === undefined ? undefined : new ShardProbes({ pubsub: sharded, topic: (k) => `${prefix}:probe:{${nodeId}:${k}}`, publish: publishRaw, onError, now: Date.now });
  const revokedTokens = `${prefix}:revoked:tokens`;
  const revokedUsers = `${prefix}:revoked:users`;

  // Revocations: kept in memory for the hot path, written to Redis so that
  // nodes started later know them too.
  const memory = new MemoryRevocationList({ retentionMs: options.revocationRetentionMs });
  const now = Date.now();
  const [tokens, users] = await Promise.all([command.hgetall(revokedTokens), command.hgetall(revokedUsers)]);
  for (const [id, until] of Object.entries(tokens)) if (Number(until) > now) memory.revokeToken(id, Number(until));
  for (const [user, at] of Object.entries(users)) if (Number(at) + options.revocationRetentionMs > now) memory.revokeUser(user, Number(at));
  const revocations: RevocationList = {
    revokeToken(tokenId, expiresAt) {
      memory.revokeToken(tokenId, expiresAt);
      command.hset(revokedTokens, tokenId, String(expiresAt ?? Date.now() + options.revocationRetentionMs)).catch((error: unknown) => onError(error, 'store revocation'));
    },
    revokeUser(user, at) {
      memory.revokeUser(user, at);
      command.hset(revokedUsers, user, String(at)).catch((error: unknown) => onError(error, 'store revocation'));
    },
    isRevoked: (identity: ConnectionIdentity) => memory.isRevoked(identity),
  };

  let controlHandler: ((command: ControlCommand, from: string) => void) | undefined;
  let probeSent = 0;
  let probeSeen = 0;
  let probeFailing = false;
  /** Probe counter → when it was sent, until heard back (one Redis; a cluster's are in ShardProbes). */
  const probePending = new Map<number, number>();
  let probeFailure: string | undefined;
  const probeListeners: ((failure: string | undefined) => void)[] = [];
  const onMessage = (topic: string, message: string) => {
    if (shardProbes?.onMessage(topic, message) === true) return;
    if (topic === controlTopic) {
      try {
        const envelope = JSON.parse(message) as { from: string; command: ControlCommand };
        controlHandler?.(envelope.command, envelope.from);
      } catch (error) {
        onError(error, 'decode control message');
      }
    } else if (topic === probeTopic) {
      probeSeen = Math.max(probeSeen, Number(message));
      for (const n of probePending.keys()) if (n <= probeSeen) probePending.delete(n);
    }
  };
  if (sharded !== undefined) {
    sharded.onMessage(onMessage);
    // The shard of these topics lost them for a while: their channels resynchronize.
    sharded.onResubscribed((topics) => {
      const channels: string[] = [];
      for (const topic of topics) {
        const channel = broker.channelOf(topic);
        if (channel !== undefined) channels.push(channel);
      }
      broker.reset(channels);
    });
    await Promise.all([sharded.subscribe(controlTopic), shardProbes!.cover()]);
  } else if (single !== undefined) {
    await subscribeSingle(single, broker, onMessage, onError, controlTopic, probeTopic);
  }

  const control: ControlBus = {
    setHandler(handler) {
      controlHandler = handler;
    },
    async publish(cmd) {
      try {
        await publishRaw(controlTopic, JSON.stringify({ from: nodeId, command: cmd }));
      } catch (error) {
        onError(error, 'control publish');
        throw new BrokerUnavailableError('redis control publish failed');
      }
    },
    async close() {},
  };

  let lastHealthy = true;
  const health = (): RedisHealth => {
    if (command.status !== 'ready') return { status: 'degraded', reason: 'redis command connection is ' + command.status };
    if (single !== undefined && single.status !== 'ready') return { status: 'degraded', reason: 'redis pub/sub connection is ' + single.status };
    if (sharded !== undefined && sharded.status !== 'ready') return { status: 'degraded', reason: 'redis sharded pub/sub ' + sharded.status };
    return { status: 'ok' };
  };
  /** The probe's verdict at this interval: the oldest probe not heard back, once older than the deadline. */
  const judgeProbe = (): void => {
    let failure: string | undefined;
    // Probes sent while a connection was down are explained by it: only later ones judge.
    if (health().status !== 'ok') probePending.clear();
    else {
      const now = Date.now();
      if (shardProbes !== undefined) failure = shardProbes.failure(options.probeDeadlineMs);
      else {
        const oldest = probePending.values().next();
        if (oldest.done !== true && now - oldest.value >= options.probeDeadlineMs) failure = `a probe was not delivered back within ${options.probeDeadlineMs} ms`;
      }
    }
    if (failure === probeFailure) return;
    probeFailure = failure;
    for (const listener of probeListeners) listener(failure);
  };
  const report = () => {
    const current = health();
    const healthy = current.status === 'ok';
    if (healthy !== lastHealthy) {
      lastHealthy = healthy;
      options.onHealthChange?.(healthy, current.status === 'ok' ? 'recovered' : current.reason);
    }
  };

  // End-to-end probe: publish to our own probe topic; two intervals without
  // it arriving means the subscription is silently gone: reconnect the
  // pub/sub connection (ioredis resubscribes) and resynchronize every channel.
  // (On a cluster: one probe per master, redis-shard-probe.ts.)
  const probe = setInterval(() => {
    if (shardProbes !== undefined) {
      shardProbes.tick(command.status === 'ready');
      report();
      judgeProbe();
      return;
    }
    if (probeSent > 0 && probeSeen < probeSent - 1 && single?.status === 'ready' && command.status === 'ready') {
      if (!probeFailing) {
        probeFailing = true;
        onError(new Error('pub/sub delivery probe lost'), 'probe');
        single.disconnect(true);
      }
    } else if (probeSeen >= probeSent - 1 && probeFailing) {
      probeFailing = false;
      broker.resetAll();
    }
    report();
    judgeProbe();
    if (command.status === 'ready') {
      probeSent++;
      probePending.set(probeSent, Date.now());
      // Probes lost long ago are forgotten; the newest still judge.
      if (probePending.size > MAX_PENDING_PROBES) probePending.delete(probePending.keys().next().value!);
      publishRaw(probeTopic, String(probeSent)).catch(() => undefined);
    }
  }, options.probeIntervalMs);
  probe.unref();

  return {
    broker,
    presence,
    control,
    revocations,
    probe: {
      failure: () => probeFailure,
      onChange(listener) {
        probeListeners.push(listener);
      },
    },
    health,
    async close() {
      clearInterval(probe);
      await sharded?.close();
      await single?.unsubscribe().catch(() => undefined);
    },
  };
}

/**
 * One Redis: control and probe in one SUBSCRIBE. After a reconnect (the
 * clients come without ioredis's automatic resubscription): everything again
 * in one SUBSCRIBE, then every channel resynchronizes (what was published
 * meanwhile may be lost); a failure reconnects.
 */
async function subscribeSingle(
  subscriber: Redis,
  broker: RedisBroker,
  onMessage: (topic: string, message: string) => void,
  onError: (error: unknown, what: string) => void,
  controlTopic: string,
  probeTopic: string,
): Promise<void> {
  subscriber.on('message', onMessage);
  await subscriber.subscribe(controlTopic, probeTopic);
  subscriber.on('ready', () => {
    const topics = [controlTopic, probeTopic, ...[...broker.channels].map((channel) => broker.topic(channel))];
    subscriber.subscribe(...topics).then(
      () => broker.resetAll(),
      (error: unknown) => {
        onError(error, 'resubscribe');
        subscriber.disconnect(true);
      },
    );
  });
}
