/**
 * API keys in the sqlite engine's state file, with real processes (issue 14,
 * part 1): an api-keys.json left by an earlier Herald is moved into
 * herald.db at the first start (and renamed, not deleted); `herald keys`
 * writes the state file while `herald serve` owns it, single process and
 * cluster mode (the primary reads the change and sends it to every worker);
 * a foreign or corrupt state file is refused by `herald keys`, `herald
 * backup` and `herald check-config`, and left untouched.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { createKey, writeKeyStore } from '../../src/auth/key-store.ts';
import { HERALD_MAIN, HeraldProcess } from '../helpers/herald-process.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function herald(args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { timeout: 30000, env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

/** A production config on the sqlite engine (the default: no engine section) in a fresh directory. */
function setup(): { dir: string; stateDir: string; config: string; env: Record<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), 'herald-keys-state-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'hmac'), randomBytes(32).toString('base64url') + '\n', { mode: 0o600 });
  const config = join(dir, 'herald.json');
  const stateDir = join(dir, 'state');
  writeFileSync(
    config,
    JSON.stringify({
      mode: 'production',
      auth: { hmacSecretFile: join(dir, 'hmac') },
      listen: { host: '127.0.0.1', port: 0 },
      admin: { port: 0 },
      stateDir,
      log: { level: 'info' },
      process: { allowRoot: true },
    }),
  );
  return { dir, stateDir, config, env: { HERALD_API_KEY: randomBytes(24).toString('base64url') } };
}

/** POST /api/info with `key` on a new connection each time (in cluster mode connections are spread over the workers). */
function info(port: number, key: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/api/info', agent: false, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end('{}');
  });
}

/** `count` answers in a row with `status`, each on its own connection (every worker answered it). */
async function allAnswer(port: number, key: string, status: number, count = 8): Promise<true | undefined> {
  for (let i = 0; i < count; i++) if ((await info(port, key)) !== status) return undefined;
  return true;
}

describe('api-keys.json from an earlier Herald', { timeout: 90000 }, () => {
  test('is moved into the state file at the first start on the sqlite engine; its keys work, before and after a restart', async () => {
    const s = setup();
    mkdirSync(s.stateDir, { recursive: true, mode: 0o700 });
    const created = createKey([], { name: 'legacy', scopes: ['read'], now: Date.now() });
    assert.ok('keys' in created);
    writeKeyStore(s.stateDir, created.keys);
    const json = readFileSync(join(s.stateDir, 'api-keys.json'), 'utf8');

    const checked = await herald(['check-config', '--config', s.config]);
    assert.equal(checked.code, 0, `check-config counts the keys to import, and changes nothing: ${checked.stderr}`);
    assert.ok(existsSync(join(s.stateDir, 'api-keys.json')));

    let server = new HeraldProcess(['--config', s.config], s.dir);
    let port = await server.listeningPort();
    const line = server.logs.find((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('moved into'));
    assert.ok(line !== undefined, `the import is logged: ${JSON.stringify(server.logs.map((l) => l['msg']))}`);
    assert.equal(await info(port, created.key), 200);
    assert.equal(existsSync(join(s.stateDir, 'api-keys.json')), false);
    assert.equal(readFileSync(join(s.stateDir, 'api-keys.json.migrated'), 'utf8'), json, 'renamed, not deleted');
    await server.stop();

    server = new HeraldProcess(['--config', s.config], s.dir);
    port = await server.listeningPort();
    assert.equal(await info(port, created.key), 200, 'the key is in the state file');
    assert.equal(server.logs.filter((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('api-keys.json')).length, 0, 'nothing imported twice');
    await server.stop();
  });
});

for (const workers of [1, 2]) {
  describe(`herald keys beside a running server${workers > 1 ? ` in cluster mode (${workers} workers)` : ''}`, { timeout: 120000 }, () => {
    test('a key created while it runs is accepted, a key revoked while it runs is refused; the state file stays 0600', async () => {
      const s = setup();
      const server = new HeraldProcess(['--config', s.config, ...(workers > 1 ? ['--workers', String(workers)] : [])], s.dir, s.env);
      try {
        const port = await server.listeningPort();
        const made = await herald(['keys', 'create', '--config', s.config, '--name', 'live', '--scopes', 'read']);
        assert.equal(made.code, 0, made.stderr);
        const key = made.stdout.trim();
        assert.match(made.stderr, /herald\.db/);
        await eventually(() => allAnswer(port, key, 200), 'every worker to accept the new key', 15000);

        const listed = await herald(['keys', 'list', '--json', '--config', s.config]);
        assert.equal(listed.code, 0, listed.stderr);
        assert.deepEqual((JSON.parse(listed.stdout) as { name: string }[]).map((k) => k.name), ['live']);

        const revoked = await herald(['keys', 'revoke', '--config', s.config, '--name', 'live']);
        assert.equal(revoked.code, 0, revoked.stderr);
        await eventually(() => allAnswer(port, key, 401), 'every worker to refuse the revoked key', 15000);
        assert.equal(await info(port, s.env['HERALD_API_KEY']!), 200, 'the other keys still work');

        const file = join(s.stateDir, 'herald.db');
        assert.equal(statSync(file).mode & 0o777, 0o600);
        assert.equal(statSync(s.stateDir).mode & 0o777, 0o700);
        for (const side of ['-wal', '-shm']) if (existsSync(file + side)) assert.equal(statSync(file + side).mode & 0o777, 0o600, side);
        assert.equal(server.child.exitCode, null, 'the server kept running');
        assert.ok(!server.logs.some((l) => l['msg'] === 'sqlite engine degraded: publishes with history fail with unavailable'), 'and healthy');
      } finally {
        await server.stop();
      }
    });
  });
}

describe('herald keys, backup and check-config on a state file that is not Herald\'s', { timeout: 60000 }, () => {
  const cases: [string, (path: string) => void, RegExp][] = [
    ['a foreign SQLite database', (path) => {
      const db = new DatabaseSync(path);
      db.exec('CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES (\'mine\')');
      db.close();
    }, /another application/],
    ['a corrupt file', (path) => writeFileSync(path, Buffer.concat([Buffer.from('SQLite format 3\0'), randomBytes(4080)]), { mode: 0o600 }), /corrupt|unreadable|cannot be opened|another application/],
    ['not SQLite', (path) => writeFileSync(path, 'hello\n'.repeat(100), { mode: 0o600 }), /not a SQLite database/],
  ];
  for (const [name, make, problem] of cases) {
    test(`${name}: refused with exit code 2, the file untouched`, async () => {
      const s = setup();
      mkdirSync(s.stateDir, { recursive: true, mode: 0o700 });
      const path = join(s.stateDir, 'herald.db');
      make(path);
      const before = readFileSync(path);
      for (const args of [['keys', 'create', '--name', 'x', '--scopes', 'read'], ['keys', 'list'], ['backup', join(s.dir, 'copy.db')], ['check-config']]) {
        const run = await herald([...args, '--config', s.config]);
        assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
        assert.match(run.stderr, problem);
        assert.ok(run.stderr.includes(path), 'names the file');
        assert.equal(run.stdout, '');
      }
      assert.deepEqual(readFileSync(path), before);
      assert.equal(existsSync(join(s.dir, 'copy.db')), false, 'no backup of it');
    });
  }
});
