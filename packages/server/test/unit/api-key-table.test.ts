/**
 * API keys in the sqlite engine's state file (packages/server/src/store/api-key-table.ts)
 * on real files: api-keys.json imported once (and renamed, never deleted),
 * an interrupted import finished, a later JSON store ignored; a change made
 * by another connection (what `herald keys` is beside the server) seen
 * through `PRAGMA data_version`; invalid rows refused; a tool's access never
 * claims the file.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { ConfigError } from '../../src/config/load.ts';
import { createKey, keyStorePath, revokeKey, writeKeyStore, type StoredApiKey } from '../../src/auth/key-store.ts';
import { KEY_IMPORT_RECORD, importKeyFile, peekKeys, readKeyTable, updateKeyTable, watchKeyTable } from '../../src/store/api-key-table.ts';
import { MIGRATIONS, openSqliteStore } from '../../src/store/sqlite-store.ts';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'herald-key-table-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function keys(...names: string[]): StoredApiKey[] {
  let list: StoredApiKey[] = [];
  for (const name of names) {
    const created = createKey(list, { name, scopes: ['publish'], now: Date.parse('2026-01-01T00:00:00Z') });
    assert.ok('keys' in created);
    list = created.keys;
  }
  return list;
}

describe('api keys in the state file', () => {
  it('imports api-keys.json once: keys in the table, the file renamed .migrated, its content kept', () => {
    const dir = tempDir();
    const json = keys('a', 'b');
    writeKeyStore(dir, json);
    const text = readFileSync(keyStorePath(dir), 'utf8');
    assert.deepEqual(peekKeys(dir), json, 'peek (check-config) sees the keys a start would import, changing nothing');
    assert.ok(existsSync(keyStorePath(dir)));
    const store = openSqliteStore({ stateDir: dir });
    const outcome = importKeyFile(store.db, dir, store.path);
    assert.equal(outcome.kind, 'imported');
    assert.deepEqual(readKeyTable(store.db, store.path), json);
    assert.equal(existsSync(keyStorePath(dir)), false);
    assert.equal(readFileSync(`${keyStorePath(dir)}.migrated`, 'utf8'), text, 'renamed, never deleted');
    assert.equal(importKeyFile(store.db, dir, store.path).kind, 'none', 'nothing more to do');
    store.close();
    assert.deepEqual(peekKeys(dir), json);
  });

  it('an import interrupted after its commit is finished by renaming only; a JSON store that appears later is ignored', () => {
    const dir = tempDir();
    const json = keys('a');
    writeKeyStore(dir, json);
    const store = openSqliteStore({ stateDir: dir });
    importKeyFile(store.db, dir, store.path);
    // The crash between commit and rename: the same file is back.
    writeFileSync(keyStorePath(dir), readFileSync(`${keyStorePath(dir)}.migrated`), { mode: 0o600 });
    // Meanwhile `herald keys` revoked the key in the state file: a second import would bring it back.
    updateKeyTable(store.db, store.path, (current) => {
      const revoked = revokeKey(current, 'a', 0, Date.now());
      assert.ok('keys' in revoked);
      return { keys: revoked.keys, result: undefined };
    });
    const renamed = importKeyFile(store.db, dir, store.path);
    assert.equal(renamed.kind, 'renamed');
    assert.ok(renamed.kind === 'renamed' && renamed.movedTo !== `${keyStorePath(dir)}.migrated` && existsSync(renamed.movedTo), 'an existing .migrated is never replaced');
    assert.ok(readKeyTable(store.db, store.path)[0]!.notAfter !== undefined, 'the revocation holds');

    writeKeyStore(dir, keys('other'));
    const ignored = importKeyFile(store.db, dir, store.path);
    assert.equal(ignored.kind, 'ignored');
    assert.ok(existsSync(keyStorePath(dir)), 'left where it is');
    assert.deepEqual(readKeyTable(store.db, store.path).map((k) => k.name), ['a']);
    store.close();
  });

  it('an invalid api-keys.json is refused and nothing is imported', () => {
    const dir = tempDir();
    writeKeyStore(dir, []);
    writeFileSync(keyStorePath(dir), '{"version":1,"keys":[{"name":1}]}', { mode: 0o600 });
    const store = openSqliteStore({ stateDir: dir });
    assert.throws(() => importKeyFile(store.db, dir, store.path), (error: unknown) => error instanceof ConfigError && error.message.includes('api-keys.json'));
    assert.equal(store.db.prepare('SELECT count(*) AS n FROM herald_meta WHERE key = ?').get(KEY_IMPORT_RECORD)!['n'], 0);
    store.close();
  });

  it('the server sees a change committed by another connection, looking at data_version at most once per interval', () => {
    const dir = tempDir();
    const server = openSqliteStore({ stateDir: dir });
    let now = 1_000_000;
    const problems: string[] = [];
    const source = watchKeyTable(server.db, server.path, { now: () => now, intervalMs: 1000, onReloadError: (p) => problems.push(p) });
    const first = source.current();
    assert.deepEqual(first, []);
    // Its own writes (publications) do not make it re-read.
    server.db.exec(`INSERT INTO revoked_tokens (jti, until) VALUES ('j', 1)`);
    now += 1000;
    assert.equal(source.current(), first, 'same array: nothing changed');

    // `herald keys` beside it: a tool connection, no claim.
    const tool = openSqliteStore({ stateDir: dir, claim: false });
    assert.equal((tool.db.prepare('SELECT pid FROM herald_owner').get() as { pid: number }).pid, process.pid, 'the owner row is the server\'s');
    updateKeyTable(tool.db, tool.path, () => ({ keys: keys('cli'), result: undefined }));
    tool.close();
    assert.ok(server.db.prepare('SELECT 1 FROM herald_owner').get() !== undefined, 'closing the tool left the server\'s claim');

    now += 500;
    assert.equal(source.current(), first, 'not before the interval');
    now += 500;
    const second = source.current();
    assert.deepEqual(second.map((k) => k.name), ['cli']);
    assert.equal(source.current(), second);

    // A broken row: the keys read before stay, the problem is reported.
    const other = new DatabaseSync(server.path);
    other.prepare(`UPDATE api_keys SET scopes = '["root"]'`).run();
    other.close();
    now += 1000;
    assert.equal(source.current(), second);
    assert.match(problems.join('\n'), /table api_keys.*row "cli"/);
    server.close();
    const reopened = openSqliteStore({ stateDir: dir });
    try {
      assert.throws(() => watchKeyTable(reopened.db, reopened.path), (error: unknown) => error instanceof ConfigError && /row "cli"/.test(error.message), 'at start an invalid row refuses');
    } finally {
      reopened.close();
    }
  });

  it('a tool does not migrate the file of a live, older Herald; with no live owner it migrates', () => {
    const dir = tempDir();
    const older = openSqliteStore({ stateDir: dir, migrations: MIGRATIONS.slice(0, 4) });
    assert.throws(() => openSqliteStore({ stateDir: dir, claim: false }), /older than this command/);
    older.close();
    const tool = openSqliteStore({ stateDir: dir, claim: false });
    assert.equal(tool.version, MIGRATIONS.length);
    assert.equal(tool.db.prepare('SELECT count(*) AS n FROM herald_owner').get()!['n'], 0, 'and claims nothing');
    tool.close();
  });
});
