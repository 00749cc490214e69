/**
 * Passkeys (WebAuthn) of the console over real HTTP against a real server,
 * with answers a software authenticator crafts (SECURITY-TESTS D23, the
 * cases a real authenticator cannot produce; the browser test
 * test/browser/passkeys.test.ts covers the ones it can): another RP id
 * hash, missing UP or UV flags, a replayed or expired challenge, a
 * challenge started elsewhere, a counter going back, another origin,
 * another admin's credential, a removed credential; the relying party's
 * config checked at start; the passkey list, rename and removal guarded
 * like every console endpoint; every outcome in the audit log; two nodes
 * on the redis engine sharing passkeys and challenges.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { call, createAdmin, PASSWORD } from '../helpers/console.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { RedisAdminStore } from '../../src/console/redis-admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';
import { FLAG_UP, FLAG_UV, freePort, LocalhostConsole, SoftCredential } from '../helpers/passkeys.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import type { AuditEntry } from '../../src/console/admin-store.ts';

const RP = 'localhost';

interface Running {
  readonly h: TestHerald;
  readonly stateDir: string;
  readonly port: number;
  readonly origin: string;
  close(): Promise<void>;
}

async function start(passkeys: Record<string, unknown> = {}): Promise<Running> {
  const stateDir = mkdtempSync(join(tmpdir(), 'herald-passkeys-'));
  const port = await freePort();
  const origin = `http://localhost:${port}`;
  const h = await startHerald({
    stateDir,
    admin: { port, console: { enabled: true, login: { addressDelayAfter: 1000, addressLockAfter: 10000 }, passkeys: { rpId: RP, origins: [origin], ...passkeys } } },
  });
  return {
    h,
    stateDir,
    port,
    origin,
    async close() {
      await h.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Audit entries of `action`, newest first, once at least `atLeast` are written (the log is written in the background). */
async function audit(stateDir: string, action: string, atLeast = 1): Promise<AuditEntry[]> {
  for (let i = 0; ; i++) {
    const file = openSqliteStore({ stateDir, claim: false });
    try {
      const entries = await new SqliteAdminStore(file.db).queryAudit({ action, limit: 1000 });
      if (entries.length >= atLeast || i >= 100) return entries;
    } finally {
      file.close();
    }
    await sleep(50);
  }
}

describe('passkeys over HTTP with crafted authenticator answers', { timeout: 180000 }, () => {
  let r: Running;
  const ann = new SoftCredential();
  const bob = new SoftCredential();

  before(async () => {
    r = await start();
    await createAdmin(r.stateDir, 'ann', 'owner');
    await createAdmin(r.stateDir, 'bob', 'viewer');
    for (const [name, credential] of [['ann', ann], ['bob', bob]] as const) {
      const c = new LocalhostConsole(r.port);
      assert.equal((await c.login(name)).status, 200);
      const registered = await c.register(credential, RP, `${name}'s key`);
      assert.equal(registered.status, 201, registered.text);
    }
  });
  after(() => r?.close());

  /** Starts a passwordless sign-in: a client holding the pre-login cookie, and the challenge. */
  async function begin(): Promise<{ c: LocalhostConsole; challenge: string; expiresAt: number }> {
    const c = new LocalhostConsole(r.port);
    const options = await c.post('/api/login/passkey/options');
    assert.equal(options.status, 200, options.text);
    assert.equal(options.body.options.userVerification, 'required');
    assert.equal(options.body.options.rpId, RP);
    assert.equal(options.body.options.allowCredentials, undefined, 'discoverable: no credential list');
    return { c, challenge: options.body.options.challenge, expiresAt: options.body.expiresAt };
  }

  async function refused(c: LocalhostConsole, response: Record<string, unknown>, why: RegExp): Promise<void> {
    const before = c.cookies.get('__Host-herald_console');
    const answer = await c.post('/api/login/passkey/verify', { response });
    assert.equal(answer.status, 401, answer.text);
    assert.equal(answer.body.error.code, 'passkey_failed');
    assert.match(answer.body.error.detail, why);
    assert.equal(c.cookies.get('__Host-herald_console'), before, 'no new session');
  }

  test('registration: listed with name, created and last used (the sign-in just now), no key material', async () => {
    const c = new LocalhostConsole(r.port);
    assert.equal((await c.loginWith('ann', ann, RP)).body.stage, 'full');
    const list = await c.get('/api/passkeys');
    assert.equal(list.status, 200);
    assert.equal(list.body.enabled, true);
    assert.deepEqual(
      list.body.passkeys.map((p: Record<string, unknown>) => [p['id'], p['name'], typeof p['lastUsedAt'], Object.keys(p).sort().join()]),
      [[ann.id, "ann's key", 'number', 'createdAt,id,lastUsedAt,name,transports']],
    );
    const registered = await audit(r.stateDir, 'passkey.register', 2);
    assert.deepEqual(registered.map((e) => [e.actor, e.outcome, e.target]).sort(), [['ann', 'ok', "ann's key"], ['bob', 'ok', "bob's key"]]);
  });

  test('passwordless sign-in: a valid answer signs in (new session, MFA satisfied) and the use is recorded', async () => {
    const { c, challenge } = await begin();
    const cookie = c.cookies.get('__Host-herald_passkey');
    assert.match(cookie ?? '', /^[A-Za-z0-9_-]{43}$/, 'the challenge is bound to a pre-login cookie');
    const answer = await c.post('/api/login/passkey/verify', { response: ann.assertion({ challenge, origin: r.origin, rpId: RP }) });
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(answer.body.admin, { name: 'ann', role: 'owner' });
    assert.equal(c.cookies.get('__Host-herald_passkey'), undefined, 'the pre-login cookie is cleared');
    const session = await c.get('/api/session');
    assert.equal(session.status, 200);
    assert.equal(session.body.admin.name, 'ann');
    const list = await c.get('/api/passkeys');
    assert.ok(list.body.passkeys[0].lastUsedAt > 0);
    const logins = await audit(r.stateDir, 'console.login');
    assert.ok(logins.some((e) => e.actor === 'ann' && e.outcome === 'ok' && e.detail?.['method'] === 'passkey'));
  });

  test('a replayed answer is refused: the challenge was used', async () => {
    const { c, challenge } = await begin();
    const response = ann.assertion({ challenge, origin: r.origin, rpId: RP });
    const cookie = c.cookies.get('__Host-herald_passkey')!;
    assert.equal((await c.post('/api/login/passkey/verify', { response })).status, 200);
    // The same answer again, with the same pre-login cookie put back.
    const replay = new LocalhostConsole(r.port);
    replay.cookies.set('__Host-herald_passkey', cookie);
    await refused(replay, response, /no challenge in force/);
  });

  test('a challenge started in another browser (another pre-login cookie, or none) is refused', async () => {
    const { challenge } = await begin();
    const other = await begin();
    await refused(other.c, ann.assertion({ challenge, origin: r.origin, rpId: RP }), /challenge/);
    await refused(new LocalhostConsole(r.port), ann.assertion({ challenge, origin: r.origin, rpId: RP }), /not started in this browser/);
  });

  test('another RP id hash is refused', async () => {
    const { c, challenge } = await begin();
    await refused(c, ann.assertion({ challenge, origin: r.origin, rpId: 'evil.example' }), /RP ID/i);
  });

  test('missing user presence (UP) and missing user verification (UV) flags are refused', async () => {
    const noUp = await begin();
    await refused(noUp.c, ann.assertion({ challenge: noUp.challenge, origin: r.origin, rpId: RP, flags: FLAG_UV }), /not present/i);
    const noUv = await begin();
    await refused(noUv.c, ann.assertion({ challenge: noUv.challenge, origin: r.origin, rpId: RP, flags: FLAG_UP }), /verification required/i);
  });

  test('another origin (same RP id) is refused', async () => {
    const { c, challenge } = await begin();
    await refused(c, ann.assertion({ challenge, origin: `http://evil.localhost:${r.port}`, rpId: RP }), /origin/i);
  });

  test('a signature counter going back (or standing still) is refused', async () => {
    const ok = await begin();
    const counter = ann.counter + 10;
    assert.equal((await ok.c.post('/api/login/passkey/verify', { response: ann.assertion({ challenge: ok.challenge, origin: r.origin, rpId: RP, counter }) })).status, 200);
    const same = await begin();
    await refused(same.c, ann.assertion({ challenge: same.challenge, origin: r.origin, rpId: RP, counter }), /counter/i);
    const back = await begin();
    await refused(back.c, ann.assertion({ challenge: back.challenge, origin: r.origin, rpId: RP, counter: 1 }), /counter/i);
  });

  test('another admin\'s user handle on a credential is refused; a signature by another key is refused', async () => {
    const handle = await begin();
    await refused(handle.c, ann.assertion({ challenge: handle.challenge, origin: r.origin, rpId: RP, userHandle: bob.userHandle! }), /user handle/);
    const missing = await begin();
    await refused(missing.c, ann.assertion({ challenge: missing.challenge, origin: r.origin, rpId: RP, userHandle: null }), /user handle/);
    // Bob's key signing an answer that names Ann's credential.
    const forged = await begin();
    const response = bob.assertion({ challenge: forged.challenge, origin: r.origin, rpId: RP, userHandle: ann.userHandle!, counter: ann.counter + 100 });
    await refused(forged.c, { ...response, id: ann.id, rawId: ann.id }, /signature/i);
  });

  test('a removed credential is refused; removal and rename are the admin\'s own', async () => {
    const extra = new SoftCredential();
    const c = new LocalhostConsole(r.port);
    await c.loginWith('bob', bob, RP);
    assert.equal((await c.register(extra, RP)).status, 201);
    const list = await c.get('/api/passkeys');
    assert.deepEqual(list.body.passkeys.map((p: { name: string }) => p.name), ["bob's key", 'Passkey 2']);
    const ownerOfOther = new LocalhostConsole(r.port);
    await ownerOfOther.loginWith('ann', ann, RP);
    assert.equal((await ownerOfOther.request('DELETE', `/api/passkeys/${extra.id}`)).status, 404, 'not even an owner removes another admin\'s passkey here');
    assert.equal((await ownerOfOther.request('PATCH', `/api/passkeys/${extra.id}`, { name: 'mine' })).status, 404);
    assert.equal((await c.request('PATCH', `/api/passkeys/${extra.id}`, { name: 'phone' })).status, 204);
    assert.equal((await c.request('PATCH', `/api/passkeys/${extra.id}`, { name: '' })).status, 400);
    assert.equal((await c.request('PATCH', `/api/passkeys/${extra.id}`, { name: 'x'.repeat(65) })).status, 400);
    assert.equal((await c.request('DELETE', `/api/passkeys/${extra.id}`)).status, 204);
    assert.equal((await c.request('DELETE', `/api/passkeys/${extra.id}`)).status, 404);
    const { c: after, challenge } = await begin();
    await refused(after, extra.assertion({ challenge, origin: r.origin, rpId: RP }), /no such passkey/);
    const removed = await audit(r.stateDir, 'passkey.remove');
    assert.deepEqual(removed.map((e) => [e.actor, e.target]), [['bob', 'phone']]);
  });

  test('management is guarded like the console: no session 401, foreign Origin or no CSRF token 403', async () => {
    const anonymous = new LocalhostConsole(r.port);
    assert.equal((await anonymous.get('/api/passkeys')).status, 401);
    assert.equal((await anonymous.post('/api/passkeys/register/options')).status, 401);
    const c = new LocalhostConsole(r.port);
    await c.loginWith('bob', bob, RP);
    const token = c.csrf;
    c.csrf = undefined;
    assert.equal((await c.request('DELETE', `/api/passkeys/${bob.id}`)).status, 403);
    assert.equal((await c.post('/api/passkeys/register/options')).status, 403);
    c.csrf = token;
    const foreign = new LocalhostConsole(r.port, 'http://evil.example');
    for (const [k, v] of c.cookies) foreign.cookies.set(k, v);
    foreign.csrf = token;
    const answer = await call(r.port, `/console/api/passkeys/${bob.id}`, { method: 'DELETE', headers: { ...foreign.headers(), host: `localhost:${r.port}` } });
    assert.equal(answer.status, 403);
    assert.equal((await foreign.post('/api/login/passkey/options')).status, 403, 'sign-in options need the console\'s own Origin');
    assert.equal((await c.get('/api/passkeys')).body.passkeys.length, 1, 'nothing was removed');
  });

  test('registration: the challenge is the session\'s own and single use; an answer without UV is refused', async () => {
    const first = new LocalhostConsole(r.port);
    await first.loginWith('bob', bob, RP);
    const second = new LocalhostConsole(r.port);
    await second.loginWith('bob', bob, RP);
    const options = await first.post('/api/passkeys/register/options');
    assert.equal(options.status, 200);
    assert.deepEqual(options.body.options.authenticatorSelection, { residentKey: 'required', requireResidentKey: true, userVerification: 'required' });
    assert.deepEqual(options.body.options.excludeCredentials.map((c: { id: string }) => c.id), [bob.id]);
    const fresh = new SoftCredential();
    const response = fresh.registration(options.body.options, r.origin, RP);
    const elsewhere = await second.post('/api/passkeys/register/verify', { response });
    assert.equal(elsewhere.status, 401, 'another session of the same admin');
    assert.match(elsewhere.body.error.detail, /no challenge/);
    assert.equal((await first.post('/api/passkeys/register/verify', { response })).status, 201);
    const replay = await first.post('/api/passkeys/register/verify', { response });
    assert.match(replay.body.error.detail, /no challenge/);
    const noUv = await first.post('/api/passkeys/register/options');
    const refusedUv = await first.post('/api/passkeys/register/verify', { response: new SoftCredential().registration(noUv.body.options, r.origin, RP, FLAG_UP) });
    assert.equal(refusedUv.status, 401);
    assert.match(refusedUv.body.error.detail, /verif/i);
    const wrongRp = await first.post('/api/passkeys/register/options');
    const refusedRp = await first.post('/api/passkeys/register/verify', { response: new SoftCredential().registration(wrongRp.body.options, r.origin, 'evil.example') });
    assert.match(refusedRp.body.error.detail, /RP ID/i);
    assert.equal((await first.get('/api/passkeys')).body.passkeys.length, 2);
    const failed = (await audit(r.stateDir, 'passkey.register')).filter((e) => e.outcome === 'failed');
    assert.ok(failed.length >= 4);
  });

  test('second factor: after the password a session waits for a passkey of its own admin; passing renews the session id', async () => {
    const c = new LocalhostConsole(r.port);
    const first = await c.login('ann');
    assert.equal(first.status, 200);
    assert.equal(first.body.stage, 'second_factor', 'an admin with a passkey is asked for it after the password');
    const partialId = c.cookies.get('__Host-herald_console')!;
    assert.equal((await c.get('/api/passkeys')).status, 403, 'nothing else before the second factor');
    const token = c.csrf;
    c.csrf = undefined;
    assert.equal((await c.post('/api/login/passkey/options')).status, 403, 'the partial session\'s CSRF token is required');
    c.csrf = token;
    const options = await c.post('/api/login/passkey/options');
    assert.equal(options.status, 200);
    assert.deepEqual(options.body.options.allowCredentials.map((p: { id: string }) => p.id), [ann.id], 'only the admin\'s own passkeys are offered');
    // Bob's passkey (a real signature by Bob's key, with Bob's user handle) on Ann's partial session.
    await refused(c, bob.assertion({ challenge: options.body.options.challenge, origin: r.origin, rpId: RP }), /another admin/);
    assert.equal((await c.get('/api/session')).body.stage, 'second_factor', 'still waiting after the refusal');
    const again = await c.post('/api/login/passkey/options');
    const ok = await c.post('/api/login/passkey/verify', { response: ann.assertion({ challenge: again.body.options.challenge, origin: r.origin, rpId: RP }) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.stage, 'full');
    assert.deepEqual(ok.body.methods, ['password', 'passkey']);
    assert.notEqual(c.cookies.get('__Host-herald_console'), partialId, 'a new session id at the second factor');
    assert.equal((await c.get('/api/passkeys')).status, 200);
    const old = new LocalhostConsole(r.port);
    old.cookies.set('__Host-herald_console', partialId);
    assert.equal((await old.get('/api/session')).status, 401, 'the partial session id is gone');
    const logins = await audit(r.stateDir, 'console.login');
    assert.ok(logins.some((e) => e.actor === 'ann' && e.outcome === 'ok' && e.detail?.['factor'] === 'passkey'));
  });

  test('hostile input: not an object, unknown fields, a huge id → 400; nothing is verified', async () => {
    const { c } = await begin();
    for (const body of [[], 'x', { response: 'x' }, { response: {}, extra: 1 }, { response: { id: 'a'.repeat(2000) } }, { response: { id: '../../etc' } }]) {
      const answer = await c.post('/api/login/passkey/verify', body);
      assert.equal(answer.status, 400, JSON.stringify(body));
    }
    const garbage = await c.post('/api/login/passkey/verify', { response: { id: ann.id, response: { clientDataJSON: 5 } } });
    assert.equal(garbage.status, 401);
    const failed = (await audit(r.stateDir, 'console.login')).filter((e) => e.outcome === 'failed' && e.detail?.['method'] === 'passkey');
    assert.ok(failed.length > 0, 'failed passkey sign-ins are audited');
  });

  test('every refusal above is an audited failed sign-in with its reason', async () => {
    const failed = (await audit(r.stateDir, 'console.login')).filter((e) => e.outcome === 'failed' && e.detail?.['method'] === 'passkey');
    const reasons = failed.map((e) => String(e.detail?.['reason']));
    for (const why of [/no challenge/, /RP ID/i, /not present/i, /verification required/i, /origin/i, /counter/i, /user handle/, /no such passkey/]) {
      assert.ok(reasons.some((reason) => why.test(reason)), `an audit entry for ${why}`);
    }
  });
});

describe('passkey challenges expire', { timeout: 60000 }, () => {
  test('an answer after challengeTtlMs is refused as expired', async () => {
    const r = await start({ challengeTtlMs: 1000 });
    try {
      await createAdmin(r.stateDir, 'eve', 'owner');
      const credential = new SoftCredential();
      const c = new LocalhostConsole(r.port);
      await c.login('eve');
      assert.equal((await c.register(credential, RP)).status, 201);
      const late = new LocalhostConsole(r.port);
      const options = await late.post('/api/login/passkey/options');
      const { challenge } = options.body.options;
      // Wait until the server's stated expiry has passed (the cookie outlives it by up to a second).
      while (Date.now() <= options.body.expiresAt + 50) await sleep(50);
      const answer = await late.post('/api/login/passkey/verify', { response: credential.assertion({ challenge, origin: r.origin, rpId: RP }) });
      assert.equal(answer.status, 401, answer.text);
      assert.match(answer.body.error.detail, /expired/);
      // The same answer in time passes: the refusal above was the expiry alone.
      const timely = new LocalhostConsole(r.port);
      const fresh = await timely.post('/api/login/passkey/options');
      const ok = await timely.post('/api/login/passkey/verify', { response: credential.assertion({ challenge: fresh.body.options.challenge, origin: r.origin, rpId: RP }) });
      assert.equal(ok.status, 200, ok.text);
    } finally {
      await r.close();
    }
  });
});

describe('passkey enrolment when MFA is required', { timeout: 60000 }, () => {
  test('an admin without a factor is sent to enrolment; registering a passkey completes the sign-in with a new session id', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'herald-passkeys-enrol-'));
    const port = await freePort();
    const origin = `http://localhost:${port}`;
    const h = await startHerald({ stateDir, admin: { port, console: { enabled: true, mfa: { require: 'all' }, passkeys: { rpId: RP, origins: [origin] } } } });
    try {
      await createAdmin(stateDir, 'nia', 'owner');
      const c = new LocalhostConsole(port);
      const first = await c.login('nia');
      assert.equal(first.body.stage, 'enrol');
      const partialId = c.cookies.get('__Host-herald_console')!;
      assert.equal((await c.get('/api/passkeys')).status, 403, 'nothing but enrolment');
      const credential = new SoftCredential();
      const enrolled = await c.register(credential, RP, 'first key');
      assert.equal(enrolled.status, 201, enrolled.text);
      assert.equal(enrolled.body.session.stage, 'full');
      assert.notEqual(c.cookies.get('__Host-herald_console'), partialId);
      assert.equal((await c.get('/api/passkeys')).body.passkeys[0].name, 'first key');
      // The next password sign-in asks for the passkey.
      const next = new LocalhostConsole(port);
      assert.equal((await next.login('nia')).body.stage, 'second_factor');
      assert.equal((await next.loginWith('nia', credential, RP)).body.stage, 'full');
      // An owner's reset-mfa removes another admin's passkeys (a lost device): that admin enrols again.
      await createAdmin(stateDir, 'pia', 'viewer');
      const pia = new LocalhostConsole(port);
      await pia.login('pia');
      assert.equal((await pia.register(new SoftCredential(), RP)).status, 201);
      const reset = await next.post('/api/admins/pia/reset-mfa');
      assert.equal(reset.status, 200, reset.text);
      assert.equal(reset.body.passkeys, 1);
      assert.equal((await new LocalhostConsole(port).login('pia')).body.stage, 'enrol', 'no passkey left: enrolment again');
    } finally {
      await h.close();
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});

describe('passkeys on the redis engine: two nodes share passkeys and challenges', { timeout: 60000 }, () => {
  test('registered on node A, signed in on node B; the answer replayed on A finds its challenge used', async (t) => {
    const skip = missingService('Redis', await redisAvailable());
    if (skip !== false) return t.skip(skip);
    const prefix = 'herald-test-passkeys-' + randomBytes(4).toString('hex');
    const [portA, portB] = [await freePort(), await freePort()];
    const passkeys = { rpId: RP, origins: [`http://localhost:${portA}`, `http://localhost:${portB}`] };
    const engine = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: prefix };
    const a = await startHerald({ engine, admin: { port: portA, console: { enabled: true, passkeys } } });
    const b = await startHerald({ engine, admin: { port: portB, console: { enabled: true, passkeys } } });
    const redis = new Redis(REDIS_URL, { lazyConnect: true });
    await redis.connect();
    try {
      await new RedisAdminStore(redis, prefix).createAdmin({ name: 'rae', role: 'owner', passwordHash: await new PasswordHasher().hash(PASSWORD), now: Date.now() });
      const credential = new SoftCredential();
      const onA = new LocalhostConsole(portA);
      assert.equal((await onA.login('rae')).status, 200);
      assert.equal((await onA.register(credential, RP)).status, 201);
      const onB = new LocalhostConsole(portB);
      const options = await onB.post('/api/login/passkey/options');
      const response = credential.assertion({ challenge: options.body.options.challenge, origin: onB.origin, rpId: RP });
      const cookie = onB.cookies.get('__Host-herald_passkey')!;
      const ok = await onB.post('/api/login/passkey/verify', { response });
      assert.equal(ok.status, 200, ok.text);
      const replay = new LocalhostConsole(portA);
      replay.cookies.set('__Host-herald_passkey', cookie);
      const again = await replay.post('/api/login/passkey/verify', { response });
      assert.equal(again.status, 401);
      assert.match(again.body.error.detail, /no challenge/);
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await a.close();
      await b.close();
    }
  });
});

describe('passkey relying party checked at start', () => {
  for (const [passkeys, why] of [
    [{ rpId: '127.0.0.1', origins: ['http://127.0.0.1:8001'] }, /IP address/],
    [{ rpId: 'co.uk', origins: ['https://admin.example.co.uk'] }, /public suffix/],
    [{ rpId: 'example.com', origins: ['https://admin.example.org'] }, /not a registrable suffix/],
    [{ rpId: 'example.com', origins: ['http://admin.example.com'] }, /plain http/],
    [{ rpId: 'example.com' }, /origins/],
    [{ origins: ['https://admin.example.com'] }, /rpId/],
  ] as const) {
    test(`refused: ${JSON.stringify(passkeys)}`, async () => {
      await assert.rejects(startHerald({ admin: { console: { enabled: true, passkeys } } }), (error: Error & { problems?: string[] }) => {
        const text = [error.message, ...(error.problems ?? [])].join('\n');
        assert.match(text, /admin\/console\/(passkeys|origin)/);
        assert.match(text, why);
        return true;
      });
    });
  }

  test('accepted: a subdomain origin under its registrable RP id, and localhost', async () => {
    const h = await startHerald({ admin: { console: { enabled: true, passkeys: { rpId: 'localhost', origins: ['http://localhost:1', 'http://admin.localhost:2'] } } } });
    await h.close();
  });
});
