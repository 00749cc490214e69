/**
 * The state file backup (packages/server/src/store/backup.ts) on real files:
 * the copy is a Herald state file without an owner, 0600 whatever the
 * umask, taken beside a connection that owns the file and keeps writing; the
 * live file is never a target; a refused or failed backup leaves no
 * temporary file behind.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { BackupError, backupStateFile } from '../../src/store/backup.ts';
import { SCHEMA_VERSION, openSqliteStore, stateFilePath } from '../../src/store/sqlite-store.ts';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'herald-backup-unit-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('state file backup', () => {
  it('copies what was committed, without the owner, mode 0600 under a permissive umask', () => {
    const dir = tempDir();
    const owner = openSqliteStore({ stateDir: join(dir, 'state') });
    owner.db.exec(`INSERT INTO revoked_tokens (jti, until) VALUES ('before', 1)`);
    // A transaction still open at the owner is not in the copy.
    owner.db.exec('BEGIN');
    owner.db.exec(`INSERT INTO revoked_tokens (jti, until) VALUES ('uncommitted', 1)`);
    const previous = process.umask(0);
    let result;
    try {
      result = backupStateFile({ stateDir: join(dir, 'state'), target: join(dir, 'copy.db') });
    } finally {
      process.umask(previous);
      owner.db.exec('COMMIT');
    }
    assert.equal(result.version, SCHEMA_VERSION);
    assert.equal(statSync(join(dir, 'copy.db')).mode & 0o777, 0o600);
    const copy = new DatabaseSync(join(dir, 'copy.db'), { readOnly: true });
    assert.deepEqual((copy.prepare('SELECT jti FROM revoked_tokens').all() as { jti: string }[]).map((r) => r.jti), ['before']);
    assert.equal(copy.prepare('SELECT count(*) AS n FROM herald_owner').get()!['n'], 0, 'the copy has no owner');
    copy.close();
    assert.ok(owner.db.prepare('SELECT 1 FROM herald_owner').get() !== undefined, 'the original keeps its owner');
    owner.close();
    // The copy opens as a state file of its own.
    const restoredDir = join(dir, 'restored');
    mkdirSync(restoredDir, { mode: 0o700 });
    backupStateFile({ stateDir: join(dir, 'state'), target: stateFilePath(restoredDir) });
    const restored = openSqliteStore({ stateDir: restoredDir });
    assert.deepEqual((restored.db.prepare('SELECT jti FROM revoked_tokens ORDER BY jti').all() as { jti: string }[]).map((r) => r.jti), ['before', 'uncommitted']);
    restored.close();
  });

  it('never writes over the live file, an existing file without force, or leaves a temporary file', () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    openSqliteStore({ stateDir: state }).close();
    for (const target of [stateFilePath(state), `${stateFilePath(state)}-wal`]) {
      assert.throws(() => backupStateFile({ stateDir: state, target, force: true }), (error: unknown) => error instanceof BackupError && /live state file/.test(error.message));
    }
    writeFileSync(join(dir, 'taken.db'), 'mine');
    assert.throws(() => backupStateFile({ stateDir: state, target: join(dir, 'taken.db') }), /exists; give --force/);
    assert.throws(() => backupStateFile({ stateDir: join(dir, 'nothing'), target: join(dir, 'x.db') }), /no state file to back up/);
    assert.throws(() => backupStateFile({ stateDir: state, target: join(dir, 'no-such-dir', 'x.db') }), /ENOENT/);
    assert.deepEqual(readdirSync(dir).sort(), ['state', 'taken.db'], 'nothing else written');
    // A read-only reader may leave the WAL index beside the file (SQLite's own, the file's mode); nothing else.
    for (const file of readdirSync(state)) {
      assert.match(file, /^herald\.db(-wal|-shm)?$/);
      assert.equal(statSync(join(state, file)).mode & 0o777, 0o600, file);
    }
  });
});
