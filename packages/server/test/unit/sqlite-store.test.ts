/**
 * The sqlite engine's state file (packages/server/src/store/sqlite-store.ts) on real files:
 * created with the state directory's permissions, WAL and the configured
 * synchronous mode, migrated in order; a foreign, corrupt or newer file is
 * refused with a ConfigError and left byte for byte as it was.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { ConfigError } from '../../src/config/load.ts';
import { APPLICATION_ID, MIGRATIONS, OWNER_STALE_MS, SCHEMA_VERSION, openSqliteStore, stateFilePath, writeTransaction } from '../../src/store/sqlite-store.ts';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'herald-sqlite-store-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Opens the state of `dir`, expecting a refusal whose message matches, and checks the file was not touched. */
function assertRefused(dir: string, pattern: RegExp, migrations?: readonly string[]): void {
  const path = stateFilePath(dir);
  const before = readFileSync(path);
  const mode = statSync(path).mode;
  assert.throws(
    () => openSqliteStore({ stateDir: dir, ...(migrations ? { migrations } : {}) }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, `a ConfigError, got ${String(error)}`);
      assert.ok(error.message.includes(path), 'names the file');
      assert.match(error.message, pattern);
      assert.match(error.message, /refuses to start on it and leaves it untouched/);
      return true;
    },
  );
  assert.deepEqual(readFileSync(path), before, 'the refused file is unchanged');
  assert.equal(statSync(path).mode, mode, 'and its mode too');
  assert.equal(existsSync(`${path}-wal`), false, 'no WAL file was created beside it');
}

describe('sqlite state file', () => {
  it('is created 0600 in a 0700 state directory, in WAL mode, with the schema at the newest version', () => {
    const dir = join(tempDir(), 'state');
    const store = openSqliteStore({ stateDir: dir });
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(store.path).mode & 0o777, 0o600);
    assert.equal(store.version, SCHEMA_VERSION);
    const db = store.db;
    assert.equal((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal');
    assert.equal((db.prepare('PRAGMA synchronous').get() as { synchronous: number }).synchronous, 1, 'NORMAL by default');
    assert.equal((db.prepare('PRAGMA application_id').get() as { application_id: number }).application_id, APPLICATION_ID);
    // Every version but the ones reserved for parts that have not landed yet ('').
    const expected = MIGRATIONS.map((sql, i) => (sql === '' ? 0 : i + 1)).filter((v) => v > 0);
    assert.deepEqual((db.prepare('SELECT version FROM herald_schema ORDER BY version').all() as { version: number }[]).map((r) => r.version), expected);
    db.exec(`INSERT INTO revoked_tokens (jti, until) VALUES ('x', 1)`);
    assert.equal(statSync(`${store.path}-wal`).mode & 0o777, 0o600, 'the WAL file has the database file\'s mode');
    store.close();
  });

  it('a reserved migration number is skipped, and applied once it is filled in, below versions the file already has', () => {
    const dir = tempDir();
    const reserved = ['CREATE TABLE a (x)', '', 'CREATE TABLE c (x)'];
    let store = openSqliteStore({ stateDir: dir, migrations: reserved });
    const versions = () => (store.db.prepare('SELECT version FROM herald_schema ORDER BY version').all() as { version: number }[]).map((r) => r.version);
    assert.deepEqual(versions(), [1, 3]);
    store.close();
    store = openSqliteStore({ stateDir: dir, migrations: ['CREATE TABLE a (x)', 'CREATE TABLE b (x)', 'CREATE TABLE c (x)'] });
    assert.deepEqual(versions(), [1, 2, 3]);
    assert.ok(store.db.prepare(`SELECT 1 FROM sqlite_schema WHERE name = 'b'`).get() !== undefined, 'the filled-in migration ran');
    store.close();
  });

  it('synchronous FULL when configured', () => {
    const store = openSqliteStore({ stateDir: tempDir(), synchronous: 'full' });
    assert.equal((store.db.prepare('PRAGMA synchronous').get() as { synchronous: number }).synchronous, 2);
    store.close();
  });

  it('reopens its own file and keeps what it holds; an existing file too open is narrowed to 0600', () => {
    const dir = tempDir();
    let store = openSqliteStore({ stateDir: dir });
    store.db.exec(`INSERT INTO revoked_tokens (jti, until) VALUES ('kept', 1)`);
    store.close();
    // A file made wider by someone else (a copy with the umask's mode).
    chmodSync(stateFilePath(dir), 0o644);
    store = openSqliteStore({ stateDir: dir });
    assert.equal(statSync(store.path).mode & 0o777, 0o600);
    assert.deepEqual({ ...(store.db.prepare('SELECT jti FROM revoked_tokens').get() as object) }, { jti: 'kept' });
    store.close();
  });

  it('migrates an older file in order, one version at a time', () => {
    const dir = tempDir();
    const v1 = [`CREATE TABLE a (x INTEGER)`];
    let store = openSqliteStore({ stateDir: dir, migrations: v1 });
    assert.equal(store.version, 1);
    store.db.exec('INSERT INTO a VALUES (1)');
    store.close();
    const v3 = [...v1, `ALTER TABLE a ADD COLUMN y TEXT`, `CREATE TABLE b AS SELECT x, y FROM a`];
    store = openSqliteStore({ stateDir: dir, migrations: v3 });
    assert.equal(store.version, 3);
    assert.deepEqual({ ...(store.db.prepare('SELECT x, y FROM b').get() as object) }, { x: 1, y: null });
    assert.deepEqual((store.db.prepare('SELECT version FROM herald_schema ORDER BY version').all() as { version: number }[]).map((r) => r.version), [1, 2, 3]);
    store.close();
  });

  it('a failing migration leaves the file at the version before it', () => {
    const dir = tempDir();
    openSqliteStore({ stateDir: dir, migrations: [`CREATE TABLE a (x INTEGER)`] }).close();
    assert.throws(() => openSqliteStore({ stateDir: dir, migrations: [`CREATE TABLE a (x INTEGER)`, `CREATE TABLE c (x); CREATE TABLE a (x)`] }));
    const db = new DatabaseSync(stateFilePath(dir));
    assert.equal((db.prepare('SELECT max(version) AS v FROM herald_schema').get() as { v: number }).v, 1);
    assert.equal(db.prepare(`SELECT 1 FROM sqlite_schema WHERE name = 'c'`).get(), undefined, 'nothing of the failed migration');
    db.close();
  });

  it('refuses a file that is not SQLite', () => {
    const dir = tempDir();
    writeFileSync(stateFilePath(dir), 'name,value\n'.repeat(100), { mode: 0o600 });
    assertRefused(dir, /not a SQLite database/);
    const short = tempDir();
    writeFileSync(stateFilePath(short), 'SQLite format 3\0', { mode: 0o600 });
    assertRefused(short, /not a SQLite database/);
  });

  it('refuses a SQLite database of another application', () => {
    const dir = tempDir();
    const db = new DatabaseSync(stateFilePath(dir));
    db.exec('CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, \'Ada\')');
    db.close();
    assertRefused(dir, /another application \(application_id 0, no herald_schema table\)/);
  });

  it('refuses a database with our application_id but no schema table', () => {
    const dir = tempDir();
    const db = new DatabaseSync(stateFilePath(dir));
    db.exec(`PRAGMA application_id = ${APPLICATION_ID}; CREATE TABLE t (x)`);
    db.close();
    assertRefused(dir, /no herald_schema table/);
  });

  it('refuses a schema written by a newer Herald', () => {
    const dir = tempDir();
    openSqliteStore({ stateDir: dir, migrations: [...MIGRATIONS, 'CREATE TABLE future (x)'] }).close();
    assertRefused(dir, new RegExp(`newer Herald \\(schema version ${SCHEMA_VERSION + 1}; this Herald knows up to ${SCHEMA_VERSION}\\)`));
  });

  it('refuses a corrupt file (valid header, damaged pages)', () => {
    const dir = tempDir();
    const store = openSqliteStore({ stateDir: dir });
    const insert = store.db.prepare('INSERT INTO history_log (channel, offset, time, data) VALUES (?, ?, ?, ?)');
    for (let i = 0; i < 500; i++) insert.run('c', i, i, 'x'.repeat(200));
    store.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    store.close();
    const path = stateFilePath(dir);
    const bytes = readFileSync(path);
    // Overwrite pages 2 and 3 (the first tables' roots) with garbage; page 1 keeps the header.
    const page = bytes.readUInt16BE(16) === 1 ? 65536 : bytes.readUInt16BE(16);
    bytes.fill(0xa5, page, page * 3);
    writeFileSync(path, bytes);
    assertRefused(dir, /corrupt|unreadable|malformed/);
  });
});

describe('sqlite state file: growth', () => {
  it('gives the pages of deleted history back to the file system on the sweep', async () => {
    const { SqliteBroker } = await import('../../src/broker/sqlite-broker.ts');
    let now = 1_700_000_000_000;
    const store = openSqliteStore({ stateDir: tempDir() });
    const broker = new SqliteBroker(store, { now: () => now, sweepIntervalMs: 3_600_000 });
    const pages = () => (store.db.prepare('PRAGMA page_count').get() as { page_count: number }).page_count;
    const empty = pages();
    const publishes = [];
    // Fewer rows than a sweep transaction deletes (one vacuum step), more pages than a step gives back.
    for (let i = 0; i < 1000; i++) publishes.push(broker.publish(`c${i % 50}`, JSON.stringify('x'.repeat(6000)), { stream: { size: 100, ttlMs: 1000 } }));
    await Promise.all(publishes);
    const full = pages();
    assert.ok(full > empty + 1100, `${full} pages after 6 MB of history`);
    now += 5000;
    broker.sweep();
    assert.equal((store.db.prepare('SELECT count(*) AS n FROM history_log').get() as { n: number }).n, 0);
    const afterOne = pages();
    assert.ok(afterOne <= full - 1024 && afterOne > empty + 20, `a bounded part given back by one sweep: ${afterOne} pages (was ${full})`);
    broker.sweep();
    broker.sweep();
    assert.ok(pages() < empty + 20, `${pages()} pages after three sweeps (was ${full}, empty ${empty})`);
    await broker.close();
    store.close();
  });
});

describe('sqlite state file: one owner', () => {
  it('refuses a second Herald while the owner lives and its heartbeat is fresh; takes over from a dead or silent one; a clean close releases it', async () => {
    const { spawn } = await import('node:child_process');
    const dir = tempDir();
    openSqliteStore({ stateDir: dir }).close();
    const setOwner = (pid: number, heartbeat: number) => {
      const db = new DatabaseSync(stateFilePath(dir));
      db.prepare('INSERT INTO herald_owner (id, pid, heartbeat) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, heartbeat = excluded.heartbeat').run(pid, heartbeat);
      db.close();
    };
    const owner = () => {
      const db = new DatabaseSync(stateFilePath(dir));
      const row = db.prepare('SELECT pid FROM herald_owner').get() as { pid: number } | undefined;
      db.close();
      return row?.pid;
    };
    // Another live process (a child of this test) with a fresh heartbeat.
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      setOwner(other.pid!, Date.now());
      assert.throws(() => openSqliteStore({ stateDir: dir }), (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, new RegExp(`in use by another Herald \\(pid ${other.pid}, seen 0 s ago\\).*its own stateDir.*--engine memory`));
        return true;
      });
      assert.equal(owner(), other.pid, 'the claim is not taken');
      // The same live process, silent for longer than OWNER_STALE_MS: its pid may be reused by now.
      setOwner(other.pid!, Date.now() - OWNER_STALE_MS - 1000);
      let store = openSqliteStore({ stateDir: dir });
      assert.equal(owner(), process.pid);
      store.close();
      assert.equal(owner(), undefined, 'a clean close releases the claim');
      // A dead owner with a fresh heartbeat (SIGKILL a moment ago).
      const dead = spawn('true', [], { stdio: 'ignore' });
      await new Promise((resolve) => dead.once('exit', resolve));
      setOwner(dead.pid!, Date.now());
      store = openSqliteStore({ stateDir: dir });
      assert.equal(owner(), process.pid);
      // The sweep renews the heartbeat.
      const { SqliteBroker } = await import('../../src/broker/sqlite-broker.ts');
      store.db.prepare('UPDATE herald_owner SET heartbeat = 0').run();
      const broker = new SqliteBroker(store, { sweepIntervalMs: 3_600_000 });
      assert.ok(((store.db.prepare('SELECT heartbeat FROM herald_owner').get() as { heartbeat: number }).heartbeat) > Date.now() - 5000);
      await broker.close();
      store.close();
    } finally {
      other.kill('SIGKILL');
    }
  });
});

describe('writeTransaction', () => {
  function table(): { db: DatabaseSync; rows: () => number[] } {
    const db = new DatabaseSync(join(tempDir(), 'tx.db'));
    db.exec('CREATE TABLE t (n INTEGER)');
    return { db, rows: () => (db.prepare('SELECT n FROM t ORDER BY n').all() as { n: number }[]).map((r) => Number(r.n)) };
  }

  it('commits what run wrote and answers its result', () => {
    const { db, rows } = table();
    const answer = writeTransaction(db, () => {
      assert.equal(db.isTransaction, true, 'run runs inside the transaction');
      db.exec('INSERT INTO t VALUES (1), (2)');
      return 'done';
    });
    assert.equal(answer, 'done');
    assert.equal(db.isTransaction, false);
    assert.deepEqual(rows(), [1, 2]);
    db.close();
  });

  it('rolls back everything run wrote when it throws, and rethrows that same error', () => {
    const { db, rows } = table();
    const failure = new Error('half way');
    assert.throws(
      () =>
        writeTransaction(db, () => {
          db.exec('INSERT INTO t VALUES (1)');
          throw failure;
        }),
      (error: unknown) => error === failure,
    );
    assert.equal(db.isTransaction, false);
    assert.deepEqual(rows(), []);
    db.close();
  });

  it('rolls back when COMMIT fails (a deferred constraint), with the COMMIT error', () => {
    const { db, rows } = table();
    db.exec('CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED); PRAGMA foreign_keys = ON');
    assert.throws(
      () =>
        writeTransaction(db, () => {
          db.exec('INSERT INTO t VALUES (1)');
          db.exec('INSERT INTO child VALUES (7)');
        }),
      /FOREIGN KEY constraint failed/,
    );
    assert.equal(db.isTransaction, false, 'not left in an open transaction');
    assert.deepEqual(rows(), []);
    db.close();
  });

  it('refuses to nest, before running, and leaves the outer transaction open with its writes', () => {
    const { db, rows } = table();
    db.exec('BEGIN IMMEDIATE');
    db.exec('INSERT INTO t VALUES (1)');
    let ran = false;
    assert.throws(
      () =>
        writeTransaction(db, () => {
          ran = true;
        }),
      /already inside a transaction/,
    );
    assert.equal(ran, false);
    assert.equal(db.isTransaction, true, 'the outer transaction is still open');
    db.exec('COMMIT');
    assert.deepEqual(rows(), [1]);
    db.close();
  });

  it('refuses an async body and rolls back what it wrote before its first await', () => {
    const { db, rows } = table();
    assert.throws(
      () =>
        writeTransaction(db, async () => {
          db.exec('INSERT INTO t VALUES (1)');
        }),
      (error: unknown) => error instanceof TypeError && /must be synchronous/.test(error.message),
    );
    assert.equal(db.isTransaction, false);
    assert.deepEqual(rows(), []);
    db.close();
  });

  it('takes the write lock at BEGIN: with another connection writing, it fails before running', () => {
    const { db, rows } = table();
    const other = new DatabaseSync(db.location()!);
    other.exec('BEGIN IMMEDIATE');
    db.exec('PRAGMA busy_timeout = 0');
    let ran = false;
    assert.throws(
      () =>
        writeTransaction(db, () => {
          ran = true;
        }),
      /database is locked/,
    );
    assert.equal(ran, false, 'run is not called without the lock');
    assert.equal(db.isTransaction, false);
    other.exec('ROLLBACK');
    writeTransaction(db, () => db.exec('INSERT INTO t VALUES (3)'));
    assert.deepEqual(rows(), [3]);
    other.close();
    db.close();
  });
});
