/**
 * The app store contract (apps/app-store.ts), one suite for every store:
 * create (ids and keys unique, atomically under concurrent creates),
 * update (settings, secret, the key kept), delete, the version that
 * registries poll, and the registry over the store
 * (apps/store-app-registry.ts). test/unit/apps-store-contract.test.ts runs
 * it on memory, the sqlite state file and Redis; test/redis/tls-acl.test.ts
 * on Redis as the ACL user of docs/operations.md.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Value } from '@sinclair/typebox/value';
import { AppSettingsSchema, type AppRecord, type AppStore } from '../../src/apps/app-store.ts';
import { StoreAppRegistry } from '../../src/apps/store-app-registry.ts';
import { appChannel, localChannel, type App } from '../../src/apps/apps.ts';

/** A store to test, fresh (empty) for each test, and how to dispose of it. */
export interface AppStoreHarness {
  readonly store: AppStore;
  /** A second handle on the same storage (another process's view: the CLI beside the server, another node). */
  readonly other: AppStore;
  close(): Promise<void>;
}

function record(id: string, key: string, now = 1000, change: Partial<AppRecord> = {}): AppRecord {
  return { ...(Value.Default(AppSettingsSchema, { name: `app ${id}` }) as AppRecord), id, key, secret: `secret-of-${id}-0123456789`, createdAt: now, updatedAt: now, ...change };
}

/** Registers the contract's suite, `open` making a fresh store (and a second handle on it) for each test. */
export function appStoreContract(name: string, open: () => Promise<AppStoreHarness>): void {
  describe(`app store contract: ${name}`, { timeout: 30000 }, () => {
    const withStore = (run: (h: AppStoreHarness) => Promise<void>) => async () => {
      const h = await open();
      try {
        await run(h);
      } finally {
        await h.close();
      }
    };

    test(
      'create, read back (secret as it is, settings, times), unique ids and keys, list by id',
      withStore(async ({ store, other }) => {
        assert.deepEqual(await store.list(), []);
        const v0 = await store.version();
        const a = record('b-app', 'key-b', 1000, { allowedOrigins: ['https://a.example'], webhooks: [{ url: 'https://hooks.example/p', events: ['channel_occupied'] }] });
        assert.equal(await store.create(a), 'created');
        assert.notEqual(await other.version(), v0, 'the version moved, seen from another handle');
        assert.deepEqual(await other.get('b-app'), a);
        assert.equal(await store.create(record('b-app', 'key-other')), 'id_taken');
        assert.equal(await store.create(record('c-app', 'key-b')), 'key_taken');
        assert.equal(await store.create(record('a-app', 'key-a')), 'created');
        assert.deepEqual(
          (await other.list()).map((r) => r.id),
          ['a-app', 'b-app'],
        );
        assert.equal(await store.get('missing'), undefined);
      }),
    );

    test(
      'concurrent creates of one id or one key: exactly one wins',
      withStore(async ({ store, other }) => {
        const sameId = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? store : other).create(record('race', `race-key-${i}`))));
        assert.equal(sameId.filter((o) => o === 'created').length, 1);
        const sameKey = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? store : other).create(record(`k${i}`, 'shared-key'))));
        assert.equal(sameKey.filter((o) => o === 'created').length, 1);
        assert.equal(sameKey.filter((o) => o === 'key_taken').length, 9);
        assert.equal((await store.list()).length, 2);
      }),
    );

    test(
      'update changes settings and secret, keeps id, key and createdAt; delete frees id and key',
      withStore(async ({ store, other }) => {
        await store.create(record('app1', 'key1', 1000));
        const v1 = await store.version();
        const updated = await other.update('app1', { settings: { enabled: false, limits: { ...record('x', 'y').limits, maxConnections: 5 } } }, 2000);
        assert.equal(updated?.enabled, false);
        assert.equal(updated?.limits.maxConnections, 5);
        assert.equal(updated?.key, 'key1');
        assert.equal(updated?.createdAt, 1000);
        assert.equal(updated?.updatedAt, 2000);
        assert.notEqual(await store.version(), v1);
        assert.equal(updated?.subscriptionCount, false, 'subscription counting is off unless asked');
        assert.equal((await other.update('app1', { settings: { subscriptionCount: true } }, 2500))?.subscriptionCount, true);
        assert.equal((await store.get('app1'))?.subscriptionCount, true, 'read back from the store');
        const rotated = await store.update('app1', { secret: 'a-new-secret-0123456789' }, 3000);
        assert.equal(rotated?.secret, 'a-new-secret-0123456789');
        assert.equal(rotated?.enabled, false, 'settings kept');
        assert.equal(rotated?.subscriptionCount, true, 'settings kept');
        assert.deepEqual(await other.get('app1'), rotated);
        assert.equal(await store.update('missing', { settings: { enabled: true } }, 1), undefined);
        const v2 = await store.version();
        assert.equal(await other.delete('app1'), true);
        assert.notEqual(await store.version(), v2);
        assert.equal(await store.delete('app1'), false);
        assert.equal(await store.get('app1'), undefined);
        assert.equal(await store.create(record('app1', 'key1')), 'created', 'id and key are free again');
      }),
    );

    test(
      'the registry merges config and stored apps, reloads on demand and on the version, and tells what changed',
      withStore(async ({ store, other }) => {
        const configApp = Object.freeze({ id: 'cfg', key: 'cfg-key', secret: 'cfg-secret', name: 'cfg', enabled: true, clientEvents: false, userAuthentication: true, subscriptionCount: false, allowedOrigins: undefined, limits: record('x', 'y').limits, webhooks: [], channelPrefix: '', source: 'config' }) as App;
        await store.create(record('s1', 'k1'));
        await store.create(record('cfg', 'other-key'));
        const conflicts: string[] = [];
        const registry = await StoreAppRegistry.open({ configApps: [configApp], store, pollIntervalMs: 50, onConflict: (id) => conflicts.push(id) });
        try {
          registry.watch();
          assert.deepEqual(
            registry.list().map((a) => a.id),
            ['cfg', 's1'],
          );
          assert.deepEqual(conflicts, ['cfg'], 'a stored app with a config app\'s id is left out');
          assert.equal(registry.byId('cfg')?.source, 'config');
          const s1 = registry.byKey('k1')!;
          assert.equal(s1.source, 'store');
          assert.equal(s1.secret, 'secret-of-s1-0123456789');
          assert.equal(appChannel(s1, 'orders'), '~s1~orders', 'stored apps are never the default app');
          assert.equal(localChannel(s1, '~s1~orders'), 'orders');
          assert.equal(localChannel(configApp, '~s1~orders'), undefined);

          const changes: string[] = [];
          registry.onChange((id) => changes.push(id));
          // A change by another process: seen at the next poll of the version.
          await other.create(record('s2', 'k2'));
          for (let i = 0; i < 100 && registry.byKey('k2') === undefined; i++) await new Promise((r) => setTimeout(r, 20));
          assert.equal(registry.byKey('k2')?.id, 's2');
          assert.deepEqual(changes, ['s2']);
          // A reload on demand (the apps_changed control command) answers after the read.
          assert.equal(registry.byId('s1')?.subscriptionCount, false);
          await other.update('s1', { secret: 'rotated-secret-0123456789', settings: { enabled: false, subscriptionCount: true } }, 5000);
          await registry.reload();
          assert.equal(registry.byId('s1')?.secret, 'rotated-secret-0123456789');
          assert.equal(registry.byId('s1')?.enabled, false);
          assert.equal(registry.byId('s1')?.subscriptionCount, true);
          await other.delete('s2');
          await registry.reload();
          assert.equal(registry.byKey('k2'), undefined);
          assert.equal(registry.byId('s2'), undefined);
          assert.deepEqual(changes, ['s2', 's1', 's2']);
        } finally {
          await registry.close();
        }
      }),
    );
  });
}
