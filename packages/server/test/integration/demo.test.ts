/**
 * The chat example's routes (packages/server/src/app/demo.ts): served in development mode
 * only; the bundles build; the token endpoint mints working tokens for valid
 * names and refuses the rest.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { recordedClient } from '../../../client/test/sdk-helpers.ts';

describe('chat example routes', { timeout: 60000 }, () => {
  let dev: TestHerald;
  let prod: TestHerald;

  before(async () => {
    [dev, prod] = await Promise.all([startHerald({ mode: 'development' }), startHerald()]);
  });
  after(async () => {
    await Promise.all([dev.close(), prod.close()]);
  });

  test('development mode serves the page, its style and both bundles', async () => {
    const redirect = await fetch(`${dev.url}/examples/chat`, { redirect: 'manual' });
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.get('location'), '/examples/chat/');

    const page = await fetch(`${dev.url}/examples/chat/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    const html = await page.text();
    assert.match(html, /<meta name="herald-namespace" content="chat">/, 'the configured chat namespace is used');
    assert.match(html, /<script type="module" src="chat.js">/);
    assert.doesNotMatch(html, /<script>|style="/, 'no inline script or style (the CSP forbids them)');

    const css = await fetch(`${dev.url}/examples/chat/chat.css`);
    assert.equal(css.status, 200);
    assert.match(css.headers.get('content-type') ?? '', /^text\/css/);

    const sdk = await fetch(`${dev.url}/examples/chat/herald-client.js`);
    assert.equal(sdk.status, 200);
    assert.match(sdk.headers.get('content-type') ?? '', /^text\/javascript/);
    const sdkText = await sdk.text();
    assert.doesNotMatch(sdkText, /\bimport\s*[{*"']|\bfrom\s*"/, 'the SDK bundle imports nothing');
    assert.match(sdkText, /export\s*\{[^}]*HeraldClient/);

    const chat = await fetch(`${dev.url}/examples/chat/chat.js`);
    assert.equal(chat.status, 200);
    const chatText = await chat.text();
    assert.match(chatText, /from\s*["']\.\/herald-client\.js["']/, 'the page script loads the SDK bundle beside it');
    assert.ok(chatText.length < sdkText.length * 2, 'the SDK is not bundled into the page script');
  });

  test('the token endpoint mints a token that connects as that user', async () => {
    const answer = await fetch(`${dev.url}/examples/chat/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'alice.demo' }),
    });
    assert.equal(answer.status, 200);
    assert.equal(answer.headers.get('cache-control'), 'no-store');
    const body = (await answer.json()) as { token: string; ttl: number };
    assert.equal(body.ttl, 600);
    const c = recordedClient({ url: dev.url, token: body.token, transports: ['websocket'] });
    try {
      const sub = c.client.subscribe('chat:demo-token');
      const subscribed = new Promise((resolve) => sub.once('subscribed', resolve));
      c.client.connect();
      await subscribed;
      const presence = await sub.presence();
      assert.deepEqual(Object.values(presence).map((p) => p.user), ['alice.demo']);
    } finally {
      c.client.disconnect();
    }
  });

  test('the rooms endpoint lists the rooms someone is in, shared by every page', async () => {
    const rooms = async () => ((await (await fetch(`${dev.url}/examples/chat/rooms`)).json()) as { rooms: string[] }).rooms;
    assert.ok(!(await rooms()).includes('shared-room'));
    const c = recordedClient({ url: dev.url, token: await dev.token('ann'), transports: ['websocket'] });
    try {
      const subscribed = Promise.all(
        ['chat:shared-room', 'chat:@rooms', 'public:elsewhere'].map((channel) => {
          const sub = c.client.subscribe(channel);
          return new Promise((resolve) => sub.once('subscribed', resolve));
        }),
      );
      c.client.connect();
      await subscribed;
      const listed = await rooms();
      assert.ok(listed.includes('shared-room'), JSON.stringify(listed));
      assert.ok(!listed.some((room) => room.includes('@') || room.includes('elsewhere')), 'only rooms of the chat namespace, not its announcement channel');
    } finally {
      c.client.disconnect();
    }
    const answer = await fetch(`${prod.url}/examples/chat/rooms`);
    assert.equal(answer.status, 404, 'not in production mode');
  });

  test('the token endpoint refuses bad names and bodies', async () => {
    for (const body of [{ user: 'a b' }, { user: '' }, { user: 'x'.repeat(33) }, { user: 'ok', admin: true }, {}, [], 'alice', { user: 7 }]) {
      const answer = await fetch(`${dev.url}/examples/chat/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.equal(((await answer.json()) as { error: { code: string } }).error.code, 'bad_request');
    }
  });

  test('production mode serves none of it', async () => {
    for (const path of ['/examples/chat/', '/examples/chat/herald-client.js', '/examples/chat/chat.js']) {
      const answer = await fetch(`${prod.url}${path}`);
      assert.equal(answer.status, 404, path);
    }
    const token = await fetch(`${prod.url}/examples/chat/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'mallory' }),
    });
    assert.equal(token.status, 404);
  });
});
