/**
 * SECURITY-TESTS 41: the Pusher HTTP API's request signing. Wrong
 * signatures, missing or reordered auth parameters, a body changed after
 * signing (body_md5), timestamps outside the window (a replay after it),
 * another app's key: each refused with Pusher's 401 and its message, and
 * nothing published. Requests here are signed by an implementation of
 * Pusher's rules written in this file (independent of the server's), and
 * by the `pusher` SDK's own signer where the SDK's behaviour is the point.
 * The comparison itself is `crypto.timingSafeEqual` (pusher/request-signing.ts):
 * timing is not asserted in tests.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { openSse, sseUrl, type SseStream } from '../helpers/rt-clients.ts';
import { sleep } from '../helpers/rt-util.ts';
import { rawRequest, signedQuery, type RawAnswer } from '../helpers/pusher-api.ts';
import { startPusherHerald, testApp, type PusherHerald, type TestApp } from '../helpers/pusher-socket.ts';

const WINDOW = 60;

/** Pusher's signing, written out: params sorted by key, `k=v` joined by `&`, HMAC-SHA256 hex over METHOD\nPATH\nQUERY. */
function sign(secret: string, method: string, path: string, params: Record<string, string>, order?: (keys: string[]) => string[]): string {
  const keys = order === undefined ? Object.keys(params).sort() : order(Object.keys(params));
  const query = keys.map((key) => `${key}=${params[key]}`).join('&');
  return createHmac('sha256', secret).update(`${method}\n${path}\n${query}`).digest('hex');
}

const md5 = (text: string) => createHash('md5').update(text).digest('hex');
const now = () => Math.floor(Date.now() / 1000);

interface Request {
  method: string;
  path: string;
  params: Record<string, string>;
  body?: string;
}

/** The auth params of `app` for a request (body_md5 with a body), `timestamp` now unless given. */
function authParams(app: TestApp, body?: string, timestamp = now()): Record<string, string> {
  const params: Record<string, string> = { auth_key: app.key, auth_timestamp: String(timestamp), auth_version: '1.0' };
  if (body !== undefined) params['body_md5'] = md5(body);
  return params;
}

function query(params: Record<string, string>): string {
  return Object.entries(params)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&');
}

describe('SECURITY-TESTS 41: Pusher HTTP API request signing', { timeout: 60000 }, () => {
  let h: PusherHerald;
  const main = testApp('main');
  const other = testApp('other');
  let stream: SseStream;
  const channel = `guarded-${randomBytes(3).toString('hex')}`;
  const answers: RawAnswer[] = [];

  before(async () => {
    h = await startPusherHerald([main, other], { pusher: { authTimestampWindowSeconds: WINDOW } });
    stream = await openSse(sseUrl(h.url, { channels: [channel] }), { authorization: `Bearer ${await h.token('watcher')}` });
    await stream.waitForFrame((f) => f['push'] === 'subscribed');
  });
  after(async () => {
    try {
      // Nothing a refused request carried was published.
      assert.deepEqual(
        stream.frames.filter((f) => f['push'] === 'publication').map((f) => (f['data'] as { event: string }).event),
        ['accepted-1', 'accepted-2', 'accepted-3', 'accepted-4'],
      );
      // No answer carried a secret.
      for (const answer of answers) {
        assert.ok(!answer.text.includes(main.secret) && !answer.text.includes(other.secret), `an answer carried a secret: ${answer.text}`);
      }
    } finally {
      stream.abort();
      await h.close();
    }
  });

  async function send(request: Request): Promise<RawAnswer> {
    const answer = await rawRequest(h, request.method, `${request.path}?${query(request.params)}`, request.body);
    answers.push(answer);
    return answer;
  }

  /** A signed trigger of `event` on the guarded channel. */
  function trigger(event: string, app = main, timestamp = now()): Request {
    const body = JSON.stringify({ name: event, data: 'x', channel });
    const params = authParams(app, body, timestamp);
    params['auth_signature'] = sign(app.secret, 'POST', `/apps/main/events`, params);
    return { method: 'POST', path: '/apps/main/events', params, body };
  }

  function refused(answer: RawAnswer, message: RegExp): void {
    assert.equal(answer.status, 401, answer.text);
    assert.equal(answer.headers.get('herald-error'), 'unauthorized');
    assert.match(answer.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(answer.text, message);
  }

  test('a request signed as Pusher signs is accepted (the control)', async () => {
    const answer = await send(trigger('accepted-1'));
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(answer.json, {});
    await stream.waitForFrame((f) => f['push'] === 'publication' && (f['data'] as { event: string }).event === 'accepted-1');
  });

  test('wrong signature: another secret, a flipped digit, a truncated or empty one', async () => {
    const wrongSecret = trigger('wrong-secret');
    const { auth_signature: _drop, ...unsigned } = wrongSecret.params;
    wrongSecret.params['auth_signature'] = sign(randomBytes(16).toString('hex'), 'POST', wrongSecret.path, unsigned);
    refused(await send(wrongSecret), /^Invalid signature: you should have sent HmacSHA256Hex\("POST\\n\/apps\/main\/events\\nauth_key=/);
    const flipped = trigger('flipped');
    const sig = flipped.params['auth_signature']!;
    flipped.params['auth_signature'] = (sig[0] === 'a' ? 'b' : 'a') + sig.slice(1);
    refused(await send(flipped), /^Invalid signature/);
    const truncated = trigger('truncated');
    truncated.params['auth_signature'] = truncated.params['auth_signature']!.slice(0, 63);
    refused(await send(truncated), /^Invalid signature/);
    const empty = trigger('empty');
    empty.params['auth_signature'] = '';
    refused(await send(empty), /^Invalid signature/);
  });

  test('missing auth parameters: each of auth_key, auth_timestamp, auth_version, auth_signature, and body_md5 with a body', async () => {
    for (const name of ['auth_key', 'auth_timestamp', 'auth_version', 'auth_signature']) {
      const request = trigger(`missing-${name}`);
      delete request.params[name];
      refused(await send(request), new RegExp(`^Missing parameter: ${name}$`));
    }
    const noMd5 = trigger('missing-md5');
    delete noMd5.params['body_md5'];
    const { auth_signature: _a, ...rest } = noMd5.params;
    noMd5.params['auth_signature'] = sign(main.secret, 'POST', noMd5.path, rest);
    refused(await send(noMd5), /^Missing parameter: body_md5/);
  });

  test('reordered: a signature over the parameters in another order than sorted is refused; the URL\'s order does not matter', async () => {
    const request = trigger('reordered');
    const { auth_signature: _s, ...params } = request.params;
    request.params['auth_signature'] = sign(main.secret, 'POST', request.path, params, (keys) => [...keys].sort().reverse());
    refused(await send(request), /^Invalid signature/);
    // The same signed parameters in the URL in reverse order: the string to sign is sorted by the server.
    const fine = trigger('accepted-2');
    const reversed = Object.fromEntries(Object.entries(fine.params).reverse());
    const answer = await send({ ...fine, params: reversed });
    assert.equal(answer.status, 200, answer.text);
  });

  test('body changed after signing: body_md5 no longer matches; a recomputed body_md5 breaks the signature', async () => {
    const changed = trigger('signed-event');
    changed.body = changed.body!.replace('signed-event', 'changed-event');
    refused(await send(changed), /^Invalid body_md5/);
    const recomputed = trigger('signed-event');
    recomputed.body = recomputed.body!.replace('signed-event', 'changed-event');
    recomputed.params['body_md5'] = md5(recomputed.body);
    refused(await send(recomputed), /^Invalid signature/);
  });

  test('path, method or an added parameter changed after signing', async () => {
    const path = trigger('moved');
    refused(await send({ ...path, path: '/apps/main/batch_events' }), /^Invalid signature/);
    const method = trigger('method');
    const { auth_signature: _m, ...signedParams } = method.params;
    method.params['auth_signature'] = sign(main.secret, 'PUT', method.path, signedParams);
    refused(await send(method), /^Invalid signature/);
    const params = authParams(main);
    params['auth_signature'] = sign(main.secret, 'GET', '/apps/main/channels', params);
    assert.equal((await send({ method: 'GET', path: '/apps/main/channels', params })).status, 200);
    refused(await send({ method: 'GET', path: '/apps/main/channels', params: { ...params, filter_by_prefix: 'presence-' } }), /^Invalid signature/);
    refused(await send({ method: 'GET', path: `/apps/main/channels/${channel}`, params }), /^Invalid signature/);
  });

  test('timestamp outside the window, past or future, refused; a replay after the window refused; inside the window accepted', async () => {
    refused(await send(trigger('stale', main, now() - WINDOW - 5)), new RegExp(`^Timestamp expired: Given timestamp \\(\\d+\\) not within ${WINDOW}s of server time`));
    refused(await send(trigger('future', main, now() + WINDOW + 5)), /^Timestamp expired/);
    const nonNumeric = trigger('nonnumeric');
    nonNumeric.params['auth_timestamp'] = '1e9';
    refused(await send(nonNumeric), /^Invalid auth_timestamp/);
    const inside = await send(trigger('accepted-3', main, now() - WINDOW + 10));
    assert.equal(inside.status, 200, inside.text);
    // A captured request replayed once its timestamp has left the window: the same bytes, refused.
    const captured = trigger('replayed', main, now() - WINDOW + 1);
    await sleep(2100);
    refused(await send(captured), /^Timestamp expired/);
  });

  test('another app\'s key and secret on this app\'s path: Unknown auth_key; an unknown version', async () => {
    const body = JSON.stringify({ name: 'cross-app', data: 'x', channel });
    const params = authParams(other, body);
    params['auth_signature'] = sign(other.secret, 'POST', '/apps/main/events', params);
    refused(await send({ method: 'POST', path: '/apps/main/events', params, body }), /^Unknown auth_key$/);
    const version = trigger('version');
    version.params['auth_version'] = '2.0';
    const { auth_signature: _v, ...rest } = version.params;
    version.params['auth_signature'] = sign(main.secret, 'POST', version.path, rest);
    refused(await send(version), /^Version not supported/);
  });

  test('the SDK\'s own signer with params: accepted; its query with a repeated key or a bad escape: 400', async () => {
    const path = '/apps/main/channels';
    const signed = signedQuery(main, 'GET', path, { params: { filter_by_prefix: 'guarded-' } });
    const ok = await rawRequest(h, 'GET', `${path}?${signed}`);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, { channels: { [channel]: {} } });
    const twice = await rawRequest(h, 'GET', `${path}?${signed}&filter_by_prefix=x`);
    assert.equal(twice.status, 400);
    assert.equal(twice.headers.get('herald-error'), 'invalid_request');
    const escape = await rawRequest(h, 'GET', `${path}?${signed}&x=%E0%A4%A`);
    assert.equal(escape.status, 400);
  });

  test('hostile bodies after a valid signature: prototype keys, nesting, not UTF-8, not JSON → 400, nothing published', async () => {
    const bodies = [
      `{"name":"proto","data":"x","channel":"${channel}","__proto__":{"polluted":1}}`,
      `{"name":"deep","data":"x","channel":"${channel}","info":${'['.repeat(100)}${']'.repeat(100)}}`,
      `{"name":"notjson","data":"x","channel":"${channel}"`,
    ];
    for (const body of bodies) {
      const params = authParams(main, body);
      params['auth_signature'] = sign(main.secret, 'POST', '/apps/main/events', params);
      const answer = await send({ method: 'POST', path: '/apps/main/events', params, body });
      assert.equal(answer.status, 400, `${answer.status} ${answer.text} for ${body.slice(0, 60)}`);
    }
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
    const latin1 = Buffer.from(`{"name":"latin","data":"\xe9","channel":"${channel}"}`, 'latin1');
    const params = authParams(main);
    params['body_md5'] = createHash('md5').update(latin1).digest('hex');
    params['auth_signature'] = sign(main.secret, 'POST', '/apps/main/events', params);
    const response = await fetch(`${h.url}/apps/main/events?${query(params)}`, { method: 'POST', body: latin1, headers: { 'content-type': 'application/json' } });
    assert.equal(response.status, 400, await response.text());
    // Finally a valid one, so the subscriber's list ends where the after hook says.
    assert.equal((await send(trigger('accepted-4'))).status, 200);
    await stream.waitForFrame((f) => f['push'] === 'publication' && (f['data'] as { event: string }).event === 'accepted-4');
  });
});
