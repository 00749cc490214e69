/**
 * API keys: the verifier (hashes only, every key compared, notAfter judged
 * with an injected clock) and the key store file (schema-validated, 0600,
 * hashes only, atomic, re-read when it changes).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { ApiKeyVerifier, CACHE_SIZE, allows, hashApiKey, type KeySource } from '../../src/auth/api-keys.ts';
import {
  createKey,
  generateApiKey,
  keyStatus,
  keyStorePath,
  parseDuration,
  parseScopes,
  readKeyStore,
  revokeKey,
  updateKeyStore,
  validateKeyStore,
  watchKeyStore,
  writeKeyStore,
  type StoredApiKey,
} from '../../src/auth/key-store.ts';
import { ConfigError, buildConfig } from '../../src/config/load.ts';
import type { ApiKeyConfig } from '../../src/config/schema.ts';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const iso = (ms: number) => new Date(ms).toISOString();

function key(name: string, secret: string, extra: Partial<ApiKeyConfig> = {}): ApiKeyConfig {
  return { name, sha256: hashApiKey(secret), scopes: ['publish'], ...extra };
}

describe('ApiKeyVerifier', () => {
  it('accepts a configured key and nothing else', () => {
    const v = new ApiKeyVerifier([key('a', 'secret-a'), key('b', 'secret-b', { scopes: ['read', 'admin'] })]);
    assert.equal(v.verify('secret-a')?.name, 'a');
    assert.equal(v.verify('secret-b')?.name, 'b');
    assert.ok(v.verify('secret-b') !== null && allows(v.verify('secret-b')!, 'publish'), 'admin implies every scope');
    assert.equal(v.verify('secret-a')!.scopes.has('read'), false);
    for (const wrong of ['', 'secret-c', 'secret-a ', ' secret-a', 'SECRET-A', hashApiKey('secret-a'), 'x'.repeat(513), 'secret-a\0']) {
      assert.equal(v.verify(wrong), null, JSON.stringify(wrong.slice(0, 40)));
    }
    assert.equal(v.verify(undefined as unknown as string), null);
    assert.equal(v.size, 2);
  });

  it('refuses a key from its notAfter on, judged with the injected clock', () => {
    let now = T0;
    const v = new ApiKeyVerifier([key('old', 'old-key', { notAfter: iso(T0 + 1000) }), key('new', 'new-key')], { now: () => now });
    assert.equal(v.verify('old-key')?.name, 'old');
    now = T0 + 999;
    assert.equal(v.verify('old-key')?.name, 'old', 'still in grace one millisecond before notAfter');
    now = T0 + 1000;
    assert.equal(v.verify('old-key'), null, 'refused at notAfter');
    now = T0 + 10 ** 9;
    assert.equal(v.verify('old-key'), null);
    assert.equal(v.verify('new-key')?.name, 'new', 'a key without notAfter never expires');
    now = T0 - 10 ** 9;
    assert.equal(v.verify('old-key')?.name, 'old');
  });

  it('an expired duplicate does not hide a live key with the same hash, in either order', () => {
    const now = () => T0;
    const expired = key('expired', 'same', { notAfter: iso(T0 - 1) });
    const live = key('live', 'same');
    assert.equal(new ApiKeyVerifier([expired, live], { now }).verify('same')?.name, 'live');
    assert.equal(new ApiKeyVerifier([live, expired], { now }).verify('same')?.name, 'live');
    assert.equal(new ApiKeyVerifier([expired], { now }).verify('same'), null);
  });

  it('a notAfter that does not parse refuses the key', () => {
    const v = new ApiKeyVerifier([key('bad', 'k', { notAfter: 'not a date' })]);
    assert.equal(v.verify('k'), null);
  });

  it('keys from a source are used as they change, config keys stay', () => {
    let list: readonly ApiKeyConfig[] = [key('s1', 'store-1')];
    let calls = 0;
    const source: KeySource = {
      current() {
        calls++;
        return list;
      },
    };
    const v = new ApiKeyVerifier([key('cfg', 'config-key')], { source, now: () => T0 });
    assert.equal(v.verify('store-1')?.name, 's1');
    assert.equal(v.verify('config-key')?.name, 'cfg');
    list = [key('s2', 'store-2', { notAfter: iso(T0 + 1) })];
    assert.equal(v.verify('store-1'), null, 'a key removed from the source is refused');
    assert.equal(v.verify('store-2')?.name, 's2');
    assert.equal(v.verify('config-key')?.name, 'cfg');
    assert.equal(v.size, 2);
    assert.ok(calls >= 4, 'the source is consulted on every verify');
  });

  it('compares the presented hash with every key, whichever matched (no early exit)', () => {
    // Count the constant-time comparisons through Node's own crypto export.
    const original = crypto.timingSafeEqual;
    let comparisons = 0;
    crypto.timingSafeEqual = (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      comparisons++;
      return original(a, b);
    };
    syncBuiltinESMExports();
    try {
      const now = () => T0;
      const keys = Array.from({ length: 40 }, (_, i) => key(`k${i}`, `secret-${i}`, i === 7 ? { notAfter: iso(T0 - 1) } : {}));
      const v = new ApiKeyVerifier(keys, { now });
      for (const [presented, expected] of [['secret-0', 'k0'], ['secret-39', 'k39'], ['secret-7', null], ['nope', null]] as const) {
        comparisons = 0;
        assert.equal(v.verify(presented)?.name ?? null, expected);
        assert.equal(comparisons, 40, `${presented}: every key compared`);
      }
    } finally {
      crypto.timingSafeEqual = original;
      syncBuiltinESMExports();
    }
  });
});

describe('ApiKeyVerifier cache', () => {
  /** Runs `body` counting the constant-time comparisons made through Node's crypto export. */
  function counting(body: (count: () => number) => void): void {
    const original = crypto.timingSafeEqual;
    let comparisons = 0;
    crypto.timingSafeEqual = (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      comparisons++;
      return original(a, b);
    };
    syncBuiltinESMExports();
    try {
      body(() => {
        const n = comparisons;
        comparisons = 0;
        return n;
      });
    } finally {
      crypto.timingSafeEqual = original;
      syncBuiltinESMExports();
    }
  }

  it('remembers a verified key, never a failure', () => {
    counting((count) => {
      const v = new ApiKeyVerifier(
        Array.from({ length: 10 }, (_, i) => key(`k${i}`, `secret-${i}`)),
        { now: () => T0 },
      );
      assert.equal(v.verify('secret-3')?.name, 'k3');
      assert.equal(count(), 10, 'first use: every key compared');
      assert.equal(v.verify('secret-3')?.name, 'k3');
      assert.equal(count(), 0, 'second use: remembered');
      for (let i = 0; i < 3; i++) {
        assert.equal(v.verify('wrong'), null);
        assert.equal(count(), 10, 'a failure is compared in full every time');
      }
    });
  });

  it(`holds at most ${CACHE_SIZE} keys, the longest held leave first`, () => {
    counting((count) => {
      const n = CACHE_SIZE + 10;
      const v = new ApiKeyVerifier(Array.from({ length: n }, (_, i) => key(`k${i}`, `secret-${i}`)), { now: () => T0 });
      for (let i = 0; i < n; i++) assert.equal(v.verify(`secret-${i}`)?.name, `k${i}`);
      count();
      assert.equal(v.verify(`secret-${n - 1}`)?.name, `k${n - 1}`);
      assert.equal(count(), 0, 'a recent key is remembered');
      assert.equal(v.verify('secret-0')?.name, 'k0');
      assert.equal(count(), n, 'the oldest was dropped and is compared in full again');
    });
  });

  it('a remembered key is still refused at its notAfter, and a live key with the same hash then takes over', () => {
    let now = T0;
    const v = new ApiKeyVerifier([key('expiring', 'same', { notAfter: iso(T0 + 10) })], { now: () => now });
    assert.equal(v.verify('same')?.name, 'expiring');
    now = T0 + 10;
    assert.equal(v.verify('same'), null);
    now = T0;
    const both = new ApiKeyVerifier([key('expiring', 'same', { notAfter: iso(T0 + 10) }), key('live', 'same')], { now: () => now });
    assert.equal(both.verify('same')?.name, 'expiring');
    now = T0 + 10;
    assert.equal(both.verify('same')?.name, 'live');
  });

  it('per connection: the key last verified on it again costs no hash and no comparison; another key, or a wrong one, takes the full path', () => {
    const originalHash = crypto.hash;
    let hashes = 0;
    crypto.hash = ((...args: Parameters<typeof crypto.hash>) => {
      hashes++;
      return originalHash(...args);
    }) as typeof crypto.hash;
    syncBuiltinESMExports();
    try {
      counting((count) => {
        const v = new ApiKeyVerifier(Array.from({ length: 5 }, (_, i) => key(`k${i}`, `secret-${i}`)), { now: () => T0 });
        const one = {};
        const two = {};
        assert.equal(v.verify('secret-1', one)?.name, 'k1');
        assert.equal(hashes, 1);
        assert.equal(count(), 5, 'first use: every key compared');
        for (let i = 0; i < 3; i++) assert.equal(v.verify('secret-1', one)?.name, 'k1');
        assert.equal(hashes, 1, 'the same key on the same connection: no hash');
        assert.equal(count(), 0);
        assert.equal(v.verify('secret-1', two)?.name, 'k1', 'another connection: hashed, then found among the verified keys');
        assert.equal(hashes, 2);
        for (const wrong of ['secret-2', 'secret-1x', 'secret-', 'Secret-1', 'secret-9']) {
          assert.equal(v.verify(wrong, one)?.name ?? null, wrong === 'secret-2' ? 'k2' : null, wrong);
        }
        assert.equal(hashes, 7, 'every other key on the connection was hashed');
        assert.equal(v.verify('secret-2', one)?.name, 'k2', 'the last verified key is the one remembered');
        assert.equal(hashes, 7);
      });
    } finally {
      crypto.hash = originalHash;
      syncBuiltinESMExports();
    }
  });

  it('per connection: the remembered key is still refused at its notAfter, and forgotten when the source changes', () => {
    let now = T0;
    let list: readonly ApiKeyConfig[] = [key('s1', 'store-1', { notAfter: iso(T0 + 10) })];
    const v = new ApiKeyVerifier([], { source: { current: () => list }, now: () => now });
    const connection = {};
    assert.equal(v.verify('store-1', connection)?.name, 's1');
    now = T0 + 10;
    assert.equal(v.verify('store-1', connection), null, 'expired');
    now = T0;
    assert.equal(v.verify('store-1', connection)?.name, 's1');
    list = [key('s2', 'store-2')];
    assert.equal(v.verify('store-1', connection), null, 'removed from the source');
    list = [key('s1b', 'store-1')];
    assert.equal(v.verify('store-1', connection)?.name, 's1b', 'the same secret under a new entry: its new principal');
  });

  it('forgets everything when the source changes: a revoked or removed key is refused from the next reload on', () => {
    let list: readonly ApiKeyConfig[] = [key('s1', 'store-1'), key('s2', 'store-2')];
    const v = new ApiKeyVerifier([], { source: { current: () => list }, now: () => T0 });
    assert.equal(v.verify('store-1')?.name, 's1');
    assert.equal(v.verify('store-2')?.name, 's2');
    list = [key('s1', 'store-1', { notAfter: iso(T0) }), key('s2', 'store-2')];
    assert.equal(v.verify('store-1'), null, 'revoked');
    list = [key('s1', 'store-1')];
    assert.equal(v.verify('store-2'), null, 'removed');
    assert.equal(v.verify('store-1')?.name, 's1');
  });
});

describe('key store file', () => {
  let dir: string;
  let seq = 0;
  const fresh = () => join(dir, `state-${++seq}`);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'herald-keys-unit-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function entry(name: string, secret: string, extra: Partial<StoredApiKey> = {}): StoredApiKey {
    return { name, sha256: hashApiKey(secret), scopes: ['read'], created: iso(T0), ...extra };
  }

  it('no file means no keys', () => {
    assert.deepEqual(readKeyStore(fresh()), []);
  });

  it('writes hashes only, mode 0600, atomically (no temporary file left)', () => {
    const state = fresh();
    const created = createKey([], { name: 'backend', scopes: ['publish', 'read'], now: T0 });
    assert.ok(!('error' in created));
    assert.match(created.key, /^hk_[A-Za-z0-9_-]{43}$/);
    writeKeyStore(state, created.keys);
    const path = keyStorePath(state);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(state).mode & 0o077, 0, 'the state directory is private');
    const text = readFileSync(path, 'utf8');
    assert.ok(!text.includes(created.key) && !text.includes(created.key.slice(3)), 'the key itself is not stored');
    assert.ok(text.includes(hashApiKey(created.key)));
    assert.deepEqual(readdirSync(state), ['api-keys.json']);
    assert.deepEqual(readKeyStore(state), created.keys);
  });

  it('refuses invalid stores as a whole, naming the problem', () => {
    const cases: [string, string, RegExp][] = [
      ['not JSON', '{', /not JSON/],
      ['prototype poisoning', '{"version":1,"keys":[],"__proto__":{"polluted":1}}', /__proto__/],
      ['constructor.prototype', '{"version":1,"keys":[{"constructor":{"prototype":{"polluted":1}}}]}', /__proto__\/constructor/],
      ['a plain key next to the hash', JSON.stringify({ version: 1, keys: [{ ...entry('a', 'k'), key: 'hk_plain' }] }), /keys\/0/],
      ['bad hash', JSON.stringify({ version: 1, keys: [{ ...entry('a', 'k'), sha256: 'abc' }] }), /sha256/],
      ['uppercase hash', JSON.stringify({ version: 1, keys: [{ ...entry('a', 'k'), sha256: hashApiKey('k').toUpperCase() }] }), /sha256/],
      ['unknown scope', JSON.stringify({ version: 1, keys: [{ ...entry('a', 'k'), scopes: ['root'] }] }), /scopes/],
      ['no scope', JSON.stringify({ version: 1, keys: [{ ...entry('a', 'k'), scopes: [] }] }), /scopes/],
      ['bad notAfter', JSON.stringify({ version: 1, keys: [entry('a', 'k', { notAfter: 'tomorrow' })] }), /notAfter/],
      ['bad created', JSON.stringify({ version: 1, keys: [{ ...entry('a', 'k'), created: '2026-13-45T99:00:00Z' }] }), /created/],
      ['duplicate name', JSON.stringify({ version: 1, keys: [entry('a', 'k'), entry('a', 'l')] }), /used twice/],
      ['unknown version', JSON.stringify({ version: 2, keys: [] }), /version/],
      ['array', '[]', /\//],
    ];
    for (const [label, text, problem] of cases) {
      const state = fresh();
      writeKeyStore(state, []);
      writeFileSync(keyStorePath(state), text, { mode: 0o600 });
      assert.throws(() => readKeyStore(state), (error: unknown) => error instanceof ConfigError && problem.test(error.message) && error.message.includes('api-keys.json'), label);
    }
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  });

  it('refuses a store writable by group or others', { skip: process.platform === 'win32' }, () => {
    const state = fresh();
    writeKeyStore(state, [entry('a', 'k')]);
    chmodSync(keyStorePath(state), 0o622);
    assert.throws(() => readKeyStore(state), /writable by group or others/);
    chmodSync(keyStorePath(state), 0o644);
    assert.equal(readKeyStore(state).length, 1, 'readable by others is allowed: it holds hashes only');
  });

  it('never writes a store it would refuse', () => {
    const state = fresh();
    assert.throws(() => writeKeyStore(state, [entry('a', 'k'), entry('a', 'l')]), /used twice/);
    assert.deepEqual(readKeyStore(state), []);
  });

  it('updateKeyStore takes a lock, refuses while another holds it, takes over an abandoned one, and releases it on error', () => {
    const state = fresh();
    updateKeyStore(state, () => ({ keys: [entry('a', 'k')], result: undefined }));
    const lock = keyStorePath(state) + '.lock';
    writeFileSync(lock, '');
    assert.throws(() => updateKeyStore(state, (keys) => ({ keys, result: 1 }), { lockWaitMs: 50 }), /another `herald keys` command/);
    const old = new Date(Date.now() - 60000);
    utimesSync(lock, old, old);
    assert.equal(updateKeyStore(state, (keys) => ({ keys: null, result: keys.length }), { lockWaitMs: 50 }), 1, 'a lock older than 30 s is taken over');
    assert.throws(() =>
      updateKeyStore(state, () => {
        throw new Error('boom');
      }),
    );
    assert.equal(updateKeyStore(state, (keys) => ({ keys: null, result: keys.length })), 1, 'the lock was released');
    assert.deepEqual(readdirSync(state), ['api-keys.json']);
  });

  it('watchKeyStore re-reads a changed file, at most once per interval, and keeps the last good keys', () => {
    const state = fresh();
    writeKeyStore(state, [entry('a', 'key-a')]);
    let now = T0;
    const problems: string[] = [];
    const source = watchKeyStore(state, { now: () => now, intervalMs: 1000, onReloadError: (p) => problems.push(p) });
    const v = new ApiKeyVerifier([], { source, now: () => now });
    assert.equal(v.verify('key-a')?.name, 'a');
    writeKeyStore(state, [entry('b', 'key-b')]);
    assert.equal(v.verify('key-a')?.name, 'a', 'not re-read within the interval');
    now += 1000;
    assert.equal(v.verify('key-a'), null, 'removed');
    assert.equal(v.verify('key-b')?.name, 'b', 'added');
    const unchanged = source.current();
    now += 1000;
    assert.equal(source.current(), unchanged, 'an unchanged file is not parsed again');

    writeFileSync(keyStorePath(state), '{"version":1,"keys":[{"name":1}]}', { mode: 0o600 });
    now += 1000;
    assert.equal(v.verify('key-b')?.name, 'b', 'a broken file leaves the last good keys in force');
    assert.equal(problems.length, 1);
    now += 1000;
    v.verify('key-b');
    assert.equal(problems.length, 1, 'the same broken version is reported once');

    rmSync(keyStorePath(state));
    now += 1000;
    assert.equal(v.verify('key-b'), null, 'a deleted store has no keys');
  });

  it('watchKeyStore throws at start on an invalid store, so the server refuses to start', () => {
    const state = fresh();
    writeKeyStore(state, []);
    writeFileSync(keyStorePath(state), 'nope', { mode: 0o600 });
    assert.throws(() => watchKeyStore(state), ConfigError);
  });
});

describe('key lifecycle (pure functions behind `herald keys`)', () => {
  it('create: prefixed random key, hash stored, name rules', () => {
    const a = createKey([], { name: 'svc', scopes: ['read'], now: T0 });
    const b = createKey([], { name: 'svc', scopes: ['read'], now: T0 });
    assert.ok(!('error' in a) && !('error' in b));
    assert.notEqual(a.key, b.key);
    assert.equal(a.entry.sha256, hashApiKey(a.key));
    assert.equal(a.entry.created, iso(T0));
    assert.equal(a.entry.notAfter, undefined);
    assert.notEqual(generateApiKey(), generateApiKey());

    assert.match((createKey(a.keys, { name: 'svc', scopes: ['read'], now: T0 }) as { error: string }).error, /exists/);
    assert.match((createKey([], { name: 'svc', scopes: ['read'], reservedNames: new Set(['svc']), now: T0 }) as { error: string }).error, /config file/);
    for (const name of ['', ' svc', 'a b', 'x'.repeat(65), '-svc', 'svc\n', 'ünï', '__proto__x;']) {
      assert.ok('error' in createKey([], { name, scopes: ['read'], now: T0 }), JSON.stringify(name));
    }
    assert.ok('error' in createKey([], { name: 'svc', scopes: [], now: T0 }));
  });

  it('create --expires: ISO only, in the future, normalized', () => {
    const ok = createKey([], { name: 'svc', scopes: ['read'], expires: '2026-02-01T12:00:00+02:00', now: T0 });
    assert.ok(!('error' in ok));
    assert.equal(ok.entry.notAfter, '2026-02-01T10:00:00.000Z');
    for (const expires of ['tomorrow', '1767225600000', '2025-12-31T00:00:00Z', iso(T0), 'Jan 2 2026']) {
      assert.ok('error' in createKey([], { name: 'svc', scopes: ['read'], expires, now: T0 }), expires);
    }
  });

  it('create replaces an expired entry of the same name, not one in grace', () => {
    const first = createKey([], { name: 'svc', scopes: ['read'], now: T0 });
    assert.ok(!('error' in first));
    const revoked = revokeKey(first.keys, 'svc', 60000, T0);
    assert.ok(!('error' in revoked));
    assert.ok('error' in createKey(revoked.keys, { name: 'svc', scopes: ['read'], now: T0 + 59999 }), 'still in grace');
    const again = createKey(revoked.keys, { name: 'svc', scopes: ['publish'], now: T0 + 60000 });
    assert.ok(!('error' in again));
    assert.equal(again.keys.length, 1);
    assert.deepEqual(again.keys[0]!.scopes, ['publish']);
  });

  it('revoke: now + grace, never later than an earlier notAfter; rotation keeps both keys working in grace', () => {
    let now = T0;
    const old = createKey([], { name: 'old', scopes: ['publish'], now });
    assert.ok(!('error' in old));
    const rotated = createKey(old.keys, { name: 'new', scopes: ['publish'], now });
    assert.ok(!('error' in rotated));
    const revoked = revokeKey(rotated.keys, 'old', parseDuration('24h')!, now);
    assert.ok(!('error' in revoked));
    assert.equal(revoked.entry.notAfter, iso(T0 + 86400000));
    const v = new ApiKeyVerifier(revoked.keys, { now: () => now });
    assert.equal(v.verify(old.key)?.name, 'old');
    assert.equal(v.verify(rotated.key)?.name, 'new');
    now = T0 + 86400000;
    assert.equal(v.verify(old.key), null);
    assert.equal(v.verify(rotated.key)?.name, 'new');

    const shorter = revokeKey(revoked.keys, 'old', 0, T0 + 1000);
    assert.ok(!('error' in shorter));
    assert.equal(shorter.entry.notAfter, iso(T0 + 1000), 'a revocation can shorten the grace');
    const longer = revokeKey(shorter.keys, 'old', parseDuration('7d')!, T0 + 2000);
    assert.ok(!('error' in longer));
    assert.equal(longer.entry.notAfter, iso(T0 + 1000), 'but never lengthen a key\'s life');
    assert.ok('error' in revokeKey(revoked.keys, 'missing', 0, T0));
    assert.equal(keyStatus(longer.entry, T0 + 999), 'expiring');
    assert.equal(keyStatus(longer.entry, T0 + 1000), 'expired');
    assert.equal(keyStatus(rotated.entry, T0), 'active');
  });

  it('parseDuration and parseScopes', () => {
    assert.equal(parseDuration('0'), 0);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('90s'), 90000);
    assert.equal(parseDuration('15m'), 900000);
    assert.equal(parseDuration('24h'), 86400000);
    assert.equal(parseDuration('7d'), 604800000);
    for (const bad of ['', '1', '-1h', '1.5h', '1 h', '1H', 'h', '1y', '99999d', '1e3s']) assert.equal(parseDuration(bad), undefined, bad);
    assert.deepEqual(parseScopes('publish,read'), ['publish', 'read']);
    assert.deepEqual(parseScopes(' admin '), ['admin']);
    for (const bad of ['', 'publish,', 'root', 'read,read', 'Publish']) assert.equal(typeof parseScopes(bad), 'string', bad);
  });

  it('store validation accepts what the CLI writes, config validation accepts notAfter', () => {
    const created = createKey([], { name: 'svc', scopes: ['read'], expires: '2027-01-01T00:00:00Z', now: T0 });
    assert.ok(!('error' in created));
    assert.ok('keys' in validateKeyStore({ version: 1, keys: created.keys }));
    const config = buildConfig(
      { mode: 'production', api: { keys: [{ name: 'old', sha256: hashApiKey('x'), scopes: ['read'], notAfter: '2027-01-01T00:00:00Z' }] } },
      { env: {} },
    );
    assert.equal(config.api.keys[0]!.notAfter, '2027-01-01T00:00:00Z');
    assert.throws(() => buildConfig({ api: { keys: [{ name: 'old', sha256: hashApiKey('x'), scopes: ['read'], notAfter: 'soon' }] } }, { env: {} }), ConfigError);
  });
});
