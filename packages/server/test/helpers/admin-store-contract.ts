/**
 * The console store contract (console/admin-store.ts), one suite for every
 * store: admins (first one an owner, atomically), sessions (idle and
 * absolute expiry, disabled admins, deletion per admin), TOTP and recovery
 * codes, the limiter's counters (delay, lock, window, parallel attempts
 * counted atomically), the audit log (filters, paging, retention),
 * passkeys and their challenges, OIDC links and pending sign-ins.
 * test/unit/admin-store-contract.test.ts runs it on memory, the sqlite
 * state file and Redis; test/redis/tls-acl.test.ts on Redis as the ACL
 * user of docs/operations.md.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PARTIAL_SESSION_MS, type AdminStore, type LimiterPolicy, type PasskeyChallenge, type PasskeyRecord, type SessionRecord, type SessionStage } from '../../src/console/admin-store.ts';

/** A store to test, fresh (empty) for each test, and how to dispose of it. */
export interface AdminStoreHarness {
  readonly store: AdminStore;
  close(): Promise<void>;
}

const HASH = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g';
const policy = { idleMs: 1000, absoluteMs: 5000, touchAfterMs: 100 };
const limit: LimiterPolicy = { delayAfter: 3, baseDelayMs: 1000, maxDelayMs: 4000, lockAfter: 5, lockMs: 60_000, windowMs: 30_000 };

function session(admin: string, now: number, id = randomBytes(32).toString('hex'), stage: SessionStage = 'full'): SessionRecord {
  return { idHash: id, admin, createdAt: now, lastSeenAt: now, csrfSecret: 'secret', address: '127.0.0.1', stage, methods: ['password'] };
}

/** Registers the contract's suite, `open` making a fresh store for each test. */
export function adminStoreContract(name: string, open: () => Promise<AdminStoreHarness>): void {
  describe(`console store contract: ${name}`, { timeout: 30000 }, () => {
    const withStore = (run: (store: AdminStore) => Promise<void>) => async () => {
      const h = await open();
      try {
        await run(h.store);
      } finally {
        await h.close();
      }
    };

    test(
      'admins: the first is an owner (one of many created at once), names are unique, changes apply',
      withStore(async (store) => {
        const now = Date.now();
        const created = await Promise.all(['b', 'a', 'c', 'd'].map((n) => store.createAdmin({ name: n, role: 'viewer', passwordHash: HASH, now })));
        assert.equal(created.filter((a) => a?.role === 'owner').length, 1);
        assert.equal(created.filter((a) => a?.role === 'viewer').length, 3);
        assert.equal(await store.createAdmin({ name: 'a', role: 'viewer', passwordHash: HASH, now }), undefined);
        assert.deepEqual(
          (await store.listAdmins()).map((a) => a.name),
          ['a', 'b', 'c', 'd'],
        );
        const changed = await store.updateAdmin('c', { role: 'operator', disabled: true }, now + 5);
        assert.equal(changed?.role, 'operator');
        assert.equal(changed?.disabled, true);
        assert.equal(changed?.passwordHash, HASH);
        const got = await store.getAdmin('c');
        assert.deepEqual({ role: got?.role, disabled: got?.disabled, updatedAt: got?.updatedAt, createdAt: got?.createdAt }, { role: 'operator', disabled: true, updatedAt: now + 5, createdAt: now });
        assert.equal(await store.updateAdmin('nobody', { disabled: true }, now), undefined);
        assert.equal(await store.getAdmin('nobody'), undefined);
      }),
    );

    test(
      'sessions: valid until idle or absolute expiry, touched sparingly, gone with a disabled admin, deleted per admin',
      withStore(async (store) => {
        const t = Date.now();
        await store.createAdmin({ name: 'ann', role: 'owner', passwordHash: HASH, now: t });
        await store.createAdmin({ name: 'bob', role: 'viewer', passwordHash: HASH, now: t });
        const s = session('ann', t);
        await store.createSession(s, policy.absoluteMs);
        let r = await store.resolveSession(s.idHash, t + 50, policy);
        assert.equal(r.state, 'valid');
        assert.equal(r.state === 'valid' && r.session.lastSeenAt, t, 'not touched within touchAfterMs');
        assert.equal(r.state === 'valid' && r.admin.role, 'owner');
        r = await store.resolveSession(s.idHash, t + 900, policy);
        assert.equal(r.state === 'valid' && r.session.lastSeenAt, t + 900);
        // Kept alive by use past one idle period, then the absolute lifetime ends it.
        for (let at = t + 1800; at < t + 5000; at += 900) assert.equal((await store.resolveSession(s.idHash, at, policy)).state, 'valid', `at +${at - t}`);
        assert.equal((await store.resolveSession(s.idHash, t + 5000, policy)).state, 'invalid');
        assert.equal((await store.resolveSession(s.idHash, t + 100, policy)).state, 'invalid', 'an expired session is deleted');
        // Idle expiry.
        const idle = session('ann', t);
        await store.createSession(idle, policy.absoluteMs);
        assert.equal((await store.resolveSession(idle.idHash, t + 1000, policy)).state, 'invalid');
        // Disabled admin.
        const bobs = [session('bob', t), session('bob', t), session('bob', t)];
        for (const b of bobs) await store.createSession(b, policy.absoluteMs);
        assert.equal(await store.countSessions('bob', t + 10, policy), 3);
        await store.updateAdmin('bob', { disabled: true }, t);
        assert.equal((await store.resolveSession(bobs[0]!.idHash, t + 10, policy)).state, 'invalid');
        await store.updateAdmin('bob', { disabled: false }, t);
        assert.equal((await store.resolveSession(bobs[1]!.idHash, t + 10, policy)).state, 'valid');
        assert.equal(await store.deleteSessionsOf('bob'), 2);
        assert.equal((await store.resolveSession(bobs[2]!.idHash, t + 10, policy)).state, 'invalid');
        assert.equal(await store.countSessions('bob', t + 10, policy), 0);
        const one = session('ann', t);
        await store.createSession(one, policy.absoluteMs);
        await store.deleteSession(one.idHash);
        assert.equal((await store.resolveSession(one.idHash, t + 10, policy)).state, 'invalid');
        assert.equal((await store.resolveSession('f'.repeat(64), t, policy)).state, 'invalid');
      }),
    );

    test(
      'sessions: stage and methods are kept; a partial session ends PARTIAL_SESSION_MS after it began, a full one does not',
      withStore(async (store) => {
        const t = Date.now();
        await store.createAdmin({ name: 'ann', role: 'owner', passwordHash: HASH, now: t });
        const long = { idleMs: 60 * 60_000, absoluteMs: 12 * 60 * 60_000, touchAfterMs: 1000 };
        const full = session('ann', t);
        const second = { ...session('ann', t, undefined, 'second_factor'), methods: ['password'] };
        const enrol = { ...session('ann', t, undefined, 'enrol'), methods: ['oidc'] };
        for (const s of [full, second, enrol]) await store.createSession(s, long.absoluteMs);
        const r = await store.resolveSession(second.idHash, t + 10, long);
        assert.equal(r.state === 'valid' && r.session.stage, 'second_factor');
        assert.deepEqual(r.state === 'valid' && r.session.methods, ['password']);
        const e = await store.resolveSession(enrol.idHash, t + 10, long);
        assert.equal(e.state === 'valid' && e.session.stage, 'enrol');
        assert.deepEqual(e.state === 'valid' && e.session.methods, ['oidc']);
        assert.equal(await store.countSessions('ann', t + PARTIAL_SESSION_MS, long), 1, 'only the full session counts past the partial limit');
        assert.equal((await store.resolveSession(second.idHash, t + PARTIAL_SESSION_MS, long)).state, 'invalid');
        assert.equal((await store.resolveSession(enrol.idHash, t + PARTIAL_SESSION_MS, long)).state, 'invalid');
        assert.equal((await store.resolveSession(enrol.idHash, t + 10, long)).state, 'invalid', 'an expired partial session is deleted');
        const f = await store.resolveSession(full.idHash, t + PARTIAL_SESSION_MS, long);
        assert.equal(f.state === 'valid' && f.session.stage, 'full');
      }),
    );

    test(
      'TOTP: pending until confirmed with the same secret; steps only forward, one winner at once; recovery codes once each; delete',
      withStore(async (store) => {
        const t = Date.now();
        assert.equal(await store.getTotp('ann'), undefined);
        assert.equal(await store.beginTotp('ann', 'SECRETA', t), true);
        assert.deepEqual(await store.getTotp('ann'), { admin: 'ann', secret: 'SECRETA', createdAt: t, confirmedAt: 0, lastStep: 0 });
        assert.equal(await store.acceptTotpStep('ann', 5), false, 'a pending secret takes no steps');
        assert.equal(await store.beginTotp('ann', 'SECRETB', t + 1), true, 'a new start replaces a pending secret');
        assert.equal(await store.confirmTotp('ann', 'SECRETA', 10, ['h1'], t + 2), false, 'the replaced secret does not confirm');
        assert.equal(await store.confirmTotp('ann', 'SECRETB', 10, ['h1', 'h2', 'h3'], t + 2), true);
        assert.equal(await store.confirmTotp('ann', 'SECRETB', 11, ['h9'], t + 3), false, 'confirmed once');
        assert.deepEqual(await store.getTotp('ann'), { admin: 'ann', secret: 'SECRETB', createdAt: t + 1, confirmedAt: t + 2, lastStep: 10 });
        assert.equal(await store.beginTotp('ann', 'SECRETC', t + 4), false, 'a confirmed secret is not replaced');
        assert.equal(await store.acceptTotpStep('ann', 10), false, 'the step of the confirming code');
        assert.equal(await store.acceptTotpStep('ann', 9), false);
        const racing = await Promise.all([11, 11, 11, 11].map((step) => store.acceptTotpStep('ann', step)));
        assert.equal(racing.filter(Boolean).length, 1, 'one of four concurrent uses of a step wins');
        assert.equal((await store.getTotp('ann'))?.lastStep, 11);
        assert.equal(await store.acceptTotpStep('ann', 13), true);
        assert.equal(await store.countRecoveryCodes('ann'), 3);
        const uses = await Promise.all(['h2', 'h2', 'h2'].map((h) => store.useRecoveryCode('ann', h, t + 5)));
        assert.equal(uses.filter(Boolean).length, 1, 'a code works once, even at once');
        assert.equal(await store.useRecoveryCode('ann', 'nope', t + 5), false);
        assert.equal(await store.useRecoveryCode('bob', 'h1', t + 5), false, 'another admin\'s code');
        assert.equal(await store.countRecoveryCodes('ann'), 2);
        assert.equal(await store.deleteTotp('ann'), true);
        assert.equal(await store.getTotp('ann'), undefined);
        assert.equal(await store.countRecoveryCodes('ann'), 0);
        assert.equal(await store.useRecoveryCode('ann', 'h1', t + 6), false);
        assert.equal(await store.deleteTotp('ann'), false);
        assert.equal(await store.beginTotp('ann', 'SECRETD', t + 7), true, 'after deletion a new enrolment starts');
      }),
    );

    test(
      'limiter: progressive delay, lock, window; a refused attempt counts nothing; clear and forgive',
      withStore(async (store) => {
        const t = 1_800_000_000_000;
        const checks = [{ key: 'account:x', policy: limit }];
        for (let i = 1; i <= 2; i++) assert.deepEqual(await store.attempt(checks, t), { allowed: true, retryAfterMs: 0, lockedNow: [] });
        assert.equal((await store.attempt(checks, t)).allowed, true); // third: the delay starts (1 s)
        assert.deepEqual(await store.attempt(checks, t + 500), { allowed: false, retryAfterMs: 500, lockedNow: [] });
        assert.equal((await store.getCounter('account:x'))?.failures, 3);
        assert.equal((await store.attempt(checks, t + 1000)).allowed, true); // fourth: 2 s
        assert.equal((await store.attempt(checks, t + 2999)).allowed, false);
        const fifth = await store.attempt(checks, t + 3000);
        assert.deepEqual(fifth, { allowed: true, retryAfterMs: 0, lockedNow: ['account:x'] });
        const locked = await store.attempt(checks, t + 10_000);
        assert.equal(locked.allowed, false);
        assert.equal(locked.retryAfterMs, 53_000);
        // The lock over, counting starts again.
        assert.equal((await store.attempt(checks, t + 63_000)).allowed, true);
        assert.equal((await store.getCounter('account:x'))?.failures, 1);
        // Failures older than the window are forgotten.
        assert.equal((await store.attempt(checks, t + 63_000 + 30_001)).allowed, true);
        assert.equal((await store.getCounter('account:x'))?.failures, 1);
        await store.clearAttempts('account:x');
        assert.equal(await store.getCounter('account:x'), undefined);
        // forgive takes back one count and its delay.
        const addr = [{ key: 'address:1.2.3.4', policy: limit }];
        for (let i = 0; i < 3; i++) await store.attempt(addr, t);
        await store.forgiveAttempt('address:1.2.3.4');
        const forgiven = await store.getCounter('address:1.2.3.4');
        assert.equal(forgiven?.failures, 2);
        assert.equal((await store.attempt(addr, t + 1)).allowed, true);
        // Two keys: one waiting refuses both, counting neither.
        const both = [...checks, ...addr];
        const before = (await store.getCounter('address:1.2.3.4'))?.failures;
        await store.attempt(checks, t);
        await store.attempt(checks, t);
        await store.attempt(checks, t);
        assert.equal((await store.attempt(both, t + 1)).allowed, false);
        assert.equal((await store.getCounter('address:1.2.3.4'))?.failures, before);
      }),
    );

    test(
      'limiter: fifty attempts at once, exactly delayAfter pass',
      withStore(async (store) => {
        const t = 1_800_000_000_000;
        const verdicts = await Promise.all(Array.from({ length: 50 }, () => store.attempt([{ key: 'account:flood', policy: limit }], t)));
        assert.equal(verdicts.filter((v) => v.allowed).length, 3);
        assert.equal((await store.getCounter('account:flood'))?.failures, 3);
      }),
    );

    test(
      'audit: newest first, filters, paging, retention sweep',
      withStore(async (store) => {
        const t = Date.now();
        for (let i = 0; i < 30; i++) {
          await store.appendAudit({ actor: i % 2 === 0 ? 'ann' : 'bob', action: i % 3 === 0 ? 'console.login' : 'key.create', outcome: 'ok', target: `t${i}`, address: '127.0.0.1', detail: { i } }, t);
        }
        const all = await store.queryAudit({ limit: 1000 });
        assert.equal(all.length, 30);
        assert.deepEqual(all[0]?.detail, { i: 29 });
        assert.equal(all[0]?.target, 't29');
        assert.equal((await store.queryAudit({ actor: 'ann', limit: 1000 })).length, 15);
        assert.equal((await store.queryAudit({ action: 'console.login', limit: 1000 })).length, 10);
        assert.equal((await store.queryAudit({ actor: 'bob', action: 'console.login', limit: 1000 })).length, 5);
        assert.equal((await store.queryAudit({ since: t - 60_000, limit: 1000 })).length, 30);
        assert.equal((await store.queryAudit({ until: t - 60_000, limit: 1000 })).length, 0);
        const page1 = await store.queryAudit({ limit: 10 });
        const page2 = await store.queryAudit({ limit: 10, before: page1.at(-1)!.id });
        assert.deepEqual(page2.map((e) => e.detail?.['i']), [19, 18, 17, 16, 15, 14, 13, 12, 11, 10]);
        await store.sweep(t + 1000, { sessions: policy, auditRetentionMs: 60_000, limiterWindowMs: 30_000 });
        assert.equal((await store.queryAudit({ limit: 1000 })).length, 30);
        await store.sweep(t + 3_600_000, { sessions: policy, auditRetentionMs: 60_000, limiterWindowMs: 30_000 });
        assert.equal((await store.queryAudit({ limit: 1000 })).length, 0);
      }),
    );

    // Passkeys
    test(
      'passkeys: unique credential ids, listed per admin oldest first, renamed and removed only by their admin',
      withStore(async (store) => {
        const t = Date.now();
        const key = (id: string, admin: string, at: number): PasskeyRecord => ({
          id,
          admin,
          publicKey: 'pQECAyYgASFYIA',
          counter: 0,
          transports: ['internal', 'hybrid'],
          name: `key ${id}`,
          userHandle: `handle-${admin}`,
          createdAt: at,
          lastUsedAt: null,
        });
        assert.equal(await store.addPasskey(key('cred-b', 'ann', t + 1)), true);
        assert.equal(await store.addPasskey(key('cred-a', 'ann', t)), true);
        assert.equal(await store.addPasskey(key('cred-c', 'bob', t)), true);
        assert.equal(await store.addPasskey(key('cred-a', 'bob', t)), false, 'a credential id is stored once, whoever asks');
        assert.deepEqual((await store.listPasskeys('ann')).map((p) => p.id), ['cred-a', 'cred-b']);
        assert.deepEqual(await store.getPasskey('cred-b'), key('cred-b', 'ann', t + 1));
        assert.equal(await store.getPasskey('nope'), undefined);
        assert.equal(await store.countPasskeys('ann'), 2);
        assert.equal(await store.countPasskeys('carl'), 0);
        assert.equal(await store.renamePasskey('bob', 'cred-a', 'stolen'), false, 'another admin cannot rename it');
        assert.equal(await store.renamePasskey('ann', 'cred-a', 'laptop'), true);
        assert.equal((await store.getPasskey('cred-a'))?.name, 'laptop');
        assert.equal(await store.deletePasskey('bob', 'cred-a'), false, 'another admin cannot remove it');
        assert.equal(await store.deletePasskey('ann', 'cred-a'), true);
        assert.equal(await store.deletePasskey('ann', 'cred-a'), false);
        assert.deepEqual((await store.listPasskeys('ann')).map((p) => p.id), ['cred-b']);
        assert.equal(await store.usePasskey('cred-a', 1, t), false, 'a removed passkey is not used');
      }),
    );

    test(
      'passkeys: the counter moves forward only (zero stays allowed for authenticators that keep none)',
      withStore(async (store) => {
        const t = Date.now();
        const base = { admin: 'ann', publicKey: 'pQ', transports: [], name: 'k', userHandle: 'h', createdAt: t, lastUsedAt: null };
        await store.addPasskey({ ...base, id: 'counting', counter: 5 });
        await store.addPasskey({ ...base, id: 'zero', counter: 0 });
        assert.equal(await store.usePasskey('counting', 5, t + 1), false, 'the same counter again');
        assert.equal(await store.usePasskey('counting', 4, t + 1), false, 'a counter going back');
        assert.equal(await store.usePasskey('counting', 0, t + 1), false, 'a counter reset to zero');
        assert.equal((await store.getPasskey('counting'))?.lastUsedAt, null, 'a refused use changes nothing');
        assert.equal(await store.usePasskey('counting', 6, t + 2), true);
        assert.deepEqual([(await store.getPasskey('counting'))?.counter, (await store.getPasskey('counting'))?.lastUsedAt], [6, t + 2]);
        assert.equal(await store.usePasskey('zero', 0, t + 3), true);
        assert.equal(await store.usePasskey('zero', 0, t + 4), true);
        assert.equal((await store.getPasskey('zero'))?.lastUsedAt, t + 4);
        const uses = await Promise.all(Array.from({ length: 20 }, () => store.usePasskey('counting', 7, t + 5)));
        assert.equal(uses.filter(Boolean).length, 1, 'one of twenty uses with the same counter passes');
      }),
    );

    test(
      'passkey challenges: taken once (ten takes at once: one gets it), replaced per key, expiry left to the caller',
      withStore(async (store) => {
        const t = Date.now();
        const challenge = (key: string, value: string, expiresAt: number): PasskeyChallenge => ({ key, purpose: 'login', challenge: value, admin: null, userHandle: null, expiresAt });
        await store.putPasskeyChallenge(challenge('k1', 'first', t + 60_000), t);
        await store.putPasskeyChallenge(challenge('k1', 'second', t + 60_000), t);
        await store.putPasskeyChallenge({ key: 'k2', purpose: 'register', challenge: 'reg', admin: 'ann', userHandle: 'aGFuZGxl', expiresAt: t + 60_000 }, t);
        const takes = await Promise.all(Array.from({ length: 10 }, () => store.takePasskeyChallenge('k1')));
        assert.deepEqual(
          takes.filter((c) => c !== undefined),
          [challenge('k1', 'second', t + 60_000)],
          'ten takes at once: one gets the newest challenge',
        );
        assert.equal(await store.takePasskeyChallenge('k1'), undefined);
        assert.deepEqual(await store.takePasskeyChallenge('k2'), { key: 'k2', purpose: 'register', challenge: 'reg', admin: 'ann', userHandle: 'aGFuZGxl', expiresAt: t + 60_000 });
        await store.putPasskeyChallenge(challenge('old', 'x', t + 1000), t);
        assert.equal((await store.takePasskeyChallenge('old'))?.expiresAt, t + 1000, 'taken as it is; the caller checks the expiry');
      }),
    );

    // OIDC identities
    test(
      'OIDC: an admin made with its link gets exactly the role given (never the first-owner rule), no password; a taken name or a linked subject makes nothing',
      withStore(async (store) => {
        const t = Date.now();
        const made = await store.createOidcAdmin({ name: 'ann@example.com', role: 'viewer', provider: 'corp', subject: 'sub:1', now: t });
        assert.equal(made?.role, 'viewer', 'the first admin of the store stays a viewer');
        assert.equal((await store.getAdmin('ann@example.com'))?.role, 'viewer');
        assert.equal((await store.getAdmin('ann@example.com'))?.passwordHash, '');
        assert.deepEqual(await store.getOidcLink('corp', 'sub:1'), { provider: 'corp', subject: 'sub:1', admin: 'ann@example.com', createdAt: t });
        assert.equal(await store.getOidcLink('other', 'sub:1'), undefined, 'links are per provider');
        assert.equal(await store.createOidcAdmin({ name: 'ann@example.com', role: 'owner', provider: 'corp', subject: 'sub:2', now: t }), undefined, 'name taken');
        assert.equal(await store.createOidcAdmin({ name: 'ann2', role: 'owner', provider: 'corp', subject: 'sub:1', now: t }), undefined, 'subject linked');
        assert.equal(await store.getAdmin('ann2'), undefined);
        assert.deepEqual((await store.oidcLinksOf('ann@example.com')).map((l) => `${l.provider}/${l.subject}`), ['corp/sub:1']);
        assert.deepEqual(await store.oidcLinksOf('nobody'), []);
      }),
    );

    test(
      'OIDC: a pending sign-in is taken once; an expired one is not answered',
      withStore(async (store) => {
        const t = Date.now();
        const flow = { stateHash: 'a'.repeat(64), provider: 'corp', nonce: 'n', codeVerifier: 'v', bindingHash: 'b'.repeat(64), expiresAt: t + 60_000 };
        assert.equal(await store.putOidcFlow(flow, t, 10), true);
        const taken = await Promise.all([store.takeOidcFlow(flow.stateHash, t), store.takeOidcFlow(flow.stateHash, t)]);
        assert.deepEqual(taken.filter((f) => f !== undefined), [flow], 'exactly one of two concurrent takes gets it');
        assert.equal(await store.takeOidcFlow(flow.stateHash, t), undefined);
        assert.equal(await store.putOidcFlow({ ...flow, stateHash: 'c'.repeat(64) }, t, 10), true);
        assert.equal(await store.takeOidcFlow('c'.repeat(64), t + 60_000), undefined, 'expired');
        assert.equal(await store.takeOidcFlow('c'.repeat(64), t), undefined, 'and gone');
      }),
    );

    test(
      'OIDC: at most `max` pending sign-ins; a full store refuses new ones, keeps the pending ones, and makes room as they are taken or expire',
      withStore(async (store) => {
        const t = Date.now();
        const flow = (n: number, expiresAt = t + 60_000) => ({ stateHash: n.toString(16).padStart(64, '0'), provider: 'corp', nonce: 'n', codeVerifier: 'v', bindingHash: 'b'.repeat(64), expiresAt });
        const kept = await Promise.all([1, 2, 3, 4, 5].map((n) => store.putOidcFlow(flow(n, n === 1 ? t + 1000 : t + 60_000), t, 3)));
        assert.equal(kept.filter(Boolean).length, 3, 'three of five concurrent starts kept');
        const first = kept.indexOf(true) + 1;
        assert.deepEqual(await store.takeOidcFlow(flow(first).stateHash, t), { ...flow(first), expiresAt: first === 1 ? t + 1000 : t + 60_000 }, 'a pending one completes');
        assert.equal(await store.putOidcFlow(flow(6), t, 3), true, 'room again after a take');
        assert.equal(await store.putOidcFlow(flow(7), t, 3), false, 'full again');
        // Flow 1 (if kept and not taken) expires at t + 1000: then it no longer counts.
        const oneLeft = first !== 1 && kept[0] === true;
        assert.equal(await store.putOidcFlow(flow(8), t + 2000, 3), oneLeft, 'an expired one makes room');
      }),
    );
  });
}
