/**
 * `herald init` end to end, with the real binary as a child process: it
 * writes a production config with file references only, secrets with mode
 * 0600, an admin key shown once; `check-config` accepts the result, `serve`
 * starts with it, the printed key publishes and a token minted from the
 * config subscribes; a second init refuses and changes nothing; --force
 * replaces the secret and the key.
 */
import { after, afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { hashApiKey } from '../../src/auth/api-keys.ts';
import { HERALD_MAIN, HeraldProcess } from '../helpers/herald-process.ts';
import { closeAllClients, http, openWs } from '../helpers/herald-ws.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

const asRoot = process.getuid?.() === 0;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
afterEach(() => closeAllClients());

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'herald-init-'));
  dirs.push(dir);
  return dir;
}

function herald(args: readonly string[], cwd: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { cwd, timeout: 30000, env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
    );
  });
}

const mode = (path: string) => statSync(path).mode & 0o777;
const printedKey = (stdout: string) => /^ {4}(hk_[A-Za-z0-9_-]{43})$/m.exec(stdout)?.[1];

describe('herald init', { timeout: 90000 }, () => {
  test('writes a config check-config accepts and serve starts with; the printed key publishes; a second init changes nothing', async () => {
    const cwd = tempDir();
    const dir = join(cwd, 'herald');
    const first = await herald(['init', '--dir', dir, '--port', '0'], cwd);
    assert.equal(first.code, 0, first.stderr);
    const key = printedKey(first.stdout);
    assert.ok(key !== undefined, `the admin key is shown:\n${first.stdout}`);

    const configFile = join(dir, 'herald.json');
    const secretFile = join(dir, 'secrets', 'hmac-secret');
    const stateDir = join(dir, 'state');
    // The starter config runs the sqlite engine: the admin key is in its state file.
    const storeFile = join(stateDir, 'herald.db');
    const storedKeys = () => {
      const db = new DatabaseSync(storeFile, { readOnly: true });
      try {
        return (db.prepare('SELECT name, sha256, scopes FROM api_keys').all() as { name: string; sha256: string; scopes: string }[]).map((k) => ({ ...k, scopes: JSON.parse(k.scopes) as string[] }));
      } finally {
        db.close();
      }
    };
    const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, Record<string, unknown>>;
    const secret = readFileSync(secretFile, 'utf8').trim();
    assert.ok(secret.length >= 32, 'a secret of at least 32 characters');
    assert.equal(config['mode'] as unknown, 'production');
    assert.equal(config['stateDir'] as unknown, stateDir, 'absolute paths: Herald reads them from its working directory');
    assert.equal(config['auth']!['hmacSecretFile'], secretFile);
    assert.equal(config['auth']!['hmacSecret'], undefined, 'file references only');
    assert.deepEqual(config['listen'], { host: '127.0.0.1', port: 0 });
    assert.ok(Array.isArray(config['cors']!['origins']), 'an origins placeholder');

    // Secrets are private; the key is kept only as its hash; nothing secret is in the config or the output.
    assert.equal(mode(secretFile), 0o600);
    assert.equal(mode(storeFile), 0o600);
    assert.equal(mode(join(dir, 'secrets')), 0o700);
    assert.equal(mode(stateDir), 0o700);
    assert.deepEqual(
      storedKeys().map((k) => [k.name, k.sha256, k.scopes]),
      [['admin', hashApiKey(key), ['admin']]],
    );
    assert.ok(!readFileSync(storeFile, 'latin1').includes(key));
    const configText = readFileSync(configFile, 'utf8');
    assert.ok(!configText.includes(secret) && !configText.includes(key), 'no secret in the config');
    assert.ok(!first.stdout.includes(secret) && !first.stderr.includes(secret), 'the token secret is never printed');
    assert.match(first.stdout, /herald check-config --config \S+herald\.json/);
    assert.match(first.stdout, /herald serve --config \S+herald\.json/);
    assert.match(first.stdout, /herald token --config \S+herald\.json --sub alice/);
    assert.match(first.stdout, /docs\/operations\.md/);

    const checked = await herald(['check-config', '--config', configFile], cwd);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /herald\.json: ok \(production mode\)/);
    if (asRoot) assert.match(checked.stderr, /^warning: running as root/);
    else assert.equal(checked.stderr, '');

    // serve refuses root in production: as root (CI containers), serve a copy that allows it.
    let served = configFile;
    if (asRoot) {
      served = join(cwd, 'as-root.json');
      writeFileSync(served, JSON.stringify({ ...config, process: { allowRoot: true } }));
    }
    const server = new HeraldProcess(['--config', served, '--admin-port', '0'], cwd);
    try {
      const port = await server.listeningPort();
      const token = await herald(['token', '--config', configFile, '--sub', 'alice'], cwd);
      assert.equal(token.code, 0, token.stderr);
      const alice = await openWs(`ws://127.0.0.1:${port}/connection/websocket`);
      await alice.connect(token.stdout.trim());
      await alice.call('subscribe', { channel: 'chat:lobby' });
      const published = await http(`http://127.0.0.1:${port}/api/publish`, {
        headers: { authorization: `Bearer ${key}` },
        body: { channel: 'chat:lobby', data: { text: 'hello' } },
      });
      assert.equal(published.status, 200, published.text);
      const [publication] = await alice.waitPublications('chat:lobby', 1);
      assert.deepEqual(publication.data, { text: 'hello' });
    } finally {
      await server.stop();
    }

    // A second init refuses, names what exists, and changes nothing.
    const files = [configFile, secretFile, storeFile];
    const before = files.map((f) => [readFileSync(f, 'utf8'), statSync(f).mtimeMs]);
    const again = await herald(['init', '--dir', dir, '--port', '0'], cwd);
    assert.equal(again.code, 2);
    assert.equal(again.stdout, '');
    assert.match(again.stderr, /^herald init: refusing to overwrite:/);
    for (const f of files.slice(0, 2)) assert.ok(again.stderr.includes(f), `names ${f}`);
    assert.match(again.stderr, /a key named "admin"/);
    assert.match(again.stderr, /Nothing was changed.*--force/s);
    assert.deepEqual(
      files.map((f) => [readFileSync(f, 'utf8'), statSync(f).mtimeMs]),
      before,
    );

    // --force: a new secret and a new admin key; the old key is gone.
    const forced = await herald(['init', '--dir', dir, '--port', '0', '--force'], cwd);
    assert.equal(forced.code, 0, forced.stderr);
    const newKey = printedKey(forced.stdout);
    assert.ok(newKey !== undefined && newKey !== key);
    assert.notEqual(readFileSync(secretFile, 'utf8').trim(), secret);
    assert.equal(mode(secretFile), 0o600);
    assert.deepEqual(
      storedKeys().map((k) => [k.name, k.sha256]),
      [['admin', hashApiKey(newKey)]],
    );
  });

  test('--help, and only its own options', async () => {
    const cwd = tempDir();
    const [help, foreign, badPort] = await Promise.all([
      herald(['init', '--help'], cwd),
      herald(['init', '--sub', 'alice'], cwd),
      herald(['init', '--port', '70000'], cwd),
    ]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: herald init /);
    for (const option of ['--dir', '--config', '--host', '--port', '--force']) assert.ok(help.stdout.includes(option), option);
    assert.equal(foreign.code, 2);
    assert.match(foreign.stderr, /^herald init: unknown option --sub; .*\(herald init --help\)/);
    assert.equal(badPort.code, 2);
    assert.match(badPort.stderr, /--port must be an integer from 0 to 65535/);
    assert.match((await herald(['--help'], cwd)).stdout, /^ {2}init +write a starter production config/m, 'the command list names init');
    assert.deepEqual(readdirSync(cwd), [], 'nothing written');
  });
});
