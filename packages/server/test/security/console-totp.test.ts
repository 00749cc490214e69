/**
 * The console's TOTP second factor over real HTTP against a real server
 * (SECURITY-TESTS D20 at MFA, D22; issue 16 "TOTP second factor"). Codes
 * are computed by the test from the secret with its own RFC 6238 code
 * (helpers/console.ts totpAt), not with the server's library:
 * - enrolment: a Base32 secret, an otpauth URI and a local SVG QR code;
 *   completes only with a valid code; ten recovery codes shown once, stored
 *   hashed (the state file holds none of them);
 * - D20: the session id changes when the second factor passes; the old id
 *   is refused;
 * - D22: the same code twice → the second refused; a code of a step at or
 *   before the last accepted one refused; a code two steps away refused;
 *   wrong codes throttled by the sign-in limiter, also across password
 *   re-entries;
 * - recovery codes work once; removal needs a code; the owner's reset;
 * - an 'enrol' session (admin.console.mfa.require) reaches full only by
 *   completing enrolment; a 'second_factor' session cannot enrol.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Answer, awayFromStepEdge, ConsoleClient, type ConsoleHerald, createAdmin, startConsoleHerald, stepNow, totpAt } from '../helpers/console.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';

async function audit(stateDir: string, action: string): Promise<{ actor: string; outcome: string; target?: string; detail?: Record<string, unknown> }[]> {
  // The audit log is written in the background: poll for it.
  for (let i = 0; i < 50; i++) {
    const file = openSqliteStore({ stateDir, claim: false });
    try {
      const entries = await new SqliteAdminStore(file.db).queryAudit({ action, limit: 1000 });
      if (entries.length > 0) return entries;
    } finally {
      file.close();
    }
    await sleep(100);
  }
  return [];
}

/** Enrols TOTP on a session ('enrol' or full) and answers the secret, the recovery codes and the confirm answer. */
async function enrol(c: ConsoleClient): Promise<{ secret: string; recoveryCodes: string[]; confirmed: Answer }> {
  const started = await c.post('/api/mfa/totp/enrol');
  assert.equal(started.status, 200, started.text);
  const secret: string = started.body.secret;
  await awayFromStepEdge();
  // The code of the step before: the login that follows can use the current one.
  const confirmed = await c.step('/api/mfa/totp/confirm', { code: totpAt(secret, stepNow() - 1) });
  assert.equal(confirmed.status, 200, confirmed.text);
  return { secret, recoveryCodes: confirmed.body.recoveryCodes, confirmed };
}

describe('console TOTP', { timeout: 180000 }, () => {
  let r: ConsoleHerald;

  before(async () => {
    r = await startConsoleHerald({ login: { addressDelayAfter: 1000, addressLockAfter: 10000, accountDelayAfter: 4, baseDelayMs: 600000, maxDelayMs: 600000 } });
    await createAdmin(r.stateDir, 'olive', 'owner');
    await createAdmin(r.stateDir, 'tess', 'operator');
    await createAdmin(r.stateDir, 'rick', 'viewer');
    await createAdmin(r.stateDir, 'bruno', 'viewer');
    // An owner without a second factor, for the owner's actions.
    await createAdmin(r.stateDir, 'oona', 'owner');
  });
  after(() => r.close());

  test('enrolment: secret, otpauth URI and a local SVG QR code; a wrong code does not complete it; ten recovery codes once, stored hashed', async () => {
    const c = new ConsoleClient(r.port);
    assert.equal((await c.login('tess')).body.stage, 'full');
    const started = await c.post('/api/mfa/totp/enrol');
    assert.equal(started.status, 200, started.text);
    const { secret, uri, qr } = started.body;
    assert.match(secret, /^[A-Z2-7]{32}$/, '160-bit Base32 secret');
    const parsed = new URL(uri);
    assert.equal(parsed.protocol, 'otpauth:');
    assert.equal(parsed.searchParams.get('secret'), secret);
    assert.equal(parsed.searchParams.get('issuer'), 'Herald');
    assert.match(decodeURIComponent(parsed.pathname), /tess/);
    assert.match(qr, /^data:image\/svg\+xml;base64,/);
    assert.match(Buffer.from(qr.split(',')[1], 'base64').toString(), /^<svg[\s\S]*<\/svg>\s*$/);
    // Not enrolled before a valid code.
    const wrong = await c.post('/api/mfa/totp/confirm', { code: totpAt(secret, stepNow() + 5) });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error.code, 'mfa_failed');
    assert.equal((await c.get('/api/mfa')).body.totp.enrolled, false);
    const other = new ConsoleClient(r.port);
    assert.equal((await other.login('tess')).body.stage, 'full', 'a pending secret is not a second factor');
    // A second start voids the first secret.
    const again = await c.post('/api/mfa/totp/enrol');
    assert.notEqual(again.body.secret, secret);
    assert.equal((await c.post('/api/mfa/totp/confirm', { code: totpAt(secret, stepNow()) })).status, 401, 'the voided secret does not confirm');
    await awayFromStepEdge();
    const confirmed = await c.post('/api/mfa/totp/confirm', { code: totpAt(again.body.secret, stepNow()) });
    assert.equal(confirmed.status, 200, confirmed.text);
    const codes: string[] = confirmed.body.recoveryCodes;
    assert.equal(codes.length, 10);
    assert.equal(new Set(codes).size, 10);
    for (const code of codes) assert.match(code, /^[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}$/);
    const status = await c.get('/api/mfa');
    assert.deepEqual({ enrolled: status.body.totp.enrolled, left: status.body.totp.recoveryCodesLeft }, { enrolled: true, left: 10 });
    assert.equal(JSON.stringify(status.body).includes(codes[0]!), false, 'codes are never shown again');
    assert.equal((await c.post('/api/mfa/totp/enrol')).status, 400, 'enrolled: remove first');
    // The state file (and its journal), which holds the secret, is the owner's alone; it holds recovery code hashes only.
    for (const name of readdirSync(r.stateDir).filter((n) => n.startsWith('herald.db'))) assert.equal(statSync(join(r.stateDir, name)).mode & 0o777, 0o600, name);
    const file = readFileSync(join(r.stateDir, 'herald.db'));
    for (const code of codes) {
      assert.equal(file.includes(code), false);
      assert.equal(file.includes(code.replace(/-/g, '')), false);
    }
    const entries = await audit(r.stateDir, 'mfa.totp.enrol');
    assert.ok(entries.some((e) => e.actor === 'tess' && e.outcome === 'ok' && e.detail?.['step'] === 'confirm'));
  });

  test('D20 + D22: after the password a second_factor session; the code rotates the id (old id refused); the same code twice, an earlier step and a step two away are refused', async () => {
    const setup = new ConsoleClient(r.port);
    await setup.login('olive');
    const { secret } = await enrol(setup);
    assert.equal((await setup.get('/api/admins')).status, 200, 'enrolling from a full session keeps it');

    const c = new ConsoleClient(r.port);
    const login = await c.login('olive');
    assert.equal(login.body.stage, 'second_factor');
    assert.deepEqual(login.body.factors, { totp: true, passkeys: 0 }, 'the page learns which factors to offer');
    assert.deepEqual((await c.get('/api/session')).body.factors, { totp: true, passkeys: 0 });
    assert.equal((await c.get('/api/channels')).body.error.code, 'mfa_required');
    assert.equal((await c.post('/api/mfa/totp/enrol')).body.error?.code, 'mfa_required', 'a second_factor session cannot enrol a new secret');
    const partialId = c.cookie!;
    await awayFromStepEdge();
    const now = stepNow();
    assert.equal((await c.post('/api/login/totp', { code: totpAt(secret, now - 2) })).body.error?.code, 'mfa_failed', 'two steps back');
    assert.equal((await c.post('/api/login/totp', { code: totpAt(secret, now + 2) })).body.error?.code, 'mfa_failed', 'two steps ahead');
    assert.equal((await c.post('/api/login/totp', { code: totpAt(secret, now - 1) })).body.error?.code, 'mfa_failed', 'the step enrolment used');
    const passed = await c.step('/api/login/totp', { code: totpAt(secret, now) });
    assert.equal(passed.status, 200, passed.text);
    assert.equal(passed.body.stage, 'full');
    assert.deepEqual(passed.body.methods, ['password', 'totp']);
    // D20: a new id at MFA; the old one is refused.
    assert.notEqual(c.cookie, partialId);
    const old = new ConsoleClient(r.port);
    old.cookie = partialId;
    assert.equal((await old.get('/api/session')).status, 401);
    assert.equal((await c.get('/api/admins')).status, 200);

    // D22: the same code again (a new password sign-in) is refused; so is the step before (within ±1 but not after the last).
    const replay = new ConsoleClient(r.port);
    assert.equal((await replay.login('olive')).body.stage, 'second_factor');
    const twice = await replay.post('/api/login/totp', { code: totpAt(secret, now) });
    assert.equal(twice.status, 401, twice.text);
    assert.equal(twice.body.error.code, 'mfa_failed');
    assert.equal((await replay.post('/api/login/totp', { code: totpAt(secret, now - 1) })).status, 401);
    // The next step's code (within ±1, after the last) passes once, and once only.
    assert.equal((await replay.step('/api/login/totp', { code: totpAt(secret, now + 1) })).status, 200);
    const third = new ConsoleClient(r.port);
    await third.login('olive');
    assert.equal((await third.post('/api/login/totp', { code: totpAt(secret, now + 1) })).status, 401);

    // Two concurrent uses of one fresh code (step now + 2, in the window once the clock is at now + 1): exactly one passes.
    const racers = [new ConsoleClient(r.port), new ConsoleClient(r.port), new ConsoleClient(r.port)];
    for (const x of racers) await x.login('olive');
    while (stepNow() < now + 1) await sleep(250);
    const code = totpAt(secret, now + 2);
    const results = await Promise.all(racers.map((x) => x.post('/api/login/totp', { code })));
    assert.deepEqual(results.map((x) => x.status).sort(), [200, 401, 401]);
    const logins = await audit(r.stateDir, 'console.login');
    assert.ok(logins.some((e) => e.actor === 'olive' && e.outcome === 'ok' && e.detail?.['factor'] === 'totp'));
    assert.ok(logins.some((e) => e.actor === 'olive' && e.outcome === 'failed' && e.detail?.['method'] === 'totp'));
  });

  test('D22: wrong codes are throttled by the sign-in limiter, and giving the password again does not reset the count', async () => {
    const setup = new ConsoleClient(r.port);
    await setup.login('rick');
    const { secret } = await enrol(setup);
    const c = new ConsoleClient(r.port);
    assert.equal((await c.login('rick')).body.stage, 'second_factor');
    assert.equal((await c.post('/api/login/totp', { code: '000000' === totpAt(secret, stepNow()) ? '111111' : '000000' })).status, 401);
    assert.equal((await c.post('/api/login/totp', { code: 'abcdef' })).status, 401);
    // The password again: its own attempt is taken back, the code failures stay.
    assert.equal((await c.login('rick')).body.stage, 'second_factor');
    assert.equal((await c.post('/api/login/totp', { code: '999999' === totpAt(secret, stepNow()) ? '888888' : '999999' })).status, 401);
    assert.equal((await c.post('/api/login/totp', { code: '123456' === totpAt(secret, stepNow()) ? '654321' : '123456' })).status, 401);
    // Four failures (accountDelayAfter 4): the next attempt must wait 10 minutes, even with the right code.
    const held = await c.post('/api/login/totp', { code: totpAt(secret, stepNow()) });
    assert.equal(held.status, 429, held.text);
    assert.equal(held.body.error.code, 'login_locked');
    assert.ok(Number(held.headers['retry-after']) > 60);
    assert.equal((await c.login('rick')).status, 429, 'the password too');
    // The owner lifts it; then the right code passes.
    const owner = new ConsoleClient(r.port);
    assert.equal((await owner.login('oona')).body.stage, 'full');
    assert.equal((await owner.post('/api/admins/rick/unlock')).status, 204);
    assert.equal((await c.login('rick')).body.stage, 'second_factor');
    await awayFromStepEdge();
    assert.equal((await c.step('/api/login/totp', { code: totpAt(secret, stepNow()) })).status, 200);
  });

  test('recovery codes: each works once (and rotates the id); removal needs a code; the owner resets MFA (audited, sessions ended)', async () => {
    const setup = new ConsoleClient(r.port);
    await setup.login('bruno');
    const { secret, recoveryCodes } = await enrol(setup);
    const c = new ConsoleClient(r.port);
    await c.login('bruno');
    const partialId = c.cookie;
    const used = await c.step('/api/login/recovery-code', { code: recoveryCodes[0]!.toLowerCase() });
    assert.equal(used.status, 200, used.text);
    assert.equal(used.body.stage, 'full');
    assert.equal(used.body.recoveryCodesLeft, 9);
    assert.notEqual(c.cookie, partialId);
    const again = new ConsoleClient(r.port);
    await again.login('bruno');
    assert.equal((await again.post('/api/login/recovery-code', { code: recoveryCodes[0] })).body.error?.code, 'mfa_failed', 'a used code');
    assert.equal((await again.post('/api/login/recovery-code', { code: 'AAAA-BBBB-CCCC-DDDD' })).status, 401);
    assert.equal((await again.step('/api/login/recovery-code', { code: recoveryCodes[1]!.replace(/-/g, ' ') })).status, 200);
    // Removal needs a code.
    assert.equal((await c.delete('/api/mfa/totp', { code: '12345' })).status, 401);
    await awayFromStepEdge();
    assert.equal((await c.delete('/api/mfa/totp', { code: totpAt(secret, stepNow() + 1) })).status, 204);
    assert.equal((await c.get('/api/mfa')).body.totp.enrolled, false);
    assert.equal((await new ConsoleClient(r.port).login('bruno')).body.stage, 'full');
    // Enrol again; the owner resets it: the admin's sessions end, the next sign-in asks for no code.
    await enrol(c);
    const owner = new ConsoleClient(r.port);
    assert.equal((await owner.login('oona')).body.stage, 'full');
    const admins = await owner.get('/api/admins');
    assert.equal(admins.body.admins.find((a: { name: string }) => a.name === 'bruno').mfa.totp, true);
    const reset = await owner.post('/api/admins/bruno/reset-mfa');
    assert.equal(reset.status, 200, reset.text);
    assert.equal(reset.body.totp, true);
    assert.equal(reset.body.passkeys, 0);
    assert.equal((await c.get('/api/session')).status, 401, 'the admin\'s sessions ended');
    assert.equal((await new ConsoleClient(r.port).login('bruno')).body.stage, 'full');
    assert.equal((await owner.post('/api/admins/nobody/reset-mfa')).status, 404);
    const operator = new ConsoleClient(r.port);
    await operator.login('tess');
    assert.equal((await operator.post('/api/admins/bruno/reset-mfa')).status, 403, 'owners only');
    const resets = await audit(r.stateDir, 'mfa.reset');
    assert.ok(resets.some((e) => e.actor === 'oona' && e.target === 'bruno' && e.outcome === 'ok'));
  });
});

describe('console TOTP: enrolment required by the policy', { timeout: 120000 }, () => {
  let r: ConsoleHerald;

  before(async () => {
    r = await startConsoleHerald({ mfa: { require: ['owner'] }, login: { addressDelayAfter: 1000, addressLockAfter: 10000 } });
    await createAdmin(r.stateDir, 'olive', 'owner');
  });
  after(() => r.close());

  test('an owner without TOTP is on an enrol session; completing enrolment makes a full session with a new id; next time the code is asked', async () => {
    const c = new ConsoleClient(r.port);
    assert.equal((await c.login('olive')).body.stage, 'enrol');
    assert.equal((await c.post('/api/login/totp', { code: '123456' })).body.error?.code, 'mfa_required', 'an enrol session has no second factor to give');
    const enrolId = c.cookie;
    const { secret, confirmed } = await enrol(c);
    assert.equal(confirmed.body.stage, 'full');
    assert.deepEqual(confirmed.body.methods, ['password', 'totp']);
    assert.notEqual(c.cookie, enrolId);
    const old = new ConsoleClient(r.port);
    old.cookie = enrolId;
    assert.equal((await old.get('/api/session')).status, 401);
    assert.equal((await c.get('/api/admins')).status, 200);
    const next = new ConsoleClient(r.port);
    assert.equal((await next.login('olive')).body.stage, 'second_factor');
    assert.equal((await next.step('/api/login/totp', { code: totpAt(secret, stepNow()) })).body.stage, 'full');
  });
});
