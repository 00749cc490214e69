/**
 * `herald keys` end to end: the CLI runs as a child process against a
 * temporary state directory while a real Herald uses the same directory
 * (the sqlite engine: the keys live in its state file, herald.db, which the
 * CLI writes beside the running server). Keys created, revoked and rotated
 * take effect on the running server without a restart; the store holds
 * hashes only.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hashApiKey } from '../../src/auth/api-keys.ts';
import { createKey, writeKeyStore } from '../../src/auth/key-store.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'src/cli/main.ts');

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function herald(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...SOURCE_NODE_ARGS, main, ...args],
      { cwd: root, timeout: 30000, env: { PATH: process.env['PATH'] ?? '', ...env } },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function ok(args: readonly string[], env?: Record<string, string>): Promise<Run> {
  const run = await herald(args, env);
  assert.equal(run.code, 0, `herald ${args.join(' ')} failed: ${run.stderr}`);
  return run;
}

describe('herald keys', { timeout: 90000 }, () => {
  let stateDir: string;
  let h: TestHerald;
  const allKeys: string[] = [];
  const keysArgs = (...args: string[]) => ['keys', ...args, '--state-dir', stateDir];
  /** The key table of the state file, read as the server reads it (another connection beside it). */
  const storedKeys = (): { name: string; sha256: string; scopes: string; created: string; not_after: string | null }[] => {
    const db = new DatabaseSync(join(stateDir, 'herald.db'), { readOnly: true });
    try {
      return db.prepare('SELECT name, sha256, scopes, created, not_after FROM api_keys ORDER BY name').all() as never;
    } finally {
      db.close();
    }
  };
  const storedKey = (name: string) => {
    const row = storedKeys().find((k) => k.name === name);
    return row === undefined ? undefined : { name: row.name, ...(row.not_after === null ? {} : { notAfter: row.not_after }) };
  };
  const publish = (key: string) => h.api('publish', { channel: 'chat:keys', data: { n: 1 } }, key);

  async function create(name: string, scopes: string, ...extra: string[]): Promise<string> {
    const run = await ok(keysArgs('create', '--name', name, '--scopes', scopes, ...extra));
    const key = run.stdout.trim();
    assert.match(key, /^hk_[A-Za-z0-9_-]{43}$/, 'stdout is the key alone');
    assert.ok(run.stderr.includes('shown once'), run.stderr);
    allKeys.push(key);
    return key;
  }

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'herald-keys-'));
    // a key made before the server starts is loaded at start
    await create('early', 'publish');
    h = await startHerald({ stateDir });
  });
  after(async () => {
    await h?.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  test('a key created before start works, with its scopes; config keys keep working', async () => {
    const early = allKeys[0]!;
    assert.equal((await publish(early)).status, 200);
    assert.equal((await h.api('history', { channel: 'chat:keys' }, early)).status, 403, 'publish scope does not allow read');
    assert.equal((await h.api('info', {})).status, 200, 'the config key of the test server still works');
  });

  test('a key created while the server runs is accepted without a restart', async () => {
    const key = await create('reader', 'read');
    const status = await eventually(async () => {
      const answer = await h.api('history', { channel: 'chat:keys' }, key);
      return answer.status === 401 ? undefined : answer.status;
    }, 'the new key to be accepted');
    assert.equal(status, 200);
    assert.equal((await publish(key)).status, 403, 'read scope does not allow publish');
    assert.equal((await h.api('disconnect', { user: 'x' }, key)).status, 403, 'nor admin');
  });

  test('revoke without grace: 401 on the running server', async () => {
    const key = await create('doomed', 'publish');
    await eventually(async () => ((await publish(key)).status === 200 ? true : undefined), 'the key to work');
    const run = await ok(keysArgs('revoke', '--name', 'doomed'));
    assert.match(run.stderr, /refused from now on/);
    await eventually(async () => ((await publish(key)).status === 401 ? true : undefined), 'the revoked key to get 401');
    const body = (await publish(key)).body;
    assert.equal(body.error.code, 'unauthorized');
  });

  test('rotation: new key plus old key in grace both work; the old one is refused only after notAfter', async () => {
    const old = await create('backend-1', 'publish');
    const fresh = await create('backend-2', 'publish');
    await eventually(async () => ((await publish(fresh)).status === 200 ? true : undefined), 'the new key to work');

    // a long grace: the old key keeps working
    await ok(keysArgs('revoke', '--name', 'backend-1', '--grace', '1h'));
    const entry = storedKey('backend-1');
    assert.ok(Date.parse(entry!.notAfter!) > Date.now() + 50 * 60000, `notAfter is about an hour ahead: ${entry!.notAfter}`);
    // a key created after the revocation works once the server has re-read the store, revocation included
    const marker = await create('marker', 'read');
    await eventually(async () => ((await h.api('info', {}, marker)).status === 200 ? true : undefined), 'the store to be re-read');
    assert.equal((await publish(old)).status, 200, 'in grace');
    assert.equal((await publish(fresh)).status, 200);

    // shorten the grace to 1.5 s: never refused before notAfter, refused after it
    await ok(keysArgs('revoke', '--name', 'backend-1', '--grace', '1500ms'));
    const until = Date.parse(storedKey('backend-1')!.notAfter!);
    const deadline = Date.now() + 15000;
    let refusedAt: number | undefined;
    while (refusedAt === undefined && Date.now() < deadline) {
      const status = (await publish(old)).status;
      if (status === 401) refusedAt = Date.now();
      else {
        assert.equal(status, 200);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    assert.ok(refusedAt !== undefined, 'the old key is refused after its grace');
    assert.ok(refusedAt >= until, 'and not before its notAfter');
    assert.equal((await publish(fresh)).status, 200, 'the new key is unaffected');
  });

  test('list shows names, scopes and hash prefixes, never a key; the state file holds hashes only, mode 0600', async () => {
    const run = await ok(keysArgs('list'));
    for (const name of ['early', 'reader', 'doomed', 'backend-1', 'backend-2']) assert.ok(run.stdout.includes(name), name);
    assert.match(run.stdout, /NAME\s+SCOPES\s+CREATED\s+NOT AFTER\s+STATUS\s+SHA256/);
    const path = join(stateDir, 'herald.db');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(stateDir).mode & 0o777, 0o700);
    assert.equal(existsSync(join(stateDir, 'api-keys.json')), false, 'no JSON store beside the state file');
    // The rows, and the raw bytes of the file and its WAL (what a stolen copy holds).
    const stored = JSON.stringify(storedKeys()) + readFileSync(path, 'latin1') + (existsSync(`${path}-wal`) ? readFileSync(`${path}-wal`, 'latin1') : '');
    for (const key of allKeys) {
      const secret = key.slice(3);
      assert.ok(!run.stdout.includes(secret) && !stored.includes(secret), 'no key in list output or store');
      assert.ok(stored.includes(hashApiKey(key)), 'the hash is stored');
      assert.ok(run.stdout.includes(hashApiKey(key).slice(0, 12)), 'list shows the hash prefix');
    }
  });

  test('concurrent creates all land (the store is locked, not overwritten)', async () => {
    const names = ['c1', 'c2', 'c3'];
    const runs = await Promise.all(names.map((name) => herald(keysArgs('create', '--name', name, '--scopes', 'read'))));
    runs.forEach((run, i) => assert.equal(run.code, 0, `${names[i]}: ${run.stderr}`));
    for (const run of runs) allKeys.push(run.stdout.trim());
    for (const name of names) assert.ok(storedKey(name) !== undefined, `${name} is in the store`);
    const key = runs[2]!.stdout.trim();
    await eventually(async () => ((await h.api('info', {}, key)).status === 200 ? true : undefined), 'a concurrently created key to work');
  });

  test('mistakes exit 2 with a message and change nothing', async () => {
    const before = JSON.stringify(storedKeys());
    // (unit tests cover the rules; this checks the CLI's exit code and streams)
    const cases: [string[], RegExp][] = [
      [keysArgs('create', '--name', 'early', '--scopes', 'read'), /exists/],
      [keysArgs('create', '--name', 'x', '--scopes', 'root'), /unknown scope/],
      [keysArgs('create', '--name', 'x', '--scopes', 'read', '--expires', '2001-01-01T00:00:00Z'), /in the past/],
      [keysArgs('revoke', '--name', 'nobody', '--grace', '1h'), /no key named/],
      [keysArgs('rotate', '--name', 'early'), /expected create, list or revoke/],
      [keysArgs('list', '--key', 'x'), /unknown option --key/],
    ];
    for (let i = 0; i < cases.length; i += 3) {
      const batch = cases.slice(i, i + 3);
      const runs = await Promise.all(batch.map(([args]) => herald(args)));
      batch.forEach(([args, message], j) => {
        const run = runs[j]!;
        assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
        assert.match(run.stderr, message, args.join(' '));
        assert.equal(run.stdout, '', 'nothing on stdout');
      });
    }
    assert.equal(JSON.stringify(storedKeys()), before);
  });

  test('with --config: the stateDir comes from the config, and config key names are reserved', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-keys-config-'));
    try {
      const configFile = join(dir, 'herald.json');
      writeFileSync(
        configFile,
        JSON.stringify({ stateDir: join(dir, 'state'), api: { keys: [{ name: 'ops', sha256: hashApiKey('ops-key'), scopes: ['admin'] }] } }),
      );
      const taken = await herald(['keys', 'create', '--config', configFile, '--name', 'ops', '--scopes', 'read']);
      assert.equal(taken.code, 2);
      assert.match(taken.stderr, /config file/);
      await ok(['keys', 'create', '--config', configFile, '--name', 'app', '--scopes', 'read']);
      const [listed, revokeConfigKey] = await Promise.all([
        ok(['keys', 'list', '--json'], { HERALD_CONFIG: configFile }),
        herald(['keys', 'revoke', '--config', configFile, '--name', 'ops']),
      ]);
      const list = JSON.parse(listed.stdout) as { name: string; source: string; status: string }[];
      assert.deepEqual(list.map((k) => `${k.name}:${k.source}:${k.status}`), ['ops:config:active', 'app:store:active']);
      assert.equal(revokeConfigKey.code, 2);
      assert.match(revokeConfigKey.stderr, /set its notAfter there/);
      assert.equal(statSync(join(dir, 'state', 'herald.db')).mode & 0o777, 0o600, 'the config\'s engine is sqlite (the default): the keys are in its state file');
      assert.equal(existsSync(join(dir, 'state', 'api-keys.json')), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a server refuses to start on an api-keys.json writable by others (memory engine: its store; sqlite engine: not imported)', { skip: process.platform === 'win32' }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-keys-mode-'));
    try {
      const created = createKey([], { name: 'x', scopes: ['read'], now: Date.now() });
      assert.ok('keys' in created);
      writeKeyStore(dir, created.keys);
      const { chmodSync } = await import('node:fs');
      chmodSync(join(dir, 'api-keys.json'), 0o666);
      await assert.rejects(startHerald({ stateDir: dir, engine: { type: 'memory' } }), /writable by group or others/);
      await assert.rejects(startHerald({ stateDir: dir }), /writable by group or others/);
      assert.ok(existsSync(join(dir, 'api-keys.json')), 'the refused file stays where it is');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
