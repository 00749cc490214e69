/**
 * One look of the socket's subscription counting
 * (pusher/subscription-counts.ts), step by step, on real channel taps: a
 * change goes to every subscriber, an unchanged count only to those who
 * arrived since, presence and server-to-user channels get nothing, and an
 * app that turns it off is forgotten (it starts over when turned on).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Value } from '@sinclair/typebox/value';
import { appFromConfig, ConfigAppRegistry, type App, type AppRegistry } from '../../src/apps/apps.ts';
import { AppSchema } from '../../src/config/schema.ts';
import { channelKind, PusherChannel, type PusherSubscriber } from '../../src/pusher/pusher-channels.ts';
import { sendSubscriptionCounts } from '../../src/pusher/subscription-counts.ts';

/** A subscriber that keeps the text of every frame written to it (unmasked server text frames, short payloads). */
class Recorder implements PusherSubscriber {
  readonly socketId: string;
  readonly texts: string[] = [];
  constructor(socketId: string) {
    this.socketId = socketId;
  }
  writeFrame(frame: Buffer): void {
    const length = frame[1]! & 0x7f;
    const offset = length === 126 ? 4 : 2;
    this.texts.push(frame.subarray(offset).toString('utf8'));
  }
  /** The counts received, in order. */
  counts(): number[] {
    return this.texts.map((t) => JSON.parse(JSON.parse(t).data).subscription_count as number);
  }
}

function app(subscriptionCount: boolean): App {
  const entry = Value.Default(AppSchema, { id: 'a1', key: 'k1', secretEnv: 'X', subscriptionCount }) as Parameters<typeof appFromConfig>[0];
  return appFromConfig(entry, 'secret', undefined, 'config');
}

function tap(of: App, name: string): PusherChannel {
  return new PusherChannel(of, name, `~${of.id}~${name}`, channelKind(name, 200)!);
}

function join(t: PusherChannel, s: Recorder): void {
  t.subscribers.set(s, undefined);
  t.countWaiting.add(s);
}

test('a changed count goes to every subscriber; an unchanged one only to who arrived since', () => {
  const apps = new ConfigAppRegistry([app(true)]);
  const room = tap(apps.byId('a1')!, 'room');
  const counts = new Map<string, number>();
  const count = (internal: string) => counts.get(internal) ?? 0;
  const a = new Recorder('1.1');
  join(room, a);
  counts.set(room.internal, 1);
  sendSubscriptionCounts([room], apps, count);
  assert.deepEqual(a.counts(), [1]);
  assert.deepEqual(JSON.parse(a.texts[0]!), { event: 'pusher_internal:subscription_count', channel: 'room', data: '{"subscription_count":1}' });
  sendSubscriptionCounts([room], apps, count);
  assert.deepEqual(a.counts(), [1], 'nothing while the count holds');
  // b arrives as a subscriber on another node leaves: the count is 1 still.
  const b = new Recorder('2.2');
  join(room, b);
  sendSubscriptionCounts([room], apps, count);
  assert.deepEqual(a.counts(), [1], 'a already has it');
  assert.deepEqual(b.counts(), [1], 'b gets the count it never had');
  counts.set(room.internal, 7);
  counts.set(room.internal, 5);
  sendSubscriptionCounts([room], apps, count);
  assert.deepEqual(a.counts(), [1, 5], 'only the latest count of the interval');
  assert.deepEqual(b.counts(), [1, 5]);
});

test('presence and server-to-user channels get nothing', () => {
  const apps = new ConfigAppRegistry([app(true)]);
  const presence = tap(apps.byId('a1')!, 'presence-room');
  const toUser = tap(apps.byId('a1')!, '#server-to-user-u1');
  const s = new Recorder('1.1');
  presence.subscribers.set(s, 'u1');
  toUser.subscribers.set(s, undefined);
  sendSubscriptionCounts([presence, toUser], apps, () => 3);
  assert.deepEqual(s.texts, []);
});

test('an app with it off gets nothing, and starts over when it is turned on', () => {
  let current = app(false);
  const apps: AppRegistry = { byKey: () => current, byId: () => current, list: () => [current], onChange: () => {}, close: async () => {} };
  const room = tap(app(true), 'room');
  const s = new Recorder('1.1');
  join(room, s);
  sendSubscriptionCounts([room], apps, () => 1);
  assert.deepEqual(s.texts, [], 'the switch is read from the app as it is now, not from the tap\'s copy');
  assert.equal(room.countWaiting.size, 0);
  current = app(true);
  sendSubscriptionCounts([room], apps, () => 1);
  assert.deepEqual(s.counts(), [1]);
  current = app(false);
  sendSubscriptionCounts([room], apps, () => 1);
  current = app(true);
  sendSubscriptionCounts([room], apps, () => 1);
  assert.deepEqual(s.counts(), [1, 1], 'turned on again: the count is sent again');
});
