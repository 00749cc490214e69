/**
 * Console sign-in, sessions and CSRF over real HTTP against a real server
 * (SECURITY-TESTS D20, D21; issue 15 "Login"): cookie attributes, rotation
 * at sign-in (old and fixated ids rejected), idle timeout and absolute
 * lifetime with short configured values, logout, CSRF (missing or wrong
 * token, foreign or missing Origin, cross-site form post, GET never changes
 * state), roles checked on the server, hostile input (SQL-looking, oversize,
 * a 1 MB password), and the brute-force limiter (a thousand parallel wrong
 * passwords while /health/live keeps answering; a lock answers the same for
 * a name without an account).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { call, ConsoleClient, type ConsoleHerald, createAdmin, PASSWORD, sessionCookie, startConsoleHerald } from '../helpers/console.ts';
import { startHerald } from '../helpers/herald.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import { RedisAdminStore } from '../../src/console/redis-admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';
import { ConsoleSessions, sessionPolicy } from '../../src/console/sessions.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

async function auditEntries(stateDir: string, action: string): Promise<{ actor: string; outcome: string; target?: string }[]> {
  // The audit log is written in the background: give it a moment.
  await sleep(100);
  const file = openSqliteStore({ stateDir, claim: false });
  try {
    return await new SqliteAdminStore(file.db).queryAudit({ action, limit: 1000 });
  } finally {
    file.close();
  }
}

describe('console sessions and CSRF', { timeout: 120000 }, () => {
  let r: ConsoleHerald;

  before(async () => {
    // Generous address limits: this suite signs in many times from 127.0.0.1.
    r = await startConsoleHerald({ login: { addressDelayAfter: 1000, addressLockAfter: 10000 } });
    await createAdmin(r.stateDir, 'olive', 'owner');
    await createAdmin(r.stateDir, 'oscar', 'operator');
    await createAdmin(r.stateDir, 'vera', 'viewer');
  });
  after(() => r.close());

  test('sign-in sets a __Host- cookie (HttpOnly, Secure, SameSite=Strict, Path=/) with a 256-bit id, and no-store', async () => {
    const c = new ConsoleClient(r.port);
    const answer = await c.login('vera');
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(answer.body.admin, { name: 'vera', role: 'viewer' });
    assert.equal(typeof answer.body.csrf, 'string');
    const cookie = sessionCookie(answer)!;
    assert.match(cookie, /^__Host-herald_console=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Strict$/);
    assert.equal(answer.headers['cache-control'], 'no-store');
    assert.match(String(answer.headers['content-security-policy']), /frame-ancestors 'none'/);
    assert.equal(answer.headers['x-frame-options'], 'DENY');
    const session = await c.get('/api/session');
    assert.equal(session.status, 200);
    assert.equal(session.body.admin.name, 'vera');
    assert.equal(session.headers['cache-control'], 'no-store');
    assert.ok(session.body.expiresAt > Date.now() && session.body.idleExpiresAt <= session.body.expiresAt);
    // The store holds the id's hash, never the id.
    const file = openSqliteStore({ stateDir: r.stateDir, claim: false });
    try {
      const rows = file.db.prepare('SELECT id_hash FROM console_sessions').all() as { id_hash: string }[];
      assert.ok(rows.length > 0);
      assert.ok(rows.every((row) => row.id_hash !== c.sessionId && /^[0-9a-f]{64}$/.test(row.id_hash)));
    } finally {
      file.close();
    }
  });

  test('without a session: 401 unauthenticated; a made-up, malformed or foreign-format id too', async () => {
    for (const cookie of [undefined, '__Host-herald_console=' + 'A'.repeat(43), '__Host-herald_console=not-an-id', '__Host-herald_console=' + "' OR 1=1 --"]) {
      const answer = await call(r.port, '/console/api/session', { headers: cookie === undefined ? {} : { cookie } });
      assert.equal(answer.status, 401);
      assert.equal(answer.body.error.code, 'unauthenticated');
    }
  });

  test('sign-in rotates the id: the old session and a fixated id are rejected afterwards', async () => {
    const c = new ConsoleClient(r.port);
    await c.login('vera');
    const first = c.cookie!;
    // Signing in again with the first cookie: a new id, and the first is gone.
    await c.login('vera');
    assert.notEqual(c.cookie, first);
    assert.equal((await call(r.port, '/console/api/session', { headers: { cookie: first } })).status, 401);
    assert.equal((await c.get('/api/session')).status, 200);
    // Fixation: an attacker plants an id of the right shape before the victim signs in.
    const planted = '__Host-herald_console=' + 'fixatedSessionId_fixatedSessionId_fixated12'.slice(0, 43);
    const victim = new ConsoleClient(r.port);
    victim.cookie = planted;
    const answer = await victim.login('vera');
    assert.equal(answer.status, 200);
    assert.notEqual(victim.cookie, planted);
    assert.equal((await call(r.port, '/console/api/session', { headers: { cookie: planted } })).status, 401);
  });

  test('logout ends the session on the server; logout-everywhere ends every session of the admin', async () => {
    const a = new ConsoleClient(r.port);
    const b = new ConsoleClient(r.port);
    await a.login('oscar');
    await b.login('oscar');
    const logout = await a.post('/api/logout');
    assert.equal(logout.status, 204);
    assert.match(String(logout.headers['set-cookie']), /__Host-herald_console=;.*Expires=Thu, 01 Jan 1970/);
    assert.equal((await a.get('/api/session')).status, 401);
    assert.equal((await b.get('/api/session')).status, 200);
    const c = new ConsoleClient(r.port);
    await c.login('oscar');
    assert.equal((await c.post('/api/logout-everywhere')).status, 204);
    assert.equal((await b.get('/api/session')).status, 401);
    assert.equal((await c.get('/api/session')).status, 401);
    assert.ok((await auditEntries(r.stateDir, 'console.logout_everywhere')).some((e) => e.actor === 'oscar'));
  });

  test('CSRF: a state change without the token, with a wrong one, or with another session\'s is refused 403 and changes nothing', async () => {
    const c = new ConsoleClient(r.port);
    await c.login('vera');
    const other = new ConsoleClient(r.port);
    await other.login('vera');
    for (const token of [undefined, '', 'wrong', other.csrf!]) {
      const headers: Record<string, string> = { origin: c.origin, cookie: c.cookie! };
      if (token !== undefined) headers['x-csrf-token'] = token;
      const answer = await call(r.port, '/console/api/logout', { method: 'POST', headers });
      assert.equal(answer.status, 403, `token ${token}`);
      assert.equal(answer.body.error.code, 'csrf_failed');
    }
    assert.equal((await c.get('/api/session')).status, 200);
    // The token of GET /api/session works as well as the login's.
    c.csrf = (await c.get('/api/session')).body.csrf;
    assert.equal((await c.post('/api/logout')).status, 204);
  });

  test('CSRF: a foreign, look-alike, null or missing Origin is refused, on sign-in too; a cross-site form post never runs', async () => {
    const c = new ConsoleClient(r.port);
    await c.login('vera');
    for (const origin of ['https://evil.example', 'null', `http://127.0.0.1:${r.port}.evil.example`, `http://127.0.0.1:${r.port + 1}`, `https://127.0.0.1:${r.port}`, undefined]) {
      const headers = c.headers(origin === undefined ? {} : { origin });
      if (origin === undefined) delete headers['origin'];
      const logout = await call(r.port, '/console/api/logout', { method: 'POST', headers });
      assert.equal(logout.status, 403, `origin ${origin}`);
      assert.equal(logout.body.error.code, 'csrf_failed');
      const login = await call(r.port, '/console/api/login', { method: 'POST', headers: origin === undefined ? {} : { origin }, body: { name: 'vera', password: PASSWORD } });
      assert.equal(login.status, 403, `login from origin ${origin}`);
      assert.equal(sessionCookie(login), undefined);
    }
    // A form post from another site (a "simple" request the browser sends without preflight).
    const form = await call(r.port, '/console/api/logout', {
      method: 'POST',
      headers: { origin: 'https://evil.example', cookie: c.cookie!, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'x=1',
    });
    assert.equal(form.status, 403);
    // Even from the console's own origin, a form body is not JSON: 415, nothing runs.
    const ownForm = await call(r.port, '/console/api/login', { method: 'POST', headers: { origin: c.origin, 'content-type': 'application/x-www-form-urlencoded' }, body: 'name=vera' });
    assert.equal(ownForm.status, 415);
    // A page on a name that resolves here (DNS rebinding) brings its own Host: refused.
    const rebound = await call(r.port, '/console/api/login', { method: 'POST', headers: { origin: `http://attacker.example:${r.port}`, host: `attacker.example:${r.port}` }, body: { name: 'vera', password: PASSWORD } });
    assert.equal(rebound.status, 403);
    assert.equal((await c.get('/api/session')).status, 200);
  });

  test('GET never changes state: logout, logout-everywhere and admin actions by GET are 405, the session lives on', async () => {
    const c = new ConsoleClient(r.port);
    await c.login('olive');
    for (const path of ['/api/logout', '/api/logout-everywhere', '/api/login', '/api/admins/vera/end-sessions', '/api/admins/vera/unlock']) {
      const answer = await c.get(path);
      assert.equal(answer.status, 405, path);
      assert.equal(answer.body.error.code, 'method_not_allowed');
    }
    assert.equal((await c.get('/api/session')).status, 200);
  });

  test('roles are checked on the server: viewer and operator get 403 on owner endpoints, and it is audited', async () => {
    for (const name of ['vera', 'oscar']) {
      const c = new ConsoleClient(r.port);
      await c.login(name);
      const list = await c.get('/api/admins');
      assert.equal(list.status, 403);
      assert.equal(list.body.error.code, 'forbidden');
      const end = await c.post('/api/admins/olive/end-sessions');
      assert.equal(end.status, 403);
      assert.equal(end.body.error.code, 'forbidden');
    }
    // An operator endpoint of the console API: a viewer is refused, an operator passes the guard.
    const viewer = new ConsoleClient(r.port);
    await viewer.login('vera');
    const disconnect = await viewer.post('/api/users/someone/disconnect', {});
    assert.equal(disconnect.status, 403);
    assert.equal(disconnect.body.error.code, 'forbidden');
    const operator = new ConsoleClient(r.port);
    await operator.login('oscar');
    const allowed = await operator.post('/api/users/someone/disconnect', {});
    assert.notEqual(allowed.status, 403, allowed.text);
    assert.notEqual(allowed.status, 401, allowed.text);
    const owner = new ConsoleClient(r.port);
    await owner.login('olive');
    const list = await owner.get('/api/admins');
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.admins.map((a: { name: string; role: string }) => [a.name, a.role]),
      [
        ['olive', 'owner'],
        ['oscar', 'operator'],
        ['vera', 'viewer'],
      ],
    );
    const denied = await auditEntries(r.stateDir, 'console.denied');
    assert.ok(denied.some((e) => e.actor === 'vera' && e.outcome === 'denied'));
    assert.ok(denied.some((e) => e.actor === 'oscar' && e.outcome === 'denied'));
  });

  test("an owner ends another admin's sessions at once", async () => {
    const viewer = new ConsoleClient(r.port);
    await viewer.login('vera');
    const owner = new ConsoleClient(r.port);
    await owner.login('olive');
    const ended = await owner.post('/api/admins/vera/end-sessions');
    assert.equal(ended.status, 200);
    assert.ok(ended.body.ended >= 1);
    assert.equal((await viewer.get('/api/session')).status, 401);
    assert.equal((await owner.post('/api/admins/nobody/end-sessions')).status, 404);
  });

  test('wrong password and unknown name get the same answer; sign-ins are audited and counted', async () => {
    const c = new ConsoleClient(r.port);
    const wrong = await c.login('vera', 'not the password at all');
    const unknown = await c.login('nobody-here', 'not the password at all');
    assert.equal(wrong.status, 401);
    assert.equal(unknown.status, 401);
    assert.deepEqual(wrong.body, unknown.body);
    assert.equal(wrong.body.error.code, 'login_failed');
    assert.equal(sessionCookie(wrong), undefined);
    const logins = await auditEntries(r.stateDir, 'console.login');
    assert.ok(logins.some((e) => e.actor === 'nobody-here' && e.outcome === 'failed'));
    assert.ok(logins.some((e) => e.actor === 'vera' && e.outcome === 'ok'));
    const metrics = await call(r.port, '/metrics');
    assert.match(metrics.text, /^herald_console_logins_total\{outcome="failed"\} [1-9]/m);
    assert.match(metrics.text, /^herald_console_logins_total\{outcome="ok"\} [1-9]/m);
  });

  test('hostile input: SQL-looking and oversized fields, a 1 MB password: clear errors, nothing broken', async () => {
    const c = new ConsoleClient(r.port);
    for (const name of ["' OR 1=1 --", 'vera"; DROP TABLE console_admins; --', 'a'.repeat(65), '', '__proto__x\u0000', 'vera\nadmin']) {
      const answer = await c.login(name);
      assert.equal(answer.status, 400, JSON.stringify(name));
      assert.equal(answer.body.error.code, 'invalid_input');
      assert.match(answer.body.error.detail, /^name: /);
    }
    for (const password of ["' OR ''='", "x' OR 1=1; --  padding"]) {
      const answer = await c.login('vera', password);
      assert.equal(answer.status, 401);
      assert.equal(answer.body.error.code, 'login_failed');
    }
    const long = await c.login('vera', 'p'.repeat(257));
    assert.equal(long.status, 400);
    assert.equal(long.body.error.code, 'invalid_input');
    assert.match(long.body.error.detail, /password: at most 256 characters/);
    const megabyte = await c.login('vera', 'p'.repeat(1 << 20));
    assert.equal(megabyte.status, 413);
    assert.equal(megabyte.body.error.code, 'payload_too_large');
    for (const body of ['{"name":"vera","password":"' + PASSWORD + '","role":"owner"}', '[]', '"x"', '{"name":{"$ne":null},"password":"x"}', '{"__proto__":{"admin":true},"name":"vera","password":"x"}']) {
      const answer = await call(r.port, '/console/api/login', { method: 'POST', headers: { origin: c.origin }, body });
      assert.equal(answer.status, 400, body);
    }
    // The accounts are intact (vera's failures above made her wait: the owner lifts that).
    const owner = new ConsoleClient(r.port);
    await owner.login('olive');
    assert.equal((await owner.get('/api/admins')).body.admins.length, 3);
    assert.equal((await owner.post('/api/admins/vera/unlock')).status, 204);
    assert.equal((await c.login('vera')).status, 200);
    const path = await owner.post("/api/admins/vera'%20OR%20'1'='1/end-sessions");
    assert.equal(path.status, 400);
    assert.equal(path.body.error.code, 'invalid_input');
  });

  test('a password hashed with older parameters is rehashed with the current ones at sign-in', async () => {
    const file = openSqliteStore({ stateDir: r.stateDir, claim: false });
    try {
      const store = new SqliteAdminStore(file.db);
      const hash = await new PasswordHasher({ params: { memory: 64, passes: 1, parallelism: 1 } }).hash(PASSWORD);
      await store.createAdmin({ name: 'olden', role: 'viewer', passwordHash: hash, now: Date.now() });
    } finally {
      file.close();
    }
    const c = new ConsoleClient(r.port);
    assert.equal((await c.login('olden')).status, 200);
    const after = openSqliteStore({ stateDir: r.stateDir, claim: false });
    try {
      const admin = await new SqliteAdminStore(after.db).getAdmin('olden');
      assert.match(admin!.passwordHash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    } finally {
      after.close();
    }
    assert.equal((await new ConsoleClient(r.port).login('olden')).status, 200);
  });

  test('metrics, health and OpenAPI still refuse any Origin, even the console\'s own', async () => {
    const c = new ConsoleClient(r.port);
    for (const path of ['/metrics', '/health', '/openapi.json']) {
      const answer = await call(r.port, path, { headers: { origin: c.origin } });
      assert.equal(answer.status, 403, path);
      assert.equal(answer.body.error.code, 'origin_not_allowed');
    }
  });
});

describe('console session timeouts', { timeout: 60000 }, () => {
  test('idle timeout (short, configured): an unused session ends; a used one lives on', async () => {
    const r = await startConsoleHerald({ sessionIdleMs: 1500, sessionAbsoluteMs: 60000 });
    try {
      await createAdmin(r.stateDir, 'ida', 'viewer');
      const idle = new ConsoleClient(r.port);
      await idle.login('ida');
      const busy = new ConsoleClient(r.port);
      await busy.login('ida');
      for (let i = 0; i < 6; i++) {
        await sleep(500);
        assert.equal((await busy.get('/api/session')).status, 200, `busy session, request ${i}`);
      }
      const answer = await idle.get('/api/session');
      assert.equal(answer.status, 401);
      assert.equal(answer.body.error.code, 'unauthenticated');
    } finally {
      await r.close();
    }
  });

  test('a background check (sessions.check, as a live stream does) does not keep a session alive', async () => {
    const r = await startConsoleHerald({ sessionIdleMs: 3000, sessionAbsoluteMs: 60000 });
    try {
      await createAdmin(r.stateDir, 'bg', 'viewer');
      const c = new ConsoleClient(r.port);
      const { idleExpiresAt } = (await c.login('bg')).body as { idleExpiresAt: number };
      const file = openSqliteStore({ stateDir: r.stateDir, claim: false });
      try {
        const sessions = new ConsoleSessions(new SqliteAdminStore(file.db), sessionPolicy(3000, 60000));
        let checks = 0;
        // Checked every 300 ms for about 2 s: each would have renewed the session if it counted as activity.
        while (Date.now() < idleExpiresAt - 1000) {
          assert.notEqual(await sessions.check(c.sessionId, Date.now()), undefined, `check ${checks}`);
          checks++;
          await sleep(300);
        }
        assert.ok(checks >= 2);
        await sleep(Math.max(0, idleExpiresAt + 300 - Date.now()));
        assert.equal(await sessions.check(c.sessionId, Date.now()), undefined);
      } finally {
        file.close();
      }
      assert.equal((await c.get('/api/session')).status, 401);
    } finally {
      await r.close();
    }
  });

  test('absolute lifetime (short, configured): a session in constant use still ends', async () => {
    const r = await startConsoleHerald({ sessionIdleMs: 60000, sessionAbsoluteMs: 2000 });
    try {
      await createAdmin(r.stateDir, 'abe', 'viewer');
      const c = new ConsoleClient(r.port);
      const login = await c.login('abe');
      assert.ok(login.body.expiresAt - Date.now() <= 2000);
      assert.equal((await c.get('/api/session')).status, 200);
      const statuses: number[] = [];
      while (Date.now() < login.body.expiresAt + 500) {
        statuses.push((await c.get('/api/session')).status);
        await sleep(250);
      }
      assert.equal(statuses.at(-1), 401);
      assert.ok(statuses.includes(200));
    } finally {
      await r.close();
    }
  });
});

describe('console sign-in limits', { timeout: 120000 }, () => {
  test('1000 parallel wrong passwords: the limiter holds, /health/live answers throughout, an owner unlocks', async () => {
    const r = await startConsoleHerald({ login: { addressDelayAfter: 1000, addressLockAfter: 10000 } });
    try {
      await createAdmin(r.stateDir, 'boss', 'owner');
      await createAdmin(r.stateDir, 'target', 'viewer');
      const origin = `http://127.0.0.1:${r.port}`;
      let healthChecks = 0;
      let flooding = true;
      const health = (async () => {
        while (flooding) {
          const live = await call(r.port, '/health/live');
          assert.equal(live.status, 200);
          healthChecks++;
          await sleep(20);
        }
      })();
      const answers = await Promise.all(
        Array.from({ length: 1000 }, (_, i) => call(r.port, '/console/api/login', { method: 'POST', headers: { origin }, body: { name: 'target', password: `wrong password ${i}` } })),
      );
      flooding = false;
      await health;
      const counts = new Map<string, number>();
      for (const a of answers) counts.set(`${a.status} ${a.body?.error?.code}`, (counts.get(`${a.status} ${a.body?.error?.code}`) ?? 0) + 1);
      assert.deepEqual([...counts.keys()].sort(), ['401 login_failed', '429 login_locked'], JSON.stringify([...counts]));
      // Each wrong password checked costs a failure; only the first few (then one per growing delay) are checked.
      assert.ok((counts.get('401 login_failed') ?? 0) < 20, JSON.stringify([...counts]));
      assert.ok(answers.filter((a) => a.status === 429).every((a) => Number(a.headers['retry-after']) >= 1));
      assert.ok(healthChecks >= 1);
      // The right password is refused while the delay holds: no way around the limiter.
      const c = new ConsoleClient(r.port);
      const held = await c.login('target');
      assert.equal(held.status, 429);
      assert.equal(held.body.error.code, 'login_locked');
      // The owner lifts it.
      const boss = new ConsoleClient(r.port);
      assert.equal((await boss.login('boss')).status, 200);
      assert.equal((await boss.post('/api/admins/target/unlock')).status, 204);
      assert.equal((await c.login('target')).status, 200);
      const locked = await auditEntries(r.stateDir, 'console.login');
      assert.ok(locked.some((e) => e.actor === 'target' && e.outcome === 'denied'));
      assert.ok((await auditEntries(r.stateDir, 'admin.unlock')).some((e) => e.actor === 'boss' && e.target === 'target'));
      assert.match((await call(r.port, '/metrics')).text, /^herald_console_logins_total\{outcome="locked"\} [1-9]/m);
    } finally {
      await r.close();
    }
  });

  test('a lock answers the same for a name with and without an account; the address limit holds across names', async () => {
    const r = await startConsoleHerald({ login: { accountDelayAfter: 100, accountLockAfter: 3, baseDelayMs: 0, addressDelayAfter: 1000, addressLockAfter: 9 } });
    try {
      await createAdmin(r.stateDir, 'real', 'viewer');
      const c = new ConsoleClient(r.port);
      const fourth: Record<string, unknown> = {};
      for (const name of ['real', 'ghost']) {
        for (let i = 0; i < 3; i++) assert.equal((await c.login(name, 'wrong wrong wrong')).status, 401);
        const answer = await c.login(name, name === 'real' ? PASSWORD : 'anything at all');
        assert.equal(answer.status, 429);
        fourth[name] = { body: answer.body, retry: answer.headers['retry-after'] };
      }
      assert.deepEqual(fourth['real'], fourth['ghost']);
      const locks = await auditEntries(r.stateDir, 'console.lock');
      assert.ok(locks.some((e) => e.target === 'account:real'));
      assert.ok(locks.some((e) => e.target === 'account:ghost'));
      // 6 failures so far from this address; 3 more names lock the address (9).
      for (const name of ['n1', 'n2', 'n3']) assert.equal((await c.login(name, 'wrong wrong wrong')).status, 401);
      const blocked = await c.login('n4', 'wrong wrong wrong');
      assert.equal(blocked.status, 429);
      assert.ok(locks.length >= 2);
      assert.ok((await auditEntries(r.stateDir, 'console.lock')).some((e) => e.target?.startsWith('address:')));
    } finally {
      await r.close();
    }
  });
});

describe('console on the redis engine: two nodes share admins, sessions and limits', { timeout: 60000 }, () => {
  test('a session made on node A is valid on node B; sign out everywhere on B ends it on A; limits count across nodes', async (t) => {
    const skip = missingService('Redis', await redisAvailable());
    if (skip !== false) return t.skip(skip);
    const prefix = 'herald-test-console-' + randomBytes(4).toString('hex');
    const engine = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: prefix };
    const a = await startHerald({ engine });
    const b = await startHerald({ engine });
    const redis = new Redis(REDIS_URL, { lazyConnect: true });
    await redis.connect();
    try {
      const store = new RedisAdminStore(redis, prefix);
      await store.createAdmin({ name: 'nina', role: 'viewer', passwordHash: await new PasswordHasher().hash(PASSWORD), now: Date.now() });
      const onA = new ConsoleClient(a.server.adminPort);
      assert.equal((await onA.login('nina')).status, 200);
      assert.equal((await onA.get('/api/session')).body.admin.role, 'owner');
      const onB = new ConsoleClient(b.server.adminPort);
      onB.cookie = onA.cookie;
      onB.csrf = onA.csrf;
      assert.equal((await onB.get('/api/session')).status, 200);
      assert.equal((await onB.post('/api/logout-everywhere')).status, 204);
      assert.equal((await onA.get('/api/session')).status, 401);
      // Three failures on A, the fourth attempt on B waits.
      for (let i = 0; i < 3; i++) assert.equal((await onA.login('nina', 'wrong wrong wrong')).status, 401);
      assert.equal((await onB.login('nina')).status, 429);
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await a.close();
      await b.close();
    }
  });
});
