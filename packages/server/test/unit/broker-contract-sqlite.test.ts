/**
 * The broker and presence contract (broker-contract.ts) against the sqlite
 * engine's broker on a real state file, with an injected clock; then what
 * only a durable broker promises: streams, limits and revocations across a
 * reopen of the file, group commit, and disk errors answered with
 * `unavailable` and degraded health while the process keeps running.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { BrokerUnavailableError, type StoredPublication, type StreamOptions } from '../../src/broker/broker.ts';
import { MemoryPresenceStore } from '../../src/broker/memory-broker.ts';
import { SqliteBroker } from '../../src/broker/sqlite-broker.ts';
import { SqliteRevocationList } from '../../src/auth/revocation.ts';
import { MIGRATIONS, openSqliteStore, stateFilePath, type SqliteStore } from '../../src/store/sqlite-store.ts';
import { runBrokerContract } from './broker-contract.ts';

const dirs: string[] = [];
function stateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'herald-sqlite-broker-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

runBrokerContract('sqlite', () => {
  let now = 1_700_000_000_000;
  const store = openSqliteStore({ stateDir: stateDir() });
  const broker = new SqliteBroker(store, { now: () => now, sweepIntervalMs: 3_600_000 });
  const presence = new MemoryPresenceStore();
  return {
    broker,
    presence,
    clock: {
      now: () => now,
      advance: (ms: number) => {
        now += ms;
      },
    },
    sweep: () => broker.sweep(),
    async close() {
      await broker.close();
      await presence.close();
      store.close();
    },
  };
}, { answersAtOnce: true });

const stream = (size: number, ttlMs = 60_000): StreamOptions => ({ size, ttlMs });

class Clock {
  now = 1_700_000_000_000;
  readonly read = () => this.now;
}

function open(dir: string, clock: Clock, onHealthChange?: (healthy: boolean, reason: string) => void): { store: SqliteStore; broker: SqliteBroker } {
  const store = openSqliteStore({ stateDir: dir, busyTimeoutMs: 50 });
  const broker = new SqliteBroker(store, { now: clock.read, sweepIntervalMs: 3_600_000, ...(onHealthChange ? { onHealthChange } : {}) });
  return { store, broker };
}

async function reopen(dir: string, clock: Clock, current: { store: SqliteStore; broker: SqliteBroker }) {
  await current.broker.close();
  current.store.close();
  return open(dir, clock);
}

describe('sqlite broker: across a reopen of the state file', () => {
  it('keeps epoch, offsets and history; the next publish continues the stream', async () => {
    const dir = stateDir();
    const clock = new Clock();
    let e = open(dir, clock);
    let last = { epoch: '', offset: 0 };
    for (let i = 1; i <= 5; i++) last = await e.broker.publish('ch', JSON.stringify({ i }), { stream: stream(100), info: { client: 'c1', user: 'u1', conn_info: { a: [1] } } });
    e = await reopen(dir, clock, e);
    const page = await e.broker.history('ch', { since: { epoch: last.epoch, offset: 2 }, limit: 100 }, stream(100));
    assert.deepEqual({ ...page.position }, { ...last });
    assert.deepEqual(page.publications.map((p) => p.offset), [3, 4, 5]);
    assert.deepEqual(page.publications.map((p) => p.data), [3, 4, 5].map((i) => JSON.stringify({ i })));
    assert.deepEqual({ ...page.publications[0]!.info }, { client: 'c1', user: 'u1', conn_info: { a: [1] } });
    const next = await e.broker.publish('ch', '"next"', { stream: stream(100) });
    assert.deepEqual({ ...next }, { epoch: last.epoch, offset: 6 });
    // A stream read from the file is written back by an UPDATE of its row: the next reopen sees it.
    const later = await e.broker.publish('ch', '"later"', { stream: stream(100) });
    e = await reopen(dir, clock, e);
    const after = await e.broker.history('ch', { limit: 0 }, stream(100));
    assert.deepEqual({ ...after.position }, { epoch: last.epoch, offset: 7 });
    assert.deepEqual({ ...later }, { epoch: last.epoch, offset: 7 });
    await e.broker.close();
    e.store.close();
  });

  /** The stream row as the file holds it (another connection, read only). */
  function rowOf(dir: string, channel: string): { top: number; last_publish_at: number } | undefined {
    const db = new DatabaseSync(stateFilePath(dir), { readOnly: true });
    try {
      return db.prepare('SELECT top, last_publish_at FROM streams WHERE channel = ?').get(channel) as { top: number; last_publish_at: number } | undefined;
    } finally {
      db.close();
    }
  }

  it('after a crash (the broker never closed), a stream continues from its newest publication: rows written behind are rebuilt', async () => {
    const dir = stateDir();
    const clock = new Clock();
    let e = open(dir, clock);
    const first = await e.broker.publish('ch', '1', { stream: stream(100) });
    for (let i = 2; i <= 5; i++) await e.broker.publish('ch', String(i), { stream: stream(100) });
    assert.equal(rowOf(dir, 'ch')?.top, 1, 'the row of an existing stream is written behind, not with every commit');
    // A crash: the file is closed, the broker never is.
    e.store.close();
    e = open(dir, clock);
    const page = await e.broker.history('ch', { limit: 10 }, stream(100));
    assert.deepEqual({ ...page.position }, { epoch: first.epoch, offset: 5 });
    assert.deepEqual(page.publications.map((p) => p.offset), [1, 2, 3, 4, 5]);
    const next = await e.broker.publish('ch', '6', { stream: stream(100) });
    assert.deepEqual({ ...next }, { epoch: first.epoch, offset: 6 });
    await e.broker.close();
    e.store.close();
    assert.equal(rowOf(dir, 'ch')?.top, 6, 'a clean close writes the rows');
  });

  it('the sweep writes a stream\'s row before its publications expire: the top survives them', async () => {
    const dir = stateDir();
    const clock = new Clock();
    const e = open(dir, clock);
    await e.broker.subscribe('held');
    for (let i = 1; i <= 3; i++) await e.broker.publish('held', String(i), { stream: stream(100, 1000) });
    assert.equal(rowOf(dir, 'held')?.top, 1);
    clock.now += 2000;
    e.broker.sweep();
    const rows = e.store.db.prepare(`SELECT count(*) AS n FROM history_log WHERE channel = 'held'`).get() as { n: number };
    assert.equal(rows.n, 0, 'every publication expired');
    assert.deepEqual({ ...rowOf(dir, 'held') }, { top: 3, last_publish_at: clock.now - 2000 });
    e.store.close();
  });

  it('after a crash, a stream live by its newest publication is not swept as dead by its row\'s older publish time', async () => {
    const dir = stateDir();
    const clock = new Clock();
    let e = open(dir, clock);
    const hour = 3_600_000;
    const first = await e.broker.publish('slow', '"old"', { stream: stream(100, hour) });
    clock.now += 50 * 60_000;
    await e.broker.publish('slow', '"recent"', { stream: stream(100, hour) });
    e.store.close();
    clock.now += 20 * 60_000;
    e = open(dir, clock);
    const page = await e.broker.history('slow', { limit: 10 }, stream(100, hour));
    assert.deepEqual({ ...page.position }, { epoch: first.epoch, offset: 2 }, 'same epoch: the stream was kept');
    assert.deepEqual(page.publications.map((p) => p.data), ['"recent"']);
    await e.broker.close();
    e.store.close();
  });

  it('a stream created by a read keeps its epoch across a reopen', async () => {
    const dir = stateDir();
    const clock = new Clock();
    let e = open(dir, clock);
    const first = await e.broker.history('fresh', { limit: 0 }, stream(10));
    e = await reopen(dir, clock, e);
    const again = await e.broker.history('fresh', { limit: 0 }, stream(10));
    assert.deepEqual({ ...again.position }, { ...first.position });
    await e.broker.close();
    e.store.close();
  });

  it('applies the size limit and the TTL to what was stored before; a stream that expired while closed starts a new epoch', async () => {
    const dir = stateDir();
    const clock = new Clock();
    let e = open(dir, clock);
    let top = { epoch: '', offset: 0 };
    for (let i = 1; i <= 8; i++) top = await e.broker.publish('sized', String(i), { stream: stream(3, 10_000) });
    await e.broker.publish('short', '1', { stream: stream(10, 1000) });
    clock.now += 600;
    await e.broker.publish('short', '2', { stream: stream(10, 1000) });
    const expiring = await e.broker.publish('gone', '1', { stream: stream(10, 1000) });
    e = await reopen(dir, clock, e);
    const sized = await e.broker.history('sized', { limit: 100 }, stream(3, 10_000));
    assert.deepEqual(sized.publications.map((p) => p.offset), [6, 7, 8]);
    assert.deepEqual({ ...sized.position }, { ...top });
    clock.now += 500; // short/1 is 1100 ms old, short/2 500 ms
    const short = await e.broker.history('short', { limit: 10 }, stream(10, 1000));
    assert.deepEqual(short.publications.map((p) => p.data), ['2']);
    e = await reopen(dir, clock, e);
    const rows = e.store.db.prepare(`SELECT count(*) AS n FROM history_log WHERE channel = 'short'`).get() as { n: number };
    assert.equal(rows.n, 1, 'the sweep at open deleted the expired publication from the file');
    clock.now += 5000;
    e = await reopen(dir, clock, e);
    const gone = await e.broker.history('gone', { limit: 10 }, stream(10, 1000));
    assert.notEqual(gone.position.epoch, expiring.epoch, 'expired while closed: new epoch');
    assert.equal(gone.position.offset, 0);
    await e.broker.close();
    e.store.close();
  });

  it('keeps revoked tokens and users', () => {
    const dir = stateDir();
    const clock = new Clock();
    let store = openSqliteStore({ stateDir: dir });
    let list = new SqliteRevocationList(store.db, { retentionMs: 60_000, now: clock.read });
    list.revokeToken('jti-1', clock.now + 10_000);
    list.revokeUser('mallory', clock.now);
    store.close();
    store = openSqliteStore({ stateDir: dir });
    list = new SqliteRevocationList(store.db, { retentionMs: 60_000, now: clock.read });
    assert.equal(list.isRevoked({ user: 'alice', tokenId: 'jti-1' } as never), true);
    assert.equal(list.isRevoked({ user: 'alice', tokenId: 'jti-2' } as never), false);
    assert.equal(list.isRevoked({ user: 'mallory', issuedAt: clock.now - 1 } as never), true);
    assert.equal(list.isRevoked({ user: 'mallory', issuedAt: clock.now + 1 } as never), false, 'a token issued after the revocation');
    clock.now += 20_000;
    store.close();
    store = openSqliteStore({ stateDir: dir });
    list = new SqliteRevocationList(store.db, { retentionMs: 60_000, now: clock.read });
    assert.equal(list.isRevoked({ user: 'alice', tokenId: 'jti-1' } as never), false, 'expired with the token');
    assert.equal((store.db.prepare('SELECT count(*) AS n FROM revoked_tokens').get() as { n: number }).n, 0, 'and deleted from the file');
    store.close();
  });
});

describe('sqlite broker: group commit', () => {
  it('publishes of one turn share one transaction and are acknowledged and delivered after it', async () => {
    const dir = stateDir();
    const e = open(dir, new Clock());
    const delivered: StoredPublication[] = [];
    e.broker.setEventHandler({ onPublication: (_c, p) => delivered.push(p), onJoin() {}, onLeave() {}, onStreamReset() {} });
    await e.broker.subscribe('g');
    const changes = () => (e.store.db.prepare('SELECT total_changes() AS n').get() as { n: number }).n;
    const before = changes();
    const promises = Array.from({ length: 50 }, (_, i) => e.broker.publish(i % 2 === 0 ? 'g' : `other${i}`, String(i), { stream: stream(100) }));
    assert.equal(delivered.length, 0, 'nothing delivered before the commit');
    // A second connection sees none of them before the commit.
    const reader = new DatabaseSync(stateFilePath(dir));
    assert.equal((reader.prepare('SELECT count(*) AS n FROM history_log').get() as { n: number }).n, 0);
    const positions = await Promise.all(promises);
    assert.equal((reader.prepare('SELECT count(*) AS n FROM history_log').get() as { n: number }).n, 50, 'all committed when acknowledged');
    reader.close();
    assert.equal(delivered.length, 25);
    assert.deepEqual(positions.filter((_, i) => i % 2 === 0).map((p) => p.offset), Array.from({ length: 25 }, (_, i) => i + 1));
    assert.ok(changes() - before >= 50);
    await e.broker.close();
    e.store.close();
  });
});

describe('sqlite broker: disk errors', () => {
  it('a full disk fails the publish with unavailable, degrades health, and the broker recovers', async () => {
    const dir = stateDir();
    const changes: Array<[boolean, string]> = [];
    const e = open(dir, new Clock(), (healthy, reason) => changes.push([healthy, reason]));
    const delivered: StoredPublication[] = [];
    e.broker.setEventHandler({ onPublication: (_c, p) => delivered.push(p), onJoin() {}, onLeave() {}, onStreamReset() {} });
    await e.broker.subscribe('full');
    const ok = await e.broker.publish('full', '"first"', { stream: stream(1000) });
    // Its row is now behind the stream (written behind): the failure below drops the cached stream, which must be read back whole.
    await e.broker.publish('full', '"second"', { stream: stream(1000) });
    const pages = (e.store.db.prepare('PRAGMA page_count').get() as { page_count: number }).page_count;
    e.store.db.exec(`PRAGMA max_page_count = ${pages + 1}`);
    const big = JSON.stringify('x'.repeat(64 * 1024));
    await assert.rejects(e.broker.publish('full', big, { stream: stream(1000) }), (error: unknown) => {
      assert.ok(error instanceof BrokerUnavailableError);
      assert.match(error.message, /SQLITE_FULL/);
      return true;
    });
    assert.deepEqual(e.broker.health(), { status: 'degraded', reason: 'disk or database is full (SQLITE_FULL)' });
    assert.equal(delivered.length, 2, 'the failed publication was not delivered');
    e.store.db.exec('PRAGMA max_page_count = 1073741823');
    const next = await e.broker.publish('full', '"after"', { stream: stream(1000) });
    assert.deepEqual({ ...next }, { epoch: ok.epoch, offset: 3 }, 'the failed offset is not skipped, no committed offset is reused');
    assert.deepEqual(e.broker.health(), { status: 'ok' });
    assert.deepEqual(changes.map(([healthy]) => healthy), [false, true]);
    const page = await e.broker.history('full', { limit: 10 }, stream(1000));
    assert.deepEqual(page.publications.map((p) => p.data), ['"first"', '"second"', '"after"']);
    await e.broker.close();
    e.store.close();
  });

  it('a file locked by another connection fails the publish with unavailable after the busy timeout', async () => {
    const dir = stateDir();
    const e = open(dir, new Clock());
    await e.broker.publish('locked', '1', { stream: stream(10) });
    const other = new DatabaseSync(stateFilePath(dir));
    other.exec('BEGIN IMMEDIATE');
    await assert.rejects(e.broker.publish('locked', '2', { stream: stream(10) }), /SQLITE_BUSY/);
    assert.equal(e.broker.health().status, 'degraded');
    other.exec('ROLLBACK');
    other.close();
    assert.deepEqual({ ...(await e.broker.publish('locked', '3', { stream: stream(10) })) }.offset, 2);
    assert.equal(e.broker.health().status, 'ok');
    await e.broker.close();
    e.store.close();
  });
});

describe('sqlite broker: a state file of schema 14 (publications keyed by channel, an index on time)', () => {
  /**
   * The file as Herald up to schema 14 wrote it: streams rows written behind
   * (one of them behind its newest publication, as a crash left it), and the
   * publications of several channels in the `publications` table, with the
   * statements that version ran.
   */
  function oldFile(dir: string, clock: Clock): void {
    const store = openSqliteStore({ stateDir: dir, migrations: MIGRATIONS.slice(0, 14) });
    const db = store.db;
    assert.ok(db.prepare(`SELECT 1 FROM sqlite_schema WHERE name = 'publications_time'`).get() !== undefined, 'the old layout, with its time index');
    const putStream = db.prepare('INSERT INTO streams (channel, epoch, top, last_publish_at, ttl_ms) VALUES (?, ?, ?, ?, ?)');
    const insert = db.prepare('INSERT INTO publications (channel, offset, time, data, info) VALUES (?, ?, ?, ?, ?)');
    putStream.run('a', 'epoch-a', 6, clock.now, 60_000);
    putStream.run('b', 'epoch-b', 1, clock.now - 10_000, 60_000);
    putStream.run('short', 'epoch-s', 2, clock.now - 5_000, 1_000);
    // Interleaved as commits of several channels wrote them; 'a' trimmed to its newest 4 (size 4), 'b' behind its row.
    for (let i = 1; i <= 6; i++) {
      if (i > 2) insert.run('a', i, clock.now - 1000 * (6 - i), JSON.stringify({ a: i }), i === 6 ? JSON.stringify({ client: 'c1', user: 'u1' }) : null);
      if (i <= 3) insert.run('b', i, clock.now - 10_000 + i, `"b${i}"`, null);
    }
    insert.run('short', 1, clock.now - 6_000, '"s1"', null);
    insert.run('short', 2, clock.now - 5_000, '"s2"', null);
    store.close();
  }

  it('opens and migrates: epochs, offsets, history, trimming and expiry as before; the next publish continues each stream', async () => {
    const dir = stateDir();
    const clock = new Clock();
    oldFile(dir, clock);
    const e = open(dir, clock);
    const has = (name: string) => e.store.db.prepare('SELECT 1 FROM sqlite_schema WHERE name = ?').get(name) !== undefined;
    assert.equal(has('publications'), false, 'the old table is gone');
    assert.equal(has('publications_time'), false, 'with its index');
    const logged = (channel: string) => (e.store.db.prepare('SELECT count(*) AS n FROM history_log WHERE channel = ?').get(channel) as { n: number }).n;
    assert.deepEqual([logged('a'), logged('b')], [4, 3], 'the publications moved to the log');
    assert.equal(logged('short'), 0, "'short' (TTL 1 s) expired while the file was closed: the sweep at open deleted it");
    const a = await e.broker.history('a', { limit: 10 }, stream(4));
    assert.deepEqual({ ...a.position }, { epoch: 'epoch-a', offset: 6 });
    assert.deepEqual(a.publications.map((p) => [p.offset, p.data, p.epoch]), [3, 4, 5, 6].map((i) => [i, JSON.stringify({ a: i }), 'epoch-a']));
    assert.deepEqual(a.publications.at(-1)?.info, { client: 'c1', user: 'u1' });
    const newest = await e.broker.history('a', { limit: 2, reverse: true }, stream(4));
    assert.deepEqual(newest.publications.map((p) => p.offset), [6, 5]);
    const since = await e.broker.history('a', { limit: 10, since: { epoch: 'epoch-a', offset: 4 } }, stream(4));
    assert.deepEqual(since.publications.map((p) => p.offset), [5, 6]);
    // 'b': its row said 1, its newest publication 3 (a crash): the stream continues from 3.
    const b = await e.broker.history('b', { limit: 10 }, stream(100));
    assert.deepEqual({ ...b.position }, { epoch: 'epoch-b', offset: 3 });
    assert.deepEqual(b.publications.map((p) => p.data), ['"b1"', '"b2"', '"b3"']);
    assert.deepEqual({ ...(await e.broker.publish('b', '"b4"', { stream: stream(100) })) }, { epoch: 'epoch-b', offset: 4 });
    // Size 4 on 'a': the next publication trims offset 3 off the file too.
    assert.deepEqual({ ...(await e.broker.publish('a', '{"a":7}', { stream: stream(4) })) }, { epoch: 'epoch-a', offset: 7 });
    assert.deepEqual((await e.broker.history('a', { limit: 10 }, stream(4))).publications.map((p) => p.offset), [4, 5, 6, 7]);
    assert.deepEqual(
      (e.store.db.prepare(`SELECT offset FROM history_log WHERE channel = 'a' ORDER BY seq`).all() as { offset: number }[]).map((r) => r.offset),
      [4, 5, 6, 7],
    );
    // Its stream is dead: a new epoch.
    const short = await e.broker.history('short', { limit: 10 }, stream(100, 1_000));
    assert.deepEqual(short.publications, []);
    assert.notEqual(short.position.epoch, 'epoch-s');
    // And across a reopen of the migrated file.
    const again = await reopen(dir, clock, e);
    assert.deepEqual((await again.broker.history('a', { limit: 10 }, stream(4))).publications.map((p) => p.offset), [4, 5, 6, 7]);
    assert.deepEqual({ ...(await again.broker.history('b', { limit: 0 }, stream(100))).position }, { epoch: 'epoch-b', offset: 4 });
    await again.broker.close();
    again.store.close();
  });
});

describe('sqlite broker: the log', () => {
  it('a commit with more publications to a channel than its size keeps only the window in the file; partly expired channels keep their live rows', async () => {
    const dir = stateDir();
    const clock = new Clock();
    let e = open(dir, clock);
    const offsetsIn = (channel: string) => (e.store.db.prepare('SELECT offset FROM history_log WHERE channel = ? ORDER BY seq').all(channel) as { offset: number }[]).map((r) => r.offset);
    await Promise.all([1, 2, 3, 4, 5].map((i) => e.broker.publish('x', String(i), { stream: stream(2) })));
    assert.deepEqual(offsetsIn('x'), [4, 5]);
    await Promise.all([6, 7, 8].map((i) => e.broker.publish('x', String(i), { stream: stream(2) })));
    assert.deepEqual(offsetsIn('x'), [7, 8]);
    await e.broker.publish('y', '1', { stream: stream(10, 1000) });
    clock.now += 600;
    await e.broker.publish('y', '2', { stream: stream(10, 1000) });
    clock.now += 600;
    e.broker.sweep();
    assert.deepEqual(offsetsIn('y'), [2], 'the expired one went, the live one stays');
    assert.deepEqual((await e.broker.history('y', { limit: 10 }, stream(10, 1000))).publications.map((p) => p.offset), [2]);
    e = await reopen(dir, clock, e);
    assert.deepEqual((await e.broker.history('x', { limit: 10 }, stream(2))).publications.map((p) => p.data), ['7', '8']);
    assert.deepEqual({ ...(await e.broker.publish('y', '3', { stream: stream(10, 1000) })) }.offset, 3);
    await e.broker.close();
    e.store.close();
  });
});

describe('sqlite broker: a log whose offsets do not follow its order (a hand-made file)', () => {
  it('reads, trims and continues each stream by offset', async () => {
    const dir = stateDir();
    const clock = new Clock();
    const store = openSqliteStore({ stateDir: dir });
    store.db.prepare('INSERT INTO streams (channel, epoch, top, last_publish_at, ttl_ms) VALUES (?, ?, ?, ?, ?)').run('h', 'epoch-h', 3, clock.now, 60_000);
    const insert = store.db.prepare('INSERT INTO history_log (channel, offset, time, data, info) VALUES (?, ?, ?, ?, NULL)');
    for (const offset of [3, 1, 2]) insert.run('h', offset, clock.now, `"h${offset}"`);
    store.close();
    const e = open(dir, clock);
    assert.deepEqual((await e.broker.history('h', { limit: 10 }, stream(10))).publications.map((p) => p.data), ['"h1"', '"h2"', '"h3"']);
    assert.deepEqual((await e.broker.history('h', { limit: 2, reverse: true }, stream(10))).publications.map((p) => p.offset), [3, 2]);
    assert.deepEqual({ ...(await e.broker.publish('h', '"h4"', { stream: stream(2) })) }, { epoch: 'epoch-h', offset: 4 });
    assert.deepEqual((e.store.db.prepare(`SELECT offset FROM history_log WHERE channel = 'h' ORDER BY offset`).all() as { offset: number }[]).map((r) => r.offset), [3, 4]);
    await e.broker.close();
    e.store.close();
  });
});

describe('sqlite broker: the sweep', () => {
  it('deletes more than one batch of expired history, without losing what is still live', async () => {
    const dir = stateDir();
    const clock = new Clock();
    const e = open(dir, clock);
    const publishes: Promise<unknown>[] = [];
    for (let i = 0; i < 5000; i++) publishes.push(e.broker.publish(`old${i % 500}`, String(i), { stream: stream(100, 1000) }));
    await Promise.all(publishes);
    clock.now += 2000;
    await e.broker.publish('live', '"x"', { stream: stream(100, 60_000) });
    await e.broker.publish('old1', '"new"', { stream: stream(100, 1000) });
    e.broker.sweep();
    const count = (sql: string) => (e.store.db.prepare(sql).get() as { n: number }).n;
    assert.equal(count('SELECT count(*) AS n FROM history_log'), 2, 'the 5000 expired are gone');
    assert.equal(count('SELECT count(*) AS n FROM streams'), 2, 'the 499 dead streams too (old1 lives on)');
    const old1 = await e.broker.history('old1', { limit: 10 }, stream(100, 1000));
    assert.deepEqual(old1.publications.map((p) => p.data), ['"new"']);
    assert.equal(old1.position.offset, 11, 'a live stream keeps its offsets');
    await e.broker.close();
    e.store.close();
  });
});

describe('sqlite broker: repeated since reads (the page cache)', () => {
  const offsets = (list: readonly StoredPublication[]) => list.map((p) => p.offset);

  it('answers what the file holds after publishes, trimming, expiry and a reopen', async () => {
    const dir = stateDir();
    const clock = new Clock();
    let e = open(dir, clock);
    const opts = stream(3, 10_000);
    let top = { epoch: '', offset: 0 };
    for (let i = 1; i <= 2; i++) top = await e.broker.publish('ch', `{"i":${i}}`, { stream: opts });
    const since = { epoch: top.epoch, offset: 1 };
    for (let i = 0; i < 3; i++) assert.deepEqual(offsets((await e.broker.history('ch', { since, limit: 10 }, opts)).publications), [2]);
    // A new publication changes the committed top: the next read sees it.
    clock.now += 4_000;
    await e.broker.publish('ch', '{"i":3}', { stream: opts });
    assert.deepEqual(offsets((await e.broker.history('ch', { since, limit: 10 }, opts)).publications), [2, 3]);
    assert.deepEqual(offsets((await e.broker.history('ch', { since, limit: 1 }, opts)).publications), [2]);
    // Publication 2 expires (10 s TTL) with nothing else changed.
    clock.now += 6_001;
    assert.deepEqual(offsets((await e.broker.history('ch', { since, limit: 10 }, opts)).publications), [3]);
    // Size 3: two more publications trim 2 and 3 off the window.
    await e.broker.publish('ch', '{"i":4}', { stream: opts });
    await e.broker.publish('ch', '{"i":5}', { stream: opts });
    const page = await e.broker.history('ch', { since, limit: 10 }, opts);
    assert.deepEqual(offsets(page.publications), [3, 4, 5]);
    assert.equal(page.position.offset, 5);
    // A smaller size window is another page.
    assert.deepEqual(offsets((await e.broker.history('ch', { since: { epoch: top.epoch, offset: 4 }, limit: 10 }, stream(1, 10_000))).publications), [5]);
    e = await reopen(dir, clock, e);
    assert.deepEqual(offsets((await e.broker.history('ch', { since, limit: 10 }, opts)).publications), [3, 4, 5]);
    // The stream's history fully expires and the sweep deletes it: a new epoch, nothing to recover.
    clock.now += 60_000;
    e.broker.sweep();
    const after = await e.broker.history('ch', { since, limit: 10 }, opts);
    assert.deepEqual(after.publications, []);
    assert.notEqual(after.position.epoch, top.epoch);
    await e.broker.close();
    e.store.close();
  });
});
