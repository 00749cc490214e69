/**
 * The transition tracker (webhooks/transitions.ts): channel and member
 * transitions from per-source reports, once per real transition, vacated
 * after the last member_removed, a dropped source ending what it held once.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TransitionTracker } from '../../src/webhooks/transitions.ts';
import { retryAfterMs } from '../../src/webhooks/dispatcher.ts';
import { MemoryOutbox, type WebhookOutbox } from '../../src/webhooks/outbox.ts';
import { SqliteOutbox } from '../../src/webhooks/sqlite-outbox.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisOutbox } from '../../src/webhooks/redis-outbox.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function tracked(): { tracker: TransitionTracker; log: string[] } {
  const log: string[] = [];
  const tracker = new TransitionTracker({
    occupied: (channel) => log.push(`occupied ${channel}`),
    vacated: (channel) => log.push(`vacated ${channel}`),
    memberAdded: (channel, member) => log.push(`added ${channel} ${member.user || member.client}`),
    memberRemoved: (channel, member) => log.push(`removed ${channel} ${member.user || member.client}`),
  });
  return { tracker, log };
}

const info = (client: string, user: string) => ({ client, user });

describe('transition tracker', () => {
  it('two sources, two connections of one user: one occupied, one member, vacated last', () => {
    const { tracker, log } = tracked();
    tracker.subscribed('w1', 'chat:a');
    tracker.joined('w1', 'chat:a', info('c1', 'alice'));
    tracker.subscribed('w2', 'chat:a');
    tracker.joined('w2', 'chat:a', info('c2', 'alice'));
    tracker.unsubscribed('w1', 'chat:a');
    tracker.left('w1', 'chat:a', info('c1', 'alice'));
    tracker.unsubscribed('w2', 'chat:a');
    assert.deepEqual(log, ['occupied chat:a', 'added chat:a alice']);
    tracker.left('w2', 'chat:a', info('c2', 'alice'));
    assert.deepEqual(log, ['occupied chat:a', 'added chat:a alice', 'removed chat:a alice', 'vacated chat:a']);
  });

  it('a channel subscribed again before its last member left is not vacated nor occupied again', () => {
    const { tracker, log } = tracked();
    tracker.subscribed('w1', 'chat:b');
    tracker.joined('w1', 'chat:b', info('c1', 'bob'));
    tracker.unsubscribed('w1', 'chat:b');
    tracker.subscribed('w2', 'chat:b');
    tracker.left('w1', 'chat:b', info('c1', 'bob'));
    assert.deepEqual(log, ['occupied chat:b', 'added chat:b bob', 'removed chat:b bob']);
    tracker.unsubscribed('w2', 'chat:b');
    assert.deepEqual(log.at(-1), 'vacated chat:b');
  });

  it('dropping a source removes its members (not those still elsewhere) then its channels, once; anonymous members by client id', () => {
    const { tracker, log } = tracked();
    tracker.subscribed('w1', 'chat:c');
    tracker.joined('w1', 'chat:c', info('c1', 'ann'));
    tracker.joined('w1', 'chat:c', info('c2', ''));
    tracker.subscribed('w2', 'chat:c');
    tracker.joined('w2', 'chat:c', info('c3', 'ann'));
    tracker.joined('w1', 'chat:c', info('c4', 'cid'));
    tracker.dropSource('w1');
    tracker.dropSource('w1');
    assert.deepEqual(log, ['occupied chat:c', 'added chat:c ann', 'added chat:c c2', 'added chat:c cid', 'removed chat:c c2', 'removed chat:c cid']);
    tracker.left('w1', 'chat:c', info('c1', 'ann'));
    tracker.unsubscribed('w1', 'chat:c');
    assert.equal(log.length, 6, 'reports of a dropped source change nothing');
    tracker.dropSource('w2');
    assert.deepEqual(log.slice(6), ['removed chat:c ann', 'vacated chat:c']);
  });

  it('a join that arrives after its connection left the channel (closed while subscribing) is not a member', () => {
    const { tracker, log } = tracked();
    tracker.subscribed('w1', 'chat:d');
    tracker.unsubscribed('w1', 'chat:d');
    tracker.left('w1', 'chat:d', info('c1', 'dan'));
    tracker.joined('w1', 'chat:d', info('c1', 'dan'));
    tracker.left('w1', 'chat:d', info('c1', 'dan'));
    assert.deepEqual(log, ['occupied chat:d', 'vacated chat:d']);
  });

  it('the delivery probe channel is not a channel', () => {
    const { tracker, log } = tracked();
    tracker.subscribed('w1', '|probe|n1');
    tracker.unsubscribed('w1', '|probe|n1');
    assert.deepEqual(log, []);
  });
});

describe('Retry-After', () => {
  it('reads seconds and HTTP dates, ignores the rest', () => {
    assert.equal(retryAfterMs('3', 0), 3000);
    assert.equal(retryAfterMs(new Date(10_000).toUTCString(), 4000), 6000);
    assert.equal(retryAfterMs('soon', 0), undefined);
    assert.equal(retryAfterMs(null, 0), undefined);
  });
});

const redisSkip = missingService('Redis', await redisAvailable());

for (const kind of ['memory', 'sqlite', 'redis'] as const) {
  describe(`${kind} outbox`, { skip: kind === 'redis' ? redisSkip : false }, () => {
    it('keeps append order per endpoint, retries, buries and replays behind what is pending', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'herald-outbox-'));
      const store = kind === 'sqlite' ? openSqliteStore({ stateDir: dir }) : undefined;
      const redis = kind === 'redis' ? new Redis(REDIS_URL, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 }) : undefined;
      await redis?.connect();
      const prefix = `herald-test-outbox-${randomBytes(4).toString('hex')}`;
      try {
        const outbox: WebhookOutbox = redis !== undefined ? new RedisOutbox(redis, prefix, { owner: 'n1', leaseMs: 60000 }) : store === undefined ? new MemoryOutbox() : new SqliteOutbox(store.db);
        await outbox.append([{ endpoint: 'a', eventId: 'e1', event: '1' }, { endpoint: 'b', eventId: 'e1', event: '1' }], 0);
        await outbox.append([{ endpoint: 'a', eventId: 'e2', event: '{"x":"a\\nb"}' }], 0);
        const head = (await outbox.head('a', 10))!;
        assert.deepEqual(head.map((e) => e.eventId), ['e1', 'e2']);
        assert.equal(head[1]!.event, '{"x":"a\\nb"}', 'the event text comes back as stored');
        await outbox.retryLater([head[1]!.seq], 50, 1);
        assert.deepEqual((await outbox.head('a', 10))!.map((e) => [e.eventId, e.attempts, e.nextAt]), [['e1', 0, 0], ['e2', 1, 50]]);
        await outbox.bury([head[0]!.seq], 'status 500', 1);
        assert.deepEqual(await outbox.counts(), { pending: 2, dead: 1 });
        assert.deepEqual((await outbox.listDead(10)).map((d) => [d.endpoint, d.eventId, d.reason, d.deadAt]), [['a', 'e1', 'status 500', 1]]);
        assert.deepEqual((await outbox.endpoints()).sort(), ['a', 'b']);
        assert.equal(await outbox.replay(2, { endpoint: 'b' }), 0);
        assert.equal(await outbox.replay(2, { endpoint: 'a' }), 1);
        assert.deepEqual((await outbox.head('a', 10))!.map((e) => e.eventId), ['e2', 'e1']);
        assert.deepEqual(await outbox.listDead(10), []);
        await outbox.delivered((await outbox.head('a', 10))!.map((e) => e.seq));
        assert.deepEqual(await outbox.counts(), { pending: 1, dead: 0 });
        if (redis !== undefined) {
          // The lease: while n1 holds endpoint b, n2 gets nothing; once given back, n2 takes it.
          const other = new RedisOutbox(redis, prefix, { owner: 'n2', leaseMs: 60000 });
          assert.deepEqual((await outbox.head('b', 10))!.map((e) => e.eventId), ['e1']);
          assert.equal(await other.head('b', 10), undefined, 'another node holds the lease');
          await other.release('b');
          assert.equal(await other.head('b', 10), undefined, 'only the holder gives it back');
          await (outbox as RedisOutbox).release('b');
          assert.deepEqual((await other.head('b', 10))!.map((e) => e.eventId), ['e1']);
          // A lease not given back (its holder died) expires, and the batch goes to the next node.
          const short = new RedisOutbox(redis, prefix, { owner: 'n3', leaseMs: 50 });
          await other.release('b');
          assert.deepEqual((await short.head('b', 10))!.map((e) => e.eventId), ['e1']);
          await new Promise((resolve) => setTimeout(resolve, 100));
          assert.deepEqual((await other.head('b', 10))!.map((e) => e.eventId), ['e1'], 'the same event again after the lease expired');
        }
      } finally {
        store?.close();
        if (redis !== undefined) {
          const keys = await redis.keys(`${prefix}:*`);
          if (keys.length > 0) await redis.del(...keys);
          redis.disconnect();
        }
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
