/**
 * Sign-in stages of the console (console/sign-in.ts) over real HTTP against
 * a real server: `admin.console.mfa.require` ("all", per role) puts an
 * admin without a second factor on an 'enrol' session after the password;
 * such a session answers GET session (with its stage) and logout, and every
 * other console endpoint refuses it with 403 `mfa_required`; the session
 * cookie is a new id at every stage; an admin the policy does not cover
 * gets a full session.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleClient, type ConsoleHerald, createAdmin, sessionCookie, startConsoleHerald } from '../helpers/console.ts';

/** The suite signs in many times from 127.0.0.1. */
const LOGIN = { addressDelayAfter: 1000, addressLockAfter: 10000 };

/** Every console endpoint a partial session must not reach, one per guard and method. */
const GUARDED: readonly (readonly [string, string, unknown?])[] = [
  ['GET', '/api/admins'],
  ['GET', '/api/channels'],
  ['GET', '/api/connections?user=x'],
  ['GET', '/api/keys'],
  ['GET', '/api/audit'],
  ['POST', '/api/channels/chat:a/publish', { data: { x: 1 } }],
  ['POST', '/api/logout-everywhere'],
];

describe('console sign-in stages: MFA required for every admin', { timeout: 120000 }, () => {
  let r: ConsoleHerald;

  before(async () => {
    r = await startConsoleHerald({ mfa: { require: 'all' }, login: LOGIN });
    await createAdmin(r.stateDir, 'olive', 'owner');
  });
  after(() => r.close());

  test('after the password an admin without a second factor is on an enrol session and can do nothing else', async () => {
    const c = new ConsoleClient(r.port);
    const login = await c.login('olive');
    assert.equal(login.status, 200, login.text);
    assert.equal(login.body.stage, 'enrol');
    assert.deepEqual(login.body.methods, ['password']);
    assert.ok(login.body.expiresAt - Date.now() <= 5 * 60_000 + 1000, 'a partial session lives at most 5 minutes');
    const session = await c.get('/api/session');
    assert.equal(session.status, 200, session.text);
    assert.equal(session.body.stage, 'enrol');
    for (const [method, path, body] of GUARDED) {
      const answer = method === 'GET' ? await c.get(path) : await c.post(path, body);
      assert.equal(answer.status, 403, `${method} ${path}: ${answer.text}`);
      assert.equal(answer.body.error.code, 'mfa_required', `${method} ${path}`);
      assert.match(answer.body.error.detail, /stage: enrol/);
    }
    // The session is still there (refusals end nothing), and logout works at this stage.
    assert.equal((await c.get('/api/session')).status, 200);
    assert.equal((await c.post('/api/logout')).status, 204);
    assert.equal((await c.get('/api/session')).status, 401);
  });

  test('a new sign-in ends the partial session the browser brought (a new id, the old one refused)', async () => {
    const c = new ConsoleClient(r.port);
    await c.login('olive');
    const first = c.cookie!;
    const again = await c.login('olive');
    assert.equal(again.status, 200);
    assert.notEqual(sessionCookie(again)!.split(';')[0], first);
    const old = new ConsoleClient(r.port);
    old.cookie = first;
    assert.equal((await old.get('/api/session')).status, 401);
  });
});

describe('console sign-in stages: MFA required per role', { timeout: 120000 }, () => {
  let r: ConsoleHerald;

  before(async () => {
    r = await startConsoleHerald({ mfa: { require: ['owner', 'operator'] }, login: LOGIN });
    await createAdmin(r.stateDir, 'olive', 'owner');
    await createAdmin(r.stateDir, 'oscar', 'operator');
    await createAdmin(r.stateDir, 'vera', 'viewer');
  });
  after(() => r.close());

  test('roles in the list must enrol; a role outside it signs in fully with the password', async () => {
    for (const name of ['olive', 'oscar']) {
      const c = new ConsoleClient(r.port);
      const login = await c.login(name);
      assert.equal(login.body.stage, 'enrol', name);
      assert.equal((await c.get('/api/channels')).body.error?.code, 'mfa_required', name);
    }
    const v = new ConsoleClient(r.port);
    const login = await v.login('vera');
    assert.equal(login.body.stage, 'full');
    assert.equal((await v.get('/api/session')).body.stage, 'full');
    const channels = await v.get('/api/channels');
    assert.equal(channels.status, 200, channels.text);
  });
});

describe('console sign-in stages: no MFA policy', { timeout: 120000 }, () => {
  let r: ConsoleHerald;

  before(async () => {
    r = await startConsoleHerald({ login: LOGIN });
    await createAdmin(r.stateDir, 'olive', 'owner');
  });
  after(() => r.close());

  test('the password alone gives a full session (stage full, method password)', async () => {
    const c = new ConsoleClient(r.port);
    const login = await c.login('olive');
    assert.equal(login.body.stage, 'full');
    assert.deepEqual(login.body.methods, ['password']);
    assert.equal((await c.get('/api/admins')).status, 200);
  });
});
