/**
 * OIDC sign-in rules without a provider (console/oidc.ts): the start-time
 * checks of each provider's config, the claim → role rules (first match;
 * emails only when verified; groups), the names made at a first sign-in,
 * and when `amr` stands for the second factor.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig } from '../../src/config/load.ts';
import type { Config, OidcProviderConfig } from '../../src/config/schema.ts';
import { adminNameCandidates, mapRole, mfaAsserted, prepareOidcProviders } from '../../src/console/oidc.ts';
import { ADMIN_NAME_PATTERN } from '../../src/console/admin-store.ts';

function config(providers: Record<string, unknown>[], admin: Record<string, unknown> = {}): Config {
  const console = (admin['console'] ?? {}) as Record<string, unknown>;
  return buildConfig({ admin: { ...admin, console: { ...console, oidc: { providers } } } }, { env: {} });
}

const base = { id: 'corp', label: 'Corp', issuer: 'https://login.example.com', clientId: 'herald', clientSecretEnv: 'OIDC_SECRET', roles: [{ emailDomain: 'example.com', role: 'viewer' }] };

function problems(providers: Record<string, unknown>[], env: Record<string, string> = { OIDC_SECRET: 's3cret' }, admin: Record<string, unknown> = {}): string[] {
  const found: string[] = [];
  prepareOidcProviders(config(providers, admin), env, found);
  return found;
}

describe('OIDC provider config at start', () => {
  it('a valid provider passes; its secret is read from the environment or a file, never echoed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-oidc-unit-'));
    try {
      const file = join(dir, 'secret');
      writeFileSync(file, 'from-a-file\n');
      const found: string[] = [];
      const prepared = prepareOidcProviders(config([base, { ...base, id: 'other', clientSecretEnv: undefined, clientSecretFile: file }]), { OIDC_SECRET: 'from-env' }, found);
      assert.deepEqual(found, []);
      assert.deepEqual(prepared.map((p) => p.clientSecret), ['from-env', 'from-a-file']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses plain http off loopback, and on loopback unless allowed', () => {
    assert.match(problems([{ ...base, issuer: 'http://login.example.com' }]).join('\n'), /issuer: plain http to a host that is not loopback/);
    assert.match(problems([{ ...base, issuer: 'http://127.0.0.1:9000' }]).join('\n'), /issuer: plain http \(set allowPlainHttpLoopback/);
    assert.deepEqual(problems([{ ...base, issuer: 'http://127.0.0.1:9000', allowPlainHttpLoopback: true }]), []);
    assert.match(problems([{ ...base, issuer: 'http://10.0.0.1', allowPlainHttpLoopback: true }]).join('\n'), /not loopback/);
  });

  it('refuses a missing secret, both secret sources, a rule with two matchers or none, scopes without openid, one id twice', () => {
    assert.match(problems([base], {}).join('\n'), /clientSecretEnv: the environment variable OIDC_SECRET is not set/);
    assert.match(problems([{ ...base, clientSecretFile: '/nonexistent/secret' }]).join('\n'), /set exactly one of clientSecretFile and clientSecretEnv/);
    assert.match(problems([{ ...base, clientSecretEnv: undefined, clientSecretFile: '/nonexistent/secret' }]).join('\n'), /clientSecretFile: cannot read/);
    assert.match(problems([{ ...base, roles: [{ emailDomain: 'example.com', group: 'admins', role: 'owner' }] }]).join('\n'), /roles\/0: give exactly one .* \(this rule has 2\)/);
    assert.match(problems([{ ...base, roles: [{ role: 'owner' }] }]).join('\n'), /roles\/0: give exactly one .* \(this rule has 0\)/);
    assert.match(problems([{ ...base, scopes: ['email'] }]).join('\n'), /scopes: must include "openid"/);
    assert.match(problems([base, base]).join('\n'), /id: "corp" is used by another provider/);
  });

  it('the secret is never inline: the schema has no field for it', () => {
    assert.throws(() => config([{ ...base, clientSecret: 'inline' }]), /clientSecret/);
  });

  it('needs admin.console.origin off loopback (the redirect URL is made from it)', () => {
    assert.match(problems([base], { OIDC_SECRET: 'x' }, { host: '0.0.0.0' }).join('\n'), /\/admin\/console\/origin: OIDC sign-in needs the console's origin/);
    assert.deepEqual(problems([base], { OIDC_SECRET: 'x' }, { host: '0.0.0.0', console: { origin: 'https://herald-admin.example.com' } }), []);
  });
});

describe('OIDC claims → role', () => {
  const provider = config([
    {
      ...base,
      roles: [
        { subject: 'root-sub', role: 'owner' },
        { email: 'Boss@Example.com', role: 'owner' },
        { group: 'ops', role: 'operator' },
        { emailDomain: 'example.com', role: 'viewer' },
      ],
    },
  ]).admin.console.oidc.providers[0]! as OidcProviderConfig;

  it('the first rule that matches gives the role; none: undefined', () => {
    assert.equal(mapRole(provider, { sub: 'root-sub' }), 'owner');
    assert.equal(mapRole(provider, { sub: 'x', email: 'boss@example.com', email_verified: true, groups: ['ops'] }), 'owner', 'email (case-insensitive) before group');
    assert.equal(mapRole(provider, { sub: 'x', email: 'ann@example.com', email_verified: true, groups: ['ops'] }), 'operator', 'group before domain');
    assert.equal(mapRole(provider, { sub: 'x', email: 'ann@example.com', email_verified: true }), 'viewer');
    assert.equal(mapRole(provider, { sub: 'x', email: 'ann@evil.test', email_verified: true }), undefined);
    assert.equal(mapRole(provider, { sub: 'x', groups: 'ops' }), 'operator', 'a single string groups claim');
  });

  it('email rules need email_verified: true; a subdomain or a look-alike is not the domain', () => {
    assert.equal(mapRole(provider, { sub: 'x', email: 'ann@example.com' }), undefined);
    assert.equal(mapRole(provider, { sub: 'x', email: 'ann@example.com', email_verified: 'true' }), undefined);
    assert.equal(mapRole(provider, { sub: 'x', email: 'ann@sub.example.com', email_verified: true }), undefined);
    assert.equal(mapRole(provider, { sub: 'x', email: 'ann@evilexample.com', email_verified: true }), undefined);
    assert.equal(mapRole(provider, { sub: 'x', email: 'ann@example.com.evil.test', email_verified: true }), undefined);
    assert.equal(mapRole({ ...provider, requireVerifiedEmail: false }, { sub: 'x', email: 'ann@example.com' }), 'viewer');
  });

  it('amr counts for MFA only when the provider is trusted and lists one of mfaAmrValues', () => {
    assert.equal(mfaAsserted(provider, { amr: ['pwd', 'mfa'] }), false, 'not trusted');
    const trusted = { ...provider, trustAmrForMfa: true };
    assert.equal(mfaAsserted(trusted, { amr: ['pwd', 'mfa'] }), true);
    assert.equal(mfaAsserted(trusted, { amr: ['pwd'] }), false);
    assert.equal(mfaAsserted(trusted, { amr: 'mfa' }), false, 'amr is an array');
    assert.equal(mfaAsserted(trusted, {}), false);
  });

  it('names made at a first sign-in are valid admin names, with the provider id when taken, never empty', () => {
    assert.deepEqual(adminNameCandidates(provider, { sub: 's', email: 'ann@example.com' }).slice(0, 3), ['ann@example.com', 'ann@example.com.corp', 'ann@example.com.corp-2']);
    const odd = adminNameCandidates(provider, { sub: 's', email: '+++ann smith+tag@example.com' });
    assert.equal(odd[0], 'ann-smith-tag@example.com');
    const none = adminNameCandidates(provider, { sub: 'subject-1' });
    assert.match(none[0]!, /^subject-1$/);
    const empty = adminNameCandidates(provider, { sub: '---', email: '' });
    assert.match(empty[0]!, /^corp-[0-9a-f]{16}$/);
    for (const name of [...odd, ...none, ...empty, ...adminNameCandidates(provider, { sub: 's', email: 'a'.repeat(200) + '@example.com' })]) {
      assert.match(name, ADMIN_NAME_PATTERN);
    }
  });
});
