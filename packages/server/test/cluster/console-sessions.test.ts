/**
 * Console sessions in cluster mode (`--workers 2`, sqlite engine: the
 * primary owns the state file, workers ask it per request): admins made by
 * `herald admin` while the cluster runs can sign in at once; a session is
 * honoured by every worker; `herald admin end-sessions`, "sign out
 * everywhere" and disabling an admin end it for every worker at their next
 * request; TOTP enrolled through one worker is checked by any (one use per
 * code), and `herald admin reset-mfa` removes it. Every request below opens a fresh connection, so the kernel
 * spreads them over both workers.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { TestCluster } from './harness.ts';
import { awayFromStepEdge, call, ConsoleClient, PASSWORD, stepNow, totpAt } from '../helpers/console.ts';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

function herald(dir: string, args: readonly string[], stdin?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args, '--config', join(dir, 'herald.json')], {
      cwd: dir,
      env: { PATH: process.env['PATH'] ?? '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}

/** The session's answer on `n` fresh connections. */
async function statuses(client: ConsoleClient, n = 12): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await client.get('/api/session')).status);
  return out;
}

describe('console sessions across two workers', { timeout: 120000 }, () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await TestCluster.start({ workers: 2 });
  });
  after(() => cluster.stop());

  test('herald admin create (password piped) beside the running cluster; the first admin is an owner', async () => {
    const first = await herald(cluster.dir, ['admin', 'create', 'root', '--role', 'viewer'], PASSWORD + '\n');
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /Created admin "root" with role owner \(the first admin is an owner\)/);
    assert.equal(first.stdout, '');
    const second = await herald(cluster.dir, ['admin', 'create', 'watcher', '--role', 'viewer', '--generate']);
    assert.equal(second.code, 0, second.stderr);
    const generated = second.stdout.trim();
    assert.match(generated, /^[A-Za-z0-9_-]{24}$/);
    const short = await herald(cluster.dir, ['admin', 'create', 'shorty', '--role', 'viewer'], 'too short\n');
    assert.equal(short.code, 2);
    assert.match(short.stderr, /at least 12 characters/);
    const c = new ConsoleClient(cluster.adminPort);
    assert.equal((await c.login('watcher', generated)).status, 200);
    const list = await herald(cluster.dir, ['admin', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    const rows = JSON.parse(list.stdout) as { name: string; role: string; sessions: number }[];
    assert.deepEqual(
      rows.map((r) => [r.name, r.role]),
      [
        ['root', 'owner'],
        ['watcher', 'viewer'],
      ],
    );
    assert.equal(rows.find((r) => r.name === 'watcher')?.sessions, 1);
  });

  test('herald admin end-sessions ends a session on every worker at once', async () => {
    const c = new ConsoleClient(cluster.adminPort);
    assert.equal((await c.login('root')).status, 200);
    assert.deepEqual(await statuses(c), Array(12).fill(200));
    const ended = await herald(cluster.dir, ['admin', 'end-sessions', 'root']);
    assert.equal(ended.code, 0, ended.stderr);
    assert.match(ended.stderr, /1 session of "root" ended/);
    assert.deepEqual(await statuses(c), Array(12).fill(401));
  });

  test('sign out everywhere from one worker ends the sessions held through the other', async () => {
    const a = new ConsoleClient(cluster.adminPort);
    const b = new ConsoleClient(cluster.adminPort);
    await a.login('root');
    await b.login('root');
    assert.deepEqual(await statuses(b), Array(12).fill(200));
    assert.equal((await a.post('/api/logout-everywhere')).status, 204);
    assert.deepEqual(await statuses(b), Array(12).fill(401));
    assert.deepEqual(await statuses(a, 4), Array(4).fill(401));
  });

  test('disabling an admin (CLI) ends their sessions; the limiter is shared by the workers', async () => {
    const c = new ConsoleClient(cluster.adminPort);
    const watcher = await herald(cluster.dir, ['admin', 'passwd', 'watcher'], PASSWORD + '\n');
    assert.equal(watcher.code, 0, watcher.stderr);
    await c.login('watcher');
    assert.deepEqual(await statuses(c, 4), Array(4).fill(200));
    const disabled = await herald(cluster.dir, ['admin', 'disable', 'watcher']);
    assert.equal(disabled.code, 0, disabled.stderr);
    assert.deepEqual(await statuses(c, 4), Array(4).fill(401));
    assert.equal((await c.login('watcher')).status, 401);
    // Failures counted by whichever worker answered: the third makes the next attempt wait on every worker.
    const origin = `http://127.0.0.1:${cluster.adminPort}`;
    const tries: number[] = [];
    for (let i = 0; i < 6; i++) tries.push((await call(cluster.adminPort, '/console/api/login', { method: 'POST', headers: { origin }, body: { name: 'nobody', password: 'wrong password' } })).status);
    assert.deepEqual(tries, [401, 401, 401, 429, 429, 429]);
    // A privilege change ends the sessions too.
    const owner = new ConsoleClient(cluster.adminPort);
    await owner.login('root');
    assert.equal((await herald(cluster.dir, ['admin', 'create', 'second', '--role', 'owner'], PASSWORD + '\n')).code, 0);
    const demoted = await herald(cluster.dir, ['admin', 'role', 'root', '--role', 'operator']);
    assert.equal(demoted.code, 0, demoted.stderr);
    assert.deepEqual(await statuses(owner, 4), Array(4).fill(401));
    await owner.login('root');
    assert.equal((await owner.get('/api/session')).body.admin.role, 'operator');
    const last = await herald(cluster.dir, ['admin', 'disable', 'second']);
    assert.equal(last.code, 2);
    assert.match(last.stderr, /last enabled owner/);
    const unlock = await herald(cluster.dir, ['admin', 'unlock', 'nobody']);
    assert.equal(unlock.code, 0, unlock.stderr);
    assert.equal((await call(cluster.adminPort, '/console/api/login', { method: 'POST', headers: { origin }, body: { name: 'nobody', password: 'wrong password' } })).status, 401);
  });

  test('TOTP across the workers: enrolled through one, asked and checked by any (a code once); herald admin reset-mfa removes it', async () => {
    assert.equal((await herald(cluster.dir, ['admin', 'create', 'tina', '--role', 'viewer'], PASSWORD + '\n')).code, 0);
    const c = new ConsoleClient(cluster.adminPort);
    await c.login('tina');
    const started = await c.post('/api/mfa/totp/enrol');
    assert.equal(started.status, 200, started.text);
    await awayFromStepEdge();
    const now = stepNow();
    assert.equal((await c.post('/api/mfa/totp/confirm', { code: totpAt(started.body.secret, now - 1) })).status, 200);
    const a = new ConsoleClient(cluster.adminPort);
    assert.equal((await a.login('tina')).body.stage, 'second_factor');
    assert.equal((await a.step('/api/login/totp', { code: totpAt(started.body.secret, now) })).body.stage, 'full');
    assert.deepEqual(await statuses(a, 4), Array(4).fill(200));
    const b = new ConsoleClient(cluster.adminPort);
    await b.login('tina');
    // Whichever worker answers, the code's step was taken at the primary.
    assert.equal((await b.post('/api/login/totp', { code: totpAt(started.body.secret, now) })).body.error?.code, 'mfa_failed');
    const reset = await herald(cluster.dir, ['admin', 'reset-mfa', 'tina']);
    assert.equal(reset.code, 0, reset.stderr);
    assert.match(reset.stderr, /TOTP and recovery codes removed for "tina"; 0 passkeys removed; [0-9]+ sessions? ended/);
    assert.deepEqual(await statuses(a, 4), Array(4).fill(401));
    assert.equal((await new ConsoleClient(cluster.adminPort).login('tina')).body.stage, 'full');
    const none = await herald(cluster.dir, ['admin', 'reset-mfa', 'nobody']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no admin named "nobody"/);
  });
});
