/**
 * Token verification with an injected clock (SECURITY-TESTS C14, C15):
 * leeway is honoured exactly, forged tokens are refused with the invalid
 * kind, and the two token types cannot stand in for each other.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, exportSPKI, generateKeyPair, base64url } from 'jose';
import { createJwtVerifier, TokenError, type TokenVerifier } from '../../src/auth/jwt.ts';

const secret = 'unit-test-secret-unit-test-secret-0123456789';
const key = new TextEncoder().encode(secret);
const T = 1_900_000_000; // seconds

async function hs(claims: Record<string, unknown>, alg = 'HS256', header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg, ...header }).sign(alg === 'HS256' ? key : new TextEncoder().encode(secret));
}

async function kindOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (error) {
    assert.ok(error instanceof TokenError, `expected TokenError, got ${String(error)}`);
    return error.kind;
  }
}

function verifierAt(nowMs: number, extra: Record<string, unknown> = {}): Promise<TokenVerifier> {
  return createJwtVerifier({ algorithms: ['HS256'], hmacSecret: secret, leewayMs: 5000, now: () => nowMs, ...extra });
}

describe('leeway with an injected clock', () => {
  it('exp: valid until exp + leeway, expired from then on', async () => {
    const token = await hs({ sub: 'u', exp: T });
    assert.equal(await kindOf((await verifierAt(T * 1000 - 1)).verifyConnectionToken(token)), 'ok');
    assert.equal(await kindOf((await verifierAt(T * 1000 + 4999)).verifyConnectionToken(token)), 'ok');
    assert.equal(await kindOf((await verifierAt(T * 1000 + 5000)).verifyConnectionToken(token)), 'expired');
    assert.equal(await kindOf((await verifierAt(T * 1000 + 60000)).verifyConnectionToken(token)), 'expired');
  });

  it('nbf: refused before nbf - leeway, accepted from then on', async () => {
    const token = await hs({ sub: 'u', nbf: T });
    assert.equal(await kindOf((await verifierAt(T * 1000 - 6000)).verifyConnectionToken(token)), 'invalid');
    assert.equal(await kindOf((await verifierAt(T * 1000 - 5000)).verifyConnectionToken(token)), 'ok');
    assert.equal(await kindOf((await verifierAt(T * 1000)).verifyConnectionToken(token)), 'ok');
  });

  it('zero leeway is exact to the second', async () => {
    const token = await hs({ sub: 'u', exp: T });
    const at = (ms: number) => createJwtVerifier({ algorithms: ['HS256'], hmacSecret: secret, leewayMs: 0, now: () => ms });
    assert.equal(await kindOf((await at(T * 1000 - 1)).verifyConnectionToken(token)), 'ok');
    assert.equal(await kindOf((await at(T * 1000)).verifyConnectionToken(token)), 'expired');
  });
});

describe('claims', () => {
  it('aud and iss are checked when configured', async () => {
    const v = await verifierAt(T * 1000, { audience: 'app', issuer: 'https://issuer.example' });
    assert.equal(await kindOf(v.verifyConnectionToken(await hs({ sub: 'u', aud: 'app', iss: 'https://issuer.example' }))), 'ok');
    assert.equal(await kindOf(v.verifyConnectionToken(await hs({ sub: 'u', aud: 'other', iss: 'https://issuer.example' }))), 'invalid');
    assert.equal(await kindOf(v.verifyConnectionToken(await hs({ sub: 'u', aud: 'app', iss: 'https://evil.example' }))), 'invalid');
    assert.equal(await kindOf(v.verifyConnectionToken(await hs({ sub: 'u' }))), 'invalid');
  });

  it('sub is required and must be a string', async () => {
    const v = await verifierAt(T * 1000);
    assert.equal(await kindOf(v.verifyConnectionToken(await hs({}))), 'invalid');
    assert.equal(await kindOf(v.verifyConnectionToken(await hs({ sub: 42 } as Record<string, unknown>))), 'invalid');
  });

  it('token types: a subscription token cannot connect, a connection token cannot subscribe', async () => {
    const v = await verifierAt(T * 1000);
    const subToken = await hs({ sub: 'u', channel: 'secret:room' });
    const connToken = await hs({ sub: 'u' });
    assert.equal(await kindOf(v.verifyConnectionToken(subToken)), 'invalid');
    assert.equal(await kindOf(v.verifySubscriptionToken(connToken, 'u', 'secret:room')), 'invalid');
    assert.equal(await kindOf(v.verifySubscriptionToken(subToken, 'u', 'secret:room')), 'ok');
    assert.equal(await kindOf(v.verifySubscriptionToken(subToken, 'other', 'secret:room')), 'invalid');
    assert.equal(await kindOf(v.verifySubscriptionToken(subToken, 'u', 'secret:other')), 'invalid');
  });

  it('jti and iat are exposed for revocation', async () => {
    const v = await verifierAt(T * 1000);
    const identity = await v.verifyConnectionToken(await hs({ sub: 'u', jti: 'tok-1', iat: T - 10 }));
    assert.equal(identity.tokenId, 'tok-1');
    assert.equal(identity.issuedAt, (T - 10) * 1000);
  });
});

describe('forgery (C14)', () => {
  it('alg none is refused', async () => {
    const v = await verifierAt(T * 1000);
    const header = base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }));
    const payload = base64url.encode(JSON.stringify({ sub: 'admin' }));
    assert.equal(await kindOf(v.verifyConnectionToken(`${header}.${payload}.`)), 'invalid');
  });

  it('an algorithm outside the allowlist is refused', async () => {
    const v = await verifierAt(T * 1000);
    assert.equal(await kindOf(v.verifyConnectionToken(await hs({ sub: 'u' }, 'HS512'))), 'invalid');
    assert.equal(await kindOf(v.verifyConnectionToken(await hs({ sub: 'u' }, 'HS384'))), 'invalid');
  });

  it('HS256 signed with the RS256 public key is refused', async () => {
    const { publicKey } = await generateKeyPair('RS256', { extractable: true });
    const pem = await exportSPKI(publicKey);
    for (const algorithms of [['RS256'], ['HS256', 'RS256']] as const) {
      const v = await createJwtVerifier({ algorithms, hmacSecret: secret, publicKey: pem, leewayMs: 0, now: () => T * 1000 });
      const forged = await new SignJWT({ sub: 'admin' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(pem));
      assert.equal(await kindOf(v.verifyConnectionToken(forged)), 'invalid', `algorithms ${algorithms.join(',')}`);
    }
  });

  it('embedded jwk, jku, x5u and hostile kid headers are never followed', async () => {
    const { publicKey: ours } = await generateKeyPair('RS256', { extractable: true });
    const attacker = await generateKeyPair('RS256', { extractable: true });
    const v = await createJwtVerifier({ algorithms: ['RS256'], publicKey: await exportSPKI(ours), leewayMs: 0, now: () => T * 1000 });
    const { exportJWK } = await import('jose');
    const jwk = await exportJWK(attacker.publicKey);
    for (const header of [{ jwk }, { jku: 'http://127.0.0.1:1/jwks.json' }, { x5u: 'http://127.0.0.1:1/cert.pem' }, { kid: '../../../../etc/passwd' }, { kid: "' OR 1=1 --" }]) {
      const token = await new SignJWT({ sub: 'admin' }).setProtectedHeader({ alg: 'RS256', ...header }).sign(attacker.privateKey);
      assert.equal(await kindOf(v.verifyConnectionToken(token)), 'invalid', JSON.stringify(Object.keys(header)));
    }
  });

  it('a truncated or altered signature is refused', async () => {
    const v = await verifierAt(T * 1000);
    const token = await hs({ sub: 'u' });
    assert.equal(await kindOf(v.verifyConnectionToken(token.slice(0, -5))), 'invalid');
    const [h, p] = token.split('.');
    assert.equal(await kindOf(v.verifyConnectionToken(`${h}.${p}.`)), 'invalid');
    const tampered = `${h}.${base64url.encode(JSON.stringify({ sub: 'admin' }))}.${token.split('.')[2]}`;
    assert.equal(await kindOf(v.verifyConnectionToken(tampered)), 'invalid');
  });

  it('oversize and garbage tokens are refused without throwing anything else', async () => {
    const v = await verifierAt(T * 1000);
    for (const token of ['', 'x', 'a.b.c', 'x'.repeat(20000), '\u0000.\u0000.\u0000', '..']) {
      assert.equal(await kindOf(v.verifyConnectionToken(token)), 'invalid');
    }
  });
});

describe('verified tokens kept for their reuse', () => {
  it('a token verified once is accepted again until exp + leeway, then refused as expired; a refused token stays refused', async () => {
    let now = T * 1000 - 10_000;
    const verifier = await createJwtVerifier({ algorithms: ['HS256'], hmacSecret: secret, leewayMs: 5000, now: () => now });
    const token = await hs({ sub: 'u', exp: T, jti: 'j1', info: { name: 'a' } });
    const first = await verifier.verifyConnectionToken(token);
    assert.equal(first.user, 'u');
    assert.equal(first.tokenId, 'j1');
    now = T * 1000 + 4999;
    assert.deepEqual(await verifier.verifyConnectionToken(token), first);
    now = T * 1000 + 5000;
    assert.equal(await kindOf(verifier.verifyConnectionToken(token)), 'expired');
    now = T * 1000 - 10_000;
    // Accepted again once the clock is back: what jose says, nothing remembered of the refusal.
    assert.equal(await kindOf(verifier.verifyConnectionToken(token)), 'ok');
    // The cache keys by the whole token: an altered signature is verified, and refused, every time.
    const altered = token.slice(0, -2) + (token.endsWith('AA') ? 'BB' : 'AA');
    assert.equal(await kindOf(verifier.verifyConnectionToken(altered)), 'invalid');
    assert.equal(await kindOf(verifier.verifyConnectionToken(altered)), 'invalid');
    // A connection token kept from a connect still cannot subscribe.
    assert.equal(await kindOf(verifier.verifySubscriptionToken(token, 'u', 'chat:x')), 'invalid');
  });
});
