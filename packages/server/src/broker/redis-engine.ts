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
  readonly revocationRetentionMs: number;
  readonly onError: (error: unknown, what: string) => void;
  readonly onHealthChange?: (healthy: boolean, reason: string) => void;
}

export type RedisHealth = { readonly status: 'ok' } | { readonly status: 'degraded'; readonly reason: string };

export interface RedisEngineParts {
  readonly broker: RedisBroker;
  readonly presence: RedisPresenceStore;
  readonly control: ControlBus;
  readonly revocations: RevocationList;
  health(): RedisHealth;
  close(): Promise<void>;
}

export async function createRedisEngineParts(options: RedisEngineOptions): Promise<RedisEngineParts> {
  const { command, subscriber, prefix, nodeId, onError } = options;
  const broker = new RedisBroker({ command, subscriber, prefix, streamMetaTtlMs: options.streamMetaTtlMs, onError });
  const presence = new RedisPresenceStore({ command, prefix, ttlMs: options.presenceTtlMs, onError });
  const sharded = subscriber instanceof ShardedPubSub ? subscriber : undefined;
  const single = subscriber instanceof ShardedPubSub ? undefined : subscriber;
  const controlTopic = sharded === undefined ? `${prefix}:control` : `${prefix}:{control}`;
  const probeTopic = `${prefix}:probe:${nodeId}`;
  const publishRaw = (topic: string, message: string): Promise<unknown> => (sharded === undefined ? command.publish(topic, message) : command.spublish(topic, message));
  const shardProbes =
    sharded === undefined ? undefined : new ShardProbes({ pubsub: sharded, topic: (k) => `${prefix}:probe:{${nodeId}:${k}}`, publish: publishRaw, onError });
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
    if (probeFailing || shardProbes?.failing === true) return { status: 'degraded', reason: 'pub/sub delivery probe lost' };
    return { status: 'ok' };
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
    if (command.status === 'ready') {
      probeSent++;
      publishRaw(probeTopic, String(probeSent)).catch(() => undefined);
    }
  }, options.probeIntervalMs);
  probe.unref();

  return {
    broker,
    presence,
    control,
    revocations,
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
