/**
 * Token lifecycle on live connections and channel authorization
 * (SECURITY-TESTS C14–C18), over real sockets against a real Herald.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, openWs, unique } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { openSse, sseUrl } from '../helpers/rt-clients.ts';

const namespaces = [
  { name: 'chat', presence: true, clientPublish: true },
  { name: 'secret', private: true, presence: true, clientPublish: true },
  { name: 'public', allowAnonymous: true },
  { name: 'readonly' },
];

function sign(h: TestHerald, claims: Record<string, unknown>, ttlSeconds = 3600): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(new TextEncoder().encode(h.hmacSecret));
}

describe('expiry and refresh on a live connection (C16)', () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({ auth: { leewayMs: 0, expiryGraceMs: 600 }, channels: { namespaces } });
  });
  after(() => h.close());
  afterEach(closeAllClients);

  it('sends a refresh push at expiry, then closes with 3003 after the grace', async () => {
    const client = await openWs(h.wsUrl);
    // Three seconds, so that a loaded machine still connects before the token expires.
    const result = await client.connect(await sign(h, { sub: 'alice' }, 3));
    assert.ok(result.ttl <= 3);
    const push = await client.push('refresh');
    assert.equal(push.grace, 1);
    assert.equal((await client.waitClose()).code, 3003);
  });

  it('a refresh with a new token for the same user keeps the connection', async () => {
    const client = await openWs(h.wsUrl);
    await client.connect(await sign(h, { sub: 'bob' }, 1));
    await client.push('refresh');
    const refreshed = await client.call('refresh', { token: await sign(h, { sub: 'bob' }, 3600) });
    assert.ok(refreshed.ttl > 3000);
    // The old deadline (exp + grace) passes; the connection stays and answers.
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert.ok(client.isOpen);
    assert.deepEqual(await client.call('ping'), {});
  });

  it('a refresh for another sub disconnects with 3500', async () => {
    const client = await openWs(h.wsUrl);
    await client.connect(await sign(h, { sub: 'carol' }, 3600));
    client.send({ id: 99, method: 'refresh', params: { token: await sign(h, { sub: 'mallory' }, 3600) } });
    assert.equal((await client.waitClose()).code, 3500);
  });

  it('an expired or forged refresh token is refused', async () => {
    const client = await openWs(h.wsUrl);
    await client.connect(await sign(h, { sub: 'dave' }, 3600));
    assert.equal(await client.callError('refresh', { token: await sign(h, { sub: 'dave' }, -10) }), 109);
    client.send({ id: 77, method: 'refresh', params: { token: 'not.a.token' } });
    assert.equal((await client.waitClose()).code, 3500);
  });

  it('a subscription token cannot connect (wrong token type)', async () => {
    const client = await openWs(h.wsUrl);
    client.send({ id: 1, method: 'connect', params: { token: await sign(h, { sub: 'erin', channel: 'secret:x' }) } });
    assert.equal((await client.waitClose()).code, 3500);
  });
});

describe('revocation (C17)', () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({ channels: { namespaces } });
  });
  after(() => h.close());
  afterEach(closeAllClients);

  it('revoke_user closes WebSocket, SSE and long-poll connections; the old token then fails', async () => {
    const user = unique('victim');
    const token = await sign(h, { sub: user });
    const ws = await openWs(h.wsUrl);
    await ws.connect(token);
    const sse = await openSse(sseUrl(h.url, { token, channels: ['chat:r'] }));
    await sse.waitForFrame((f) => f.push === 'subscribed');
    const lp = await LongPollSession.open(h.url, { token, channels: ['chat:r'] });
    const bystander = await openWs(h.wsUrl);
    await bystander.connect(await sign(h, { sub: unique('bystander') }));

    const answer = await h.api('revoke_user', { user });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.disconnected, 3);
    assert.equal((await ws.waitClose()).code, 3507);
    const last = await sse.waitForFrame((f) => f.push === 'disconnect');
    assert.equal(last.code, 3507);
    assert.equal(last.reconnect, false);
    const polled = await lp.pollUntil((all) => all.find((m: any) => m.push === 'disconnect'), 'disconnect');
    assert.equal(polled.code, 3507);
    assert.ok(bystander.isOpen);

    const again = await openWs(h.wsUrl);
    again.send({ id: 1, method: 'connect', params: { token } });
    assert.equal((await again.waitClose()).code, 3507);
    const sseAgain = await openSse(sseUrl(h.url, { token }));
    assert.equal(sseAgain.status, 401);
  });

  it('revoke_token closes the connections using that jti only', async () => {
    const user = unique('multi');
    const revoked = await sign(h, { sub: user, jti: 'jti-revoked' });
    const kept = await sign(h, { sub: user, jti: 'jti-kept' });
    const a = await openWs(h.wsUrl);
    await a.connect(revoked);
    const b = await openWs(h.wsUrl);
    await b.connect(kept);
    const answer = await h.api('revoke_token', { jti: 'jti-revoked' });
    assert.deepEqual(answer.body, { disconnected: 1 });
    assert.equal((await a.waitClose()).code, 3507);
    assert.ok(b.isOpen);
    const again = await openWs(h.wsUrl);
    again.send({ id: 1, method: 'connect', params: { token: revoked } });
    assert.equal((await again.waitClose()).code, 3507);
  });

  it('revocation needs the admin scope and a valid body', async () => {
    assert.equal((await h.api('revoke_user', {})).status, 400);
    assert.equal((await h.api('revoke_token', { jti: '' })).status, 400);
    assert.equal((await h.api('revoke_user', { user: 'x' }, 'wrong-key')).status, 401);
  });
});

describe('channel authorization (C18)', () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({ channels: { namespaces }, limits: { maxChannelsPerConnection: 3 } });
  });
  after(() => h.close());
  afterEach(closeAllClients);

  it('private channels need a subscription token for this channel and this user', async () => {
    const alice = await connectWs(h, 'alice');
    assert.equal(await alice.callError('subscribe', { channel: 'secret:bob-inbox' }), 103);
    const forBob = await sign(h, { sub: 'bob', channel: 'secret:bob-inbox' });
    assert.equal(await alice.callError('subscribe', { channel: 'secret:bob-inbox', token: forBob }), 103);
    const otherChannel = await sign(h, { sub: 'alice', channel: 'secret:alice-inbox' });
    assert.equal(await alice.callError('subscribe', { channel: 'secret:bob-inbox', token: otherChannel }), 103);
    const connectionToken = await sign(h, { sub: 'alice' });
    assert.equal(await alice.callError('subscribe', { channel: 'secret:alice-inbox', token: connectionToken }), 103);
    const expired = await sign(h, { sub: 'alice', channel: 'secret:alice-inbox' }, -30);
    assert.equal(await alice.callError('subscribe', { channel: 'secret:alice-inbox', token: expired }), 109);
    // Not subscribed: no history, presence or publish into the private channel.
    assert.equal(await alice.callError('history', { channel: 'secret:bob-inbox', limit: 10 }), 103);
    assert.equal(await alice.callError('presence', { channel: 'secret:bob-inbox' }), 103);
    assert.equal(await alice.callError('publish', { channel: 'secret:bob-inbox', data: 'x' }), 103);

    const bob = await connectWs(h, 'bob');
    const result = await bob.call('subscribe', { channel: 'secret:bob-inbox', token: forBob });
    assert.equal(result.recoverable, true);
    await h.api('publish', { channel: 'secret:bob-inbox', data: { n: 1 } });
    const [pub] = await bob.waitPublications('secret:bob-inbox', 1);
    assert.deepEqual(pub.data, { n: 1 });
    assert.equal(alice.publications('secret:bob-inbox').length, 0);
  });

  it('a private channel in an SSE resume vector is reported, not subscribed', async () => {
    const token = await sign(h, { sub: 'frank' });
    const sse = await openSse(sseUrl(h.url, { token, lastEventId: 'secret:frank|abcdefgh|3' }));
    const frame = await sse.waitForFrame((f) => f.push === 'unsubscribed');
    assert.equal(frame.channel, 'secret:frank');
    assert.equal(frame.code, 3504);
    assert.equal(sse.pushes('subscribed').length, 0);
    sse.abort();
    const asked = await openSse(sseUrl(h.url, { token, channels: ['secret:frank'] }));
    assert.equal(asked.status, 403);
  });

  it('encoded, look-alike, NUL and over-long names are refused and nothing reaches subscribers', async () => {
    const listener = await connectWs(h, 'listener');
    await listener.call('subscribe', { channel: 'chat:room' });
    const mallory = await connectWs(h, 'mallory');
    for (const channel of ['chat%3Aroom', 'chat:room\u0000', 'chat\uff1aroom', 'chat:room ', 'CHAT:room', 'chat:' + 'r'.repeat(300), '', 'chat:', '../chat:room']) {
      // 112 invalid_channel (every one breaks the grammar), 107 for the empty string (schema: minLength 1).
      const expected = channel === '' ? 107 : 112;
      assert.equal(await mallory.callError('publish', { channel, data: 'evil' }), expected, `publish ${JSON.stringify(channel)}`);
      assert.equal(await mallory.callError('subscribe', { channel }), expected, `subscribe ${JSON.stringify(channel)}`);
    }
    // Publishing where clients may not publish.
    assert.equal(await mallory.callError('publish', { channel: 'readonly:news', data: 'evil' }), 103);
    assert.equal(await mallory.callError('publish', { channel: 'public:news', data: 'evil' }), 103);
    // Over the channel limit.
    await mallory.call('subscribe', { channel: 'chat:a' });
    await mallory.call('subscribe', { channel: 'chat:b' });
    await mallory.call('subscribe', { channel: 'chat:c' });
    assert.equal(await mallory.callError('subscribe', { channel: 'chat:d' }), 106);
    // A marker proves delivery works; nothing evil came before it.
    await h.api('publish', { channel: 'chat:room', data: 'marker' });
    const pubs = await listener.waitPublications('chat:room', 1);
    assert.deepEqual(pubs.map((p: any) => p.data), ['marker']);
  });
});

describe('JWKS (C14, issue 5)', () => {
  let jwksServer: Server;
  let jwksUrl = '';
  let fetches = 0;
  const keys: { kid: string; publicKey: CryptoKey; privateKey: CryptoKey }[] = [];
  let published: string[] = [];
  let h: TestHerald;

  before(async () => {
    for (const kid of ['k1', 'k2', 'never-published']) {
      const pair = await generateKeyPair('RS256', { extractable: true });
      keys.push({ kid, publicKey: pair.publicKey, privateKey: pair.privateKey });
    }
    published = ['k1'];
    jwksServer = createServer((_req, res) => {
      fetches++;
      Promise.all(keys.filter((k) => published.includes(k.kid)).map(async (k) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, alg: 'RS256', use: 'sig' }))).then(
        (list) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: list })),
        (error: unknown) => res.destroy(error as Error),
      );
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
    h = await startHerald({ auth: { algorithms: ['HS256', 'RS256'], jwksUrl, jwksCooldownMs: 0 }, channels: { namespaces } });
  });
  after(async () => {
    await h.close();
    jwksServer.close();
  });
  afterEach(closeAllClients);

  const rs = (kid: string, sub: string) =>
    new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid }).setSubject(sub).setExpirationTime('1h').sign(keys.find((k) => k.kid === kid)!.privateKey);

  it('verifies RS256 tokens with keys fetched from the JWKS and refetches on an unknown kid', async () => {
    const a = await openWs(h.wsUrl);
    assert.equal((await a.connect(await rs('k1', 'jw1'))).client.length > 0, true);
    const before = fetches;
    published = ['k1', 'k2'];
    const b = await openWs(h.wsUrl);
    await b.connect(await rs('k2', 'jw2'));
    assert.ok(fetches > before, 'the unknown kid caused a refetch');
  });

  it('a kid that is not in the JWKS is refused with 3500', async () => {
    const c = await openWs(h.wsUrl);
    c.send({ id: 1, method: 'connect', params: { token: await rs('never-published', 'jw3') } });
    assert.equal((await c.waitClose()).code, 3500);
  });
});
