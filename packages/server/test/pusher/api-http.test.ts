/**
 * The Pusher HTTP API (docs/pusher.md, "HTTP API") driven by the official
 * `pusher` server SDK against a running Herald, observed from the native
 * side: the default app's channels are the native protocol's, so a trigger
 * reaches a native SSE subscriber as `{"event", "data"}`, and native
 * subscribers and presence members are what the API counts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { openSse, sseUrl, type SseStream } from '../helpers/rt-clients.ts';
import { rawRequest, sdkFailure, signedQuery, signedRequest } from '../helpers/pusher-api.ts';
import { serverSdk, startPusherHerald, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import { call } from '../helpers/internal-http.ts';

let counter = 0;
const unique = (prefix: string): string => `${prefix}-${++counter}-${randomBytes(3).toString('hex')}`;

describe('Pusher HTTP API with the pusher SDK', { timeout: 60000 }, () => {
  let h: PusherHerald;
  const main = testApp('main');
  const other = testApp('other');
  const off = testApp('off', { enabled: false });
  const tight = testApp('tight', { limits: { apiRequestsPerSecond: 3, maxEventChannelsAtOnce: 2, maxEventBatchSize: 2, maxEventPayloadBytes: 100 } });
  const streams: SseStream[] = [];

  before(async () => {
    // Presence in the default namespace: native subscribers of presence-* are members the API counts.
    h = await startPusherHerald([main, other, off, tight], { channels: { defaults: { presence: true } } });
  });
  after(async () => {
    for (const stream of streams) stream.abort();
    await h.close();
  });

  /** A native SSE subscriber of `channels`, subscribed. */
  async function subscriber(user: string, ...channels: string[]): Promise<SseStream> {
    const stream = await openSse(sseUrl(h.url, { channels }), { authorization: `Bearer ${await h.token(user)}` });
    streams.push(stream);
    assert.equal(stream.status, 200, JSON.stringify(stream.errorBody));
    for (const channel of channels) await stream.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === channel, 10000, `subscribed ${channel}`);
    return stream;
  }

  test('trigger on the default app reaches a native subscriber as {"event","data"}', async () => {
    const channel = unique('orders');
    const stream = await subscriber('ann', channel);
    const answer = await serverSdk(h, main).trigger(channel, 'order-placed', { id: 7 });
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), {});
    const publication = await stream.waitForFrame((f) => f['push'] === 'publication' && f['channel'] === channel);
    assert.deepEqual(publication['data'], { event: 'order-placed', data: '{"id":7}' });
  });

  test('trigger to several channels, with info: subscription_count per channel, user_count on presence channels', async () => {
    const a = unique('news');
    const b = unique('presence-room');
    const sa = await subscriber('bob', a);
    await subscriber('bob', b);
    await subscriber('cid', b);
    const answer = await serverSdk(h, main).trigger([a, b], 'hello', 'plain text', { info: 'user_count,subscription_count' });
    assert.deepEqual(await answer.json(), { channels: { [a]: { subscription_count: 1 }, [b]: { user_count: 2, subscription_count: 2 } } });
    const publication = await sa.waitForFrame((f) => f['push'] === 'publication' && f['channel'] === a);
    assert.deepEqual(publication['data'], { event: 'hello', data: 'plain text' });
  });

  test('triggerBatch publishes each event; info per event in order', async () => {
    const a = unique('batch-a');
    const b = unique('batch-b');
    const stream = await subscriber('dee', a, b);
    const answer = await serverSdk(h, main).triggerBatch([
      { channel: a, name: 'one', data: { n: 1 }, info: 'subscription_count' },
      { channel: b, name: 'two', data: 'second' },
    ]);
    assert.deepEqual(await answer.json(), { batch: [{ subscription_count: 1 }, {}] });
    const one = await stream.waitForFrame((f) => f['push'] === 'publication' && f['channel'] === a);
    const two = await stream.waitForFrame((f) => f['push'] === 'publication' && f['channel'] === b);
    assert.deepEqual(one['data'], { event: 'one', data: '{"n":1}' });
    assert.deepEqual(two['data'], { event: 'two', data: 'second' });
  });

  test('GET channels: occupied channels of the app only, filter_by_prefix, info', async () => {
    const prefix = unique('list');
    const plain = `${prefix}-x`;
    const presence = `presence-${prefix}`;
    await subscriber('eve', plain);
    await subscriber('eve', presence);
    await subscriber('fay', presence);
    const all = await (await serverSdk(h, main).get({ path: '/channels', params: { filter_by_prefix: prefix } })).json();
    assert.deepEqual(all, { channels: { [plain]: {} } });
    const counted = await (await serverSdk(h, main).get({ path: '/channels', params: { filter_by_prefix: prefix, info: 'subscription_count' } })).json();
    assert.deepEqual(counted, { channels: { [plain]: { subscription_count: 1 } } });
    const users = await (await serverSdk(h, main).get({ path: '/channels', params: { filter_by_prefix: 'presence-' + prefix, info: 'user_count' } })).json();
    assert.deepEqual(users, { channels: { [presence]: { user_count: 2 } } });
    // The same names through another app: none of them are its channels.
    const elsewhere = await (await serverSdk(h, other).get({ path: '/channels' })).json();
    assert.deepEqual(elsewhere, { channels: {} });
    // user_count needs a presence- prefix, as Pusher.
    const refused = await sdkFailure(serverSdk(h, main).get({ path: '/channels', params: { info: 'user_count' } }));
    assert.equal(refused.status, 400);
    assert.match(refused.body, /presence/);
  });

  test('GET channels/{name} and channels/{name}/users', async () => {
    const presence = unique('presence-team');
    const plain = unique('feed');
    await subscriber('gus', presence);
    await subscriber('gus', presence);
    await subscriber('hal', presence);
    await subscriber('gus', plain);
    const api = serverSdk(h, main);
    assert.deepEqual(await (await api.get({ path: `/channels/${presence}`, params: { info: 'user_count,subscription_count' } })).json(), {
      occupied: true,
      user_count: 2,
      subscription_count: 3,
    });
    assert.deepEqual(await (await api.get({ path: `/channels/${plain}`, params: { info: 'subscription_count' } })).json(), { occupied: true, subscription_count: 1 });
    assert.deepEqual(await (await api.get({ path: `/channels/${unique('empty')}` })).json(), { occupied: false });
    assert.deepEqual(await (await api.get({ path: `/channels/${presence}/users` })).json(), { users: [{ id: 'gus' }, { id: 'hal' }] });
    assert.equal((await sdkFailure(api.get({ path: `/channels/${plain}/users` }))).status, 400, 'users of a non-presence channel');
    assert.equal((await sdkFailure(api.get({ path: `/channels/${plain}`, params: { info: 'user_count' } }))).status, 400, 'user_count of a non-presence channel');
    // Another app sees its own (empty) channel of that name.
    assert.deepEqual(await (await serverSdk(h, other).get({ path: `/channels/${presence}/users` })).json(), { users: [] });
  });

  test('terminateUserConnections answers {} (the endpoint closes the sockets: socket tests)', async () => {
    const answer = await serverSdk(h, main).terminateUserConnections('user-1');
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), {});
  });

  test('a trigger on another app never reaches the default app\'s subscribers of that name', async () => {
    const channel = unique('shared-name');
    const stream = await subscriber('ivy', channel);
    await serverSdk(h, other).trigger(channel, 'elsewhere', 'x');
    await serverSdk(h, main).trigger(channel, 'here', 'y');
    const publication = await stream.waitForFrame((f) => f['push'] === 'publication' && f['channel'] === channel);
    assert.deepEqual(publication['data'], { event: 'here', data: 'y' }, 'the first publication is the own app\'s');
  });

  test('Pusher\'s rules: names, reserved events, channel and batch counts, sizes', async () => {
    const api = serverSdk(h, main);
    const limited = serverSdk(h, tight);
    const bad = async (promise: Promise<unknown>, status: number, pattern: RegExp) => {
      const failure = await sdkFailure(promise);
      assert.equal(failure.status, status, failure.body);
      assert.match(failure.body, pattern);
    };
    await bad(signedRequest(h, main, 'POST', '/apps/main/events', { body: { name: 'e', data: 'x', channel: 'bad:name' } }).then(fail), 400, /Invalid channel name/);
    await bad(postEvent(api, { name: 'pusher:subscribe', data: 'x', channels: ['c'] }), 400, /reserved/);
    await bad(postEvent(api, { name: 'e', data: 'x', channels: ['c'], socket_id: 'abc' }), 400, /socket_id/);
    await bad(postEvent(api, { name: 'e', data: { not: 'a string' }, channels: ['c'] }), 400, /\/data/);
    await bad(postEvent(api, { name: 'e', data: 'x', channels: ['c'], extra: 1 }), 400, /Invalid body/);
    await bad(postEvent(api, { name: 'e', data: 'x' }), 400, /channel or channels/);
    await bad(postEvent(api, { name: 'e', data: 'x', channels: ['c'], info: 'everything' }), 400, /Unknown info attribute/);
    await bad(postEvent(api, { name: 'x'.repeat(201), data: 'x', channels: ['c'] }), 400, /Event name too long/);
    await bad(postEvent(api, { name: 'e', data: 'x', channels: ['c'.repeat(165)] }), 400, /Channel name too long/);
    await bad(postEvent(api, { name: 'e', data: 'x', channels: ['private-encrypted-a', 'b'] }), 400, /encrypted/);
    await bad(limited.trigger(['a', 'b', 'c'], 'e', 'x'), 400, /Too many channels: at most 2/);
    await bad(
      limited.triggerBatch([
        { channel: 'a', name: 'e', data: 'x' },
        { channel: 'b', name: 'e', data: 'x' },
        { channel: 'c', name: 'e', data: 'x' },
      ]),
      400,
      /Too many events: at most 2/,
    );
    await bad(limited.trigger('a', 'e', 'x'.repeat(101)), 413, /Event data too large/);
    await bad(api.triggerBatch([{ channel: 'ok', name: 'e', data: 'x' }, { channel: 'not ok', name: 'e', data: 'x' }]), 400, /batch\[1\]: Invalid channel name/);
  });

  test('errors: unknown app 404, disabled app 403, per-app rate 429 with Retry-After; headers name the code', async () => {
    const unknown = await signedRequest(h, main, 'GET', '/apps/nope/channels');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.text, 'Unknown app');
    assert.equal(unknown.headers.get('herald-error'), 'app_not_found');
    const disabled = await signedRequest(h, off, 'GET', '/apps/off/channels');
    assert.equal(disabled.status, 403);
    assert.equal(disabled.headers.get('herald-error'), 'app_disabled');
    // tight: 3 requests a second. Ten at once: the ones over it are answered 429, and the default app is not affected.
    const answers = await Promise.all(Array.from({ length: 10 }, () => signedRequest(h, tight, 'GET', '/apps/tight/channels')));
    const limited = answers.filter((a) => a.status === 429);
    assert.ok(limited.length > 0, `statuses: ${answers.map((a) => a.status).join(',')}`);
    assert.ok(answers.every((a) => a.status === 200 || a.status === 429), `statuses: ${answers.map((a) => a.status).join(',')}`);
    assert.equal(limited[0]!.headers.get('retry-after'), '1');
    assert.equal(limited[0]!.headers.get('herald-error'), 'too_many_requests');
    assert.equal((await signedRequest(h, main, 'GET', '/apps/main/channels')).status, 200);
  });

  test('content types: application/json with a charset is taken; another type is 415', async () => {
    const body = JSON.stringify({ name: 'e', data: 'x', channel: unique('typed') });
    const query = signedQuery(main, 'POST', '/apps/main/events', { body });
    const charset = await rawRequest(h, 'POST', `/apps/main/events?${query}`, body, { 'content-type': 'application/json; charset=utf-8' });
    assert.equal(charset.status, 200, charset.text);
    const form = await rawRequest(h, 'POST', `/apps/main/events?${query}`, body, { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(form.status, 415, form.text);
    assert.equal(form.headers.get('herald-error'), 'unsupported_media_type');
  });

  test('the front and fastify answer triggers alike (a percent-encoded path goes to fastify)', async () => {
    const channel = unique('both-paths');
    const stream = await subscriber('jay', channel);
    const viaFront = await signedRequest(h, main, 'POST', '/apps/main/events', { body: { name: 'front', data: 'x', channel } });
    const viaFastify = await signedRequest(h, main, 'POST', '/apps/%6Dain/events', { body: { name: 'fastify', data: 'y', channel } });
    assert.equal(viaFront.status, 200, viaFront.text);
    assert.equal(viaFastify.status, 200, viaFastify.text);
    assert.equal(viaFront.text, viaFastify.text);
    await stream.waitForFrame((f) => f['push'] === 'publication' && (f['data'] as { event: string }).event === 'fastify');
    const headersOf = (answer: { headers: Headers }) => {
      const list: [string, string][] = [];
      answer.headers.forEach((value, name) => {
        if (name !== 'date' && name !== 'content-length' && name !== 'keep-alive') list.push([name, value]);
      });
      return list;
    };
    assert.deepEqual(headersOf(viaFront), headersOf(viaFastify));
    for (const [front, fastify] of [
      ['/apps/main/events', '/apps/%6Dain/events'],
      ['/apps/main/batch_events', '/apps/%6Dain/batch_events'],
    ] as const) {
      const bodies = [{ name: 'e', data: 'x', channel: 'bad:name' }, { batch: [] }, { name: 'pusher:x', data: 'x', channel: 'c' }];
      for (const body of bodies) {
        const a = await signedRequest(h, main, 'POST', front, { body });
        const b = await signedRequest(h, main, 'POST', fastify, { body });
        assert.equal(a.status, b.status, `${front} ${JSON.stringify(body)}`);
        assert.equal(a.text, b.text);
        assert.deepEqual(headersOf(a), headersOf(b));
      }
      const unsigned = await rawRequest(h, 'POST', `${front}?auth_key=${main.key}`, '{}');
      const unsignedFastify = await rawRequest(h, 'POST', `${fastify}?auth_key=${main.key}`, '{}');
      assert.equal(unsigned.status, 401);
      assert.equal(unsigned.text, unsignedFastify.text);
      assert.deepEqual(headersOf(unsigned), headersOf(unsignedFastify));
    }
  });

  test('a body over pusher.maxApiBodyBytes is 413 before anything is parsed', async () => {
    const body = JSON.stringify({ name: 'e', data: 'x'.repeat(1024 * 1024 + 10), channel: 'c' });
    const answer = await rawRequest(h, 'POST', '/apps/main/events?auth_key=x', body);
    assert.equal(answer.status, 413);
    assert.equal(answer.headers.get('herald-error'), 'payload_too_large');
    assert.equal(answer.headers.get('connection'), 'close');
  });

  test('metrics count requests by app, route and status', async () => {
    await serverSdk(h, main).trigger(unique('metered'), 'e', 'x');
    const metrics = await call(h.server.adminPort, 'GET', '/metrics');
    assert.match(String(metrics.body), /herald_pusher_api_requests_total\{app="main",route="events",status="200"\} \d+/);
    assert.match(String(metrics.body), /herald_pusher_api_requests_total\{app="off",route="channels",status="403"\} 1/);
    assert.match(String(metrics.body), /herald_pusher_api_requests_total\{app="",route="channels",status="404"\} 1/);
  });
});

/** POST /events through the SDK with any body (its types say string; it sends JSON.stringify(body)). */
function postEvent(api: ReturnType<typeof serverSdk>, body: Record<string, unknown>): Promise<unknown> {
  return api.post({ path: '/events', body: body as unknown as string });
}

/** Turns a raw answer into an SDK-like failure (for `bad`). */
function fail(answer: { status: number; text: string }): never {
  throw Object.assign(new Error('failed'), { status: answer.status, body: answer.text });
}
