/**
 * Tokens minted by the SDK, checked by a real Herald: HS256, RS256 and
 * ES256 connection tokens connect (with `aud`, `iss`, `info` and `jti`
 * honoured), subscription tokens open private channels, and the two kinds
 * are refused when swapped, or used for another channel or user. Bad keys
 * and options are refused by the SDK without quoting the key.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSecretKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { decodeProtectedHeader, decodeJwt } from 'jose';
import { HeraldApi, mintConnectionToken, mintSubscriptionToken, type TokenOptions } from '../src/index.ts';
import { startHerald, type TestHerald } from '../../server/test/helpers/herald.ts';
import { closeAllClients, openWs, unique, type WsClient } from '../../server/test/helpers/herald-ws.ts';

const namespaces = [
  { name: 'chat', presence: true },
  { name: 'inbox', private: true, presence: true },
];

/** A connection made with `token`. */
async function connected(h: TestHerald, token: string): Promise<WsClient> {
  const client = await openWs(h.wsUrl);
  await client.connect(token);
  return client;
}

/** The close code of a connection whose `connect` carried `token` (the server closes it without a reply). */
async function refusedWith(h: TestHerald, token: string): Promise<number> {
  const client = await openWs(h.wsUrl);
  client.send({ id: 1, method: 'connect', params: { token } });
  return (await client.waitClose()).code;
}

function pems(type: 'rsa' | 'ec'): { privateKey: string; publicKey: string } {
  const pair = type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, publicKey: pair.publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

describe('HS256 tokens minted by the SDK', { timeout: 60000 }, () => {
  let h: TestHerald;
  const claims = { audience: 'my-app', issuer: 'https://backend.example' };
  before(async () => {
    h = await startHerald({ auth: { audience: claims.audience, issuer: claims.issuer }, channels: { defaults: {}, namespaces } });
  });
  afterEach(() => closeAllClients());
  after(() => h.close());

  const hs = (sub: string, extra: Partial<TokenOptions> = {}): TokenOptions => ({ sub, ttlSeconds: 600, key: h.hmacSecret, ...claims, ...extra });

  test('a connection token connects; its claims are what the server reads (sub, info, exp, iat, aud, iss)', async () => {
    const token = await mintConnectionToken(hs('alice', { info: { name: 'Alice' } }));
    const payload = decodeJwt(token);
    assert.deepEqual(decodeProtectedHeader(token), { alg: 'HS256', typ: 'JWT' });
    assert.equal(payload.exp! - payload.iat!, 600);
    assert.deepEqual([payload.sub, payload.aud, payload.iss, payload['channel']], ['alice', claims.audience, claims.issuer, undefined]);
    const alice = await connected(h, token);
    const channel = unique('chat:tok');
    await alice.call('subscribe', { channel });
    const { clients } = await new HeraldApi({ url: h.url, apiKey: h.apiKey }).presence(channel);
    assert.deepEqual(clients[alice.clientId], { client: alice.clientId, user: 'alice', conn_info: { name: 'Alice' } });
  });

  test('a subscription token opens a private channel for its user; publications arrive', async () => {
    const channel = unique('inbox:bob');
    const bob = await connected(h, await mintConnectionToken(hs('bob')));
    assert.equal(await bob.callError('subscribe', { channel }), 103, 'no token: refused');
    const result = await bob.call('subscribe', { channel, token: await mintSubscriptionToken({ ...hs('bob'), channel }) });
    assert.equal(result.recoverable, true);
    await new HeraldApi({ url: h.url, apiKey: h.apiKey }).publish(channel, { hi: 'bob' });
    assert.deepEqual((await bob.waitPublications(channel, 1))[0].data, { hi: 'bob' });
  });

  test('swapped kinds, another channel, another user, another audience: refused', async () => {
    const channel = unique('inbox:carol');
    const subscription = await mintSubscriptionToken({ ...hs('carol'), channel });
    assert.equal(await refusedWith(h, subscription), 3500, 'a subscription token cannot connect');

    const carol = await connected(h, await mintConnectionToken(hs('carol')));
    assert.equal(await carol.callError('subscribe', { channel, token: await mintConnectionToken(hs('carol')) }), 103, 'a connection token cannot subscribe');
    assert.equal(await carol.callError('subscribe', { channel, token: await mintSubscriptionToken({ ...hs('carol'), channel: unique('inbox:other') }) }), 103, 'another channel');
    assert.equal(await carol.callError('subscribe', { channel, token: await mintSubscriptionToken({ ...hs('dave'), channel }) }), 103, 'another user');
    await carol.call('subscribe', { channel, token: subscription });

    assert.equal(await refusedWith(h, await mintConnectionToken(hs('carol', { audience: 'other-app' }))), 3500, 'another audience');
    assert.equal(await refusedWith(h, await mintConnectionToken(hs('carol', { issuer: 'https://other.example' }))), 3500, 'another issuer');
    assert.equal(await refusedWith(h, await mintConnectionToken(hs('carol', { key: randomBytes(32).toString('base64url') }))), 3500, 'another secret');
  });

  test('jti: the SDK revokes what the SDK minted', async () => {
    const jti = unique('jti');
    const erin = await connected(h, await mintConnectionToken(hs('erin', { jti })));
    assert.deepEqual(await new HeraldApi({ url: h.url, apiKey: h.apiKey }).revokeToken(jti), { disconnected: 1 });
    assert.equal((await erin.waitClose()).code, 3507);
  });

  test('a secret KeyObject works like the secret string', async () => {
    const token = await mintConnectionToken(hs('frank', { key: createSecretKey(new TextEncoder().encode(h.hmacSecret)) }));
    await connected(h, token);
  });
});

for (const [algorithm, type] of [
  ['RS256', 'rsa'],
  ['ES256', 'ec'],
] as const) {
  describe(`${algorithm} tokens minted by the SDK from a PEM private key`, { timeout: 60000 }, () => {
    const keys = pems(type);
    let h: TestHerald;
    before(async () => {
      h = await startHerald({ auth: { algorithms: [algorithm], publicKey: keys.publicKey }, channels: { defaults: {}, namespaces } });
    });
    afterEach(() => closeAllClients());
    after(() => h.close());

    test('connect, and subscribe to a private channel; swapped kinds refused', async () => {
      const options = { sub: 'grace', ttlSeconds: 600, key: keys.privateKey, keyId: 'k1' };
      const token = await mintConnectionToken(options);
      assert.deepEqual(decodeProtectedHeader(token), { alg: algorithm, typ: 'JWT', kid: 'k1' });
      const grace = await connected(h, token);
      const channel = unique('inbox:grace');
      const subscription = await mintSubscriptionToken({ ...options, channel, algorithm });
      await grace.call('subscribe', { channel, token: subscription });
      assert.equal(await grace.callError('subscribe', { channel: unique('inbox:grace'), token }), 103);
      assert.equal(await refusedWith(h, subscription), 3500);
    });

    test('an HS256 token is refused where only ' + algorithm + ' is allowed', async () => {
      const hs = await mintConnectionToken({ sub: 'grace', ttlSeconds: 600, key: randomBytes(32).toString('base64url') });
      assert.equal(await refusedWith(h, hs), 3500);
    });
  });
}

describe('the SDK refuses keys and options it cannot mint with, without quoting the key', () => {
  const secret = 'a-secret-that-is-long-enough-0123456789';
  const rejects = async (promise: Promise<string>, message: RegExp) => {
    await assert.rejects(promise, (error: unknown) => error instanceof TypeError && message.test(error.message) && !error.message.includes(secret) && !error.message.includes('PRIVATE'));
  };

  test('keys', async () => {
    const base = { sub: 'u', ttlSeconds: 60 };
    await rejects(mintConnectionToken({ ...base, key: 'short-secret' }), /at least 32 characters/);
    await rejects(mintConnectionToken({ ...base, key: pems('rsa').publicKey }), /public key/);
    await rejects(mintConnectionToken({ ...base, key: '-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n' }), /not a readable PEM private key/);
    await rejects(mintConnectionToken({ ...base, key: secret, algorithm: 'RS256' }), /algorithm RS256 does not fit the key \(it is a HS256 key\)/);
    await rejects(mintConnectionToken({ ...base, key: pems('ec').privateKey, algorithm: 'RS256' }), /it is a ES256 key/);
    const ed = generateKeyPairSync('ed25519').privateKey;
    await rejects(mintConnectionToken({ ...base, key: ed }), /not one Herald verifies/);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    await rejects(mintConnectionToken({ ...base, key: p384 }), /secp384r1/);
    const pkcs1 = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    assert.equal(decodeProtectedHeader(await mintConnectionToken({ ...base, key: pkcs1 })).alg, 'RS256', 'PKCS#1 RSA PEM');
  });

  test('options', async () => {
    await rejects(mintConnectionToken({ sub: 'u', ttlSeconds: 0, key: secret }), /ttlSeconds/);
    await rejects(mintConnectionToken({ sub: 'u'.repeat(257), ttlSeconds: 60, key: secret }), /sub must be/);
    await rejects(mintConnectionToken({ sub: 'u', ttlSeconds: 60, key: secret, jti: '' }), /jti must be/);
    await rejects(mintSubscriptionToken({ sub: 'u', ttlSeconds: 60, key: secret } as never), /channel must be/);
    await rejects(mintConnectionToken({ sub: 'u', ttlSeconds: 60, key: secret, info: () => 1 }), /info must be a JSON value/);
  });
});
