/**
 * SECURITY-TESTS.md section B, item 13: `__proto__` and
 * `constructor.prototype` in client commands (WebSocket and HTTP), publish
 * bodies (client and server API), the config, and JWT claims have no effect
 * anywhere: nothing is polluted in the server process, nothing reaches
 * subscribers, and what Herald serializes (presence `conn_info`) stays plain
 * data for whoever parses it.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http, openWs, unique, type Json } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { buildConfig, ConfigError } from '../../src/config/load.ts';

const canaries = ['polluted', 'isAdmin', 'scopes', 'allowAnonymous', 'clientPublish', 'user'];

function assertClean(): void {
  for (const key of canaries) {
    assert.equal(({} as Record<string, unknown>)[key], undefined, `Object.prototype.${key} was polluted`);
    assert.equal(Object.hasOwn(Object.prototype, key), false, `Object.prototype has ${key}`);
  }
  assert.equal((Array.prototype as unknown as Record<string, unknown>)['polluted'], undefined);
  assert.equal((Function.prototype as unknown as Record<string, unknown>)['polluted'], undefined);
}

/** JSON texts that try to pollute, as a client would send them (own `__proto__` keys survive only in text). */
const poisons = [
  '{"__proto__":{"polluted":"yes","isAdmin":true}}',
  '{"constructor":{"prototype":{"polluted":"yes"}}}',
  '{"a":[{"b":{"__proto__":{"polluted":"yes"}}}]}',
  '{"nested":{"constructor":{"prototype":{"scopes":["admin"]}}}}',
];

describe('prototype pollution (SECURITY-TESTS B 13)', { timeout: 60000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald();
  });
  afterEach(() => {
    closeAllClients();
    assertClean();
  });
  after(async () => {
    await h?.close();
    assertClean();
  });

  test('WebSocket commands: poisoned params or publish data close the connection (3501); subscribers get nothing', async () => {
    const channel = unique('chat:proto');
    const subscriber = await connectWs(h, 'watcher');
    await subscriber.call('subscribe', { channel });
    const texts = [
      '{"id":1,"method":"connect","params":{"__proto__":{"polluted":"yes"}}}',
      '{"id":1,"method":"connect","__proto__":{"polluted":"yes"}}',
      '{"__proto__":{"polluted":"yes"},"id":1,"method":"connect"}',
      ...poisons.map((data) => `{"id":2,"method":"publish","params":{"channel":"${channel}","data":${data}}}`),
      `{"id":2,"method":"subscribe","params":{"channel":"${channel}","constructor":{"prototype":{"polluted":"yes"}}}}`,
    ];
    for (const text of texts) {
      const c = await openWs(h.wsUrl);
      if (!text.includes('"connect"')) await c.connect(await h.token('mallory'));
      c.sendRaw(text);
      const closed = await c.waitClose();
      assert.equal(closed.code, 3501, `${text}: closed with ${closed.code}`);
      assertClean();
    }
    // a harmless publish afterwards is the first and only thing the subscriber sees
    const publisher = await connectWs(h, 'alice');
    await publisher.call('publish', { channel, data: { constructor: 'ok', prototype: 'ok' } });
    const [publication] = await subscriber.waitPublications(channel, 1);
    assert.deepEqual(publication.data, { constructor: 'ok', prototype: 'ok' }, 'plain keys named constructor/prototype are data');
    assert.equal(subscriber.publications(channel).length, 1);
  });

  test('HTTP commands (SSE/long polling): poisoned bodies are 400 invalid_json, the session survives', async () => {
    const session = await LongPollSession.open(h.url, { token: await h.token('bob') });
    for (const data of poisons) {
      for (const body of [`{"id":1,"method":"publish","params":{"channel":"chat:x","data":${data}}}`, `[{"id":1,"method":"ping"},${data}]`]) {
        const answer = await http(`${h.url}/connection/command`, { headers: { 'herald-session': session.session }, body });
        assert.equal(answer.status, 400, `${body}: ${answer.text}`);
        assert.equal(answer.body.error.code, 'invalid_json');
      }
    }
    const opened = await http(`${h.url}/connection/poll/open`, { body: '{"channels":["public:x"],"__proto__":{"polluted":"yes"}}' });
    assert.equal(opened.status, 400, opened.text);
    const reply = await session.request('ping', {});
    assert.equal(reply.error, undefined, 'the session still works');
    await session.close();
  });

  test('server API: poisoned publish bodies are 400 and publish nothing', async () => {
    const channel = unique('chat:api-proto');
    for (const data of poisons) {
      for (const body of [`{"channel":"${channel}","data":${data}}`, `{"channel":"${channel}","data":1,"__proto__":{"polluted":"yes"}}`]) {
        const response = await fetch(`${h.url}/api/publish`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${h.apiKey}` },
          body,
        });
        assert.equal(response.status, 400, `${body}: ${await response.text()}`);
      }
    }
    const broadcast = await fetch(`${h.url}/api/broadcast`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${h.apiKey}` },
      body: `{"channels":["${channel}"],"data":${poisons[1]}}`,
    });
    assert.equal(broadcast.status, 400);
    const history = await h.api('history', { channel, limit: 10 });
    assert.equal(history.status, 200);
    assert.equal(history.body.offset, 0, 'nothing was published');
  });

  test('config: __proto__, constructor and prototype keys are refused anywhere', () => {
    const texts = [
      '{"__proto__":{"mode":"development"}}',
      '{"limits":{"__proto__":{"maxMessageBytes":1}}}',
      '{"channels":{"namespaces":[{"name":"x","constructor":{"prototype":{"allowAnonymous":true}}}]}}',
      '{"api":{"keys":[{"name":"k","sha256":"' + '0'.repeat(64) + '","scopes":["read"],"__proto__":{"scopes":["admin"]}}]}}',
    ];
    for (const text of texts) {
      assert.throws(() => buildConfig(JSON.parse(text) as Record<string, unknown>, { env: {} }), ConfigError, text);
    }
    assertClean();
  });

  test('JWT claims: an `info` with __proto__ or constructor.prototype pollutes nothing, and presence stays plain data', async () => {
    const channel = unique('chat:jwt-proto');
    // JSON.parse makes own "__proto__" keys, as a token issuer serializing user data could.
    const infos = [JSON.parse('{"__proto__":{"polluted":"yes","isAdmin":true},"name":"m"}'), JSON.parse('{"constructor":{"prototype":{"polluted":"yes"}}}')];
    const outcomes: string[] = [];
    for (const info of infos) {
      const c = await openWs(h.wsUrl);
      const token = await h.token('mallory', { info, ...JSON.parse('{"__proto__":{"isAdmin":true}}') });
      const connected = await c.request('connect', { token }).catch(() => undefined);
      if (connected === undefined || connected.error !== undefined || c.closeInfo !== undefined) {
        // refusing such a token is a valid outcome
        outcomes.push('refused');
        continue;
      }
      outcomes.push('accepted');
      await c.call('subscribe', { channel });
      assertClean();
    }
    const presence = await h.api('presence', { channel });
    assert.equal(presence.status, 200);
    const clients = Object.values(presence.body.clients as Record<string, Json>);
    assert.equal(clients.length, outcomes.filter((o) => o === 'accepted').length);
    for (const entry of clients) {
      assert.equal(entry.user, 'mallory');
      assert.equal(Object.getPrototypeOf(entry), Object.prototype);
      if (entry.conn_info !== undefined) {
        assert.equal(Object.getPrototypeOf(entry.conn_info), Object.prototype, 'conn_info parses as a plain object');
        assert.equal(entry.conn_info.polluted, undefined);
        assert.equal(entry.conn_info.isAdmin, undefined);
      }
      assert.equal(entry.isAdmin, undefined);
    }
    // over the client protocol as well
    const watcher = await connectWs(h, 'watcher');
    await watcher.call('subscribe', { channel });
    const result = await watcher.call('presence', { channel });
    assert.equal(Object.keys(result.clients).length, clients.length + 1);
    assertClean();
  });

  test('JWT claims: a poisoned key deep inside `info` is refused like one near the top', async () => {
    // 40 levels: inside the nesting limit (64), beyond where a depth-bounded scanner gives up.
    for (const poison of ['{"__proto__":{"polluted":"yes"}}', '{"constructor":{"prototype":{"polluted":"yes"}}}']) {
      const info = JSON.parse('{"a":'.repeat(40) + poison + '}'.repeat(40)) as Json;
      const c = await openWs(h.wsUrl);
      const reply = await c.request('connect', { token: await h.token('mallory', { info }) }).catch(() => undefined);
      assert.ok(reply === undefined || reply.error !== undefined, `accepted: ${JSON.stringify(reply)?.slice(0, 200)}`);
      assert.equal((await c.waitClose()).code, 3500, 'refused as an invalid token');
    }
    assertClean();
  });

  test(
    'JWT claims: poisoned keys never reach what Herald serializes (a token carrying them is refused)',
    async () => {
      const channel = unique('chat:jwt-proto-text');
      const watcher = await connectWs(h, 'watcher');
      await watcher.call('subscribe', { channel });
      for (const text of ['{"__proto__":{"polluted":"yes"}}', '{"constructor":{"prototype":{"polluted":"yes"}}}']) {
        const c = await openWs(h.wsUrl);
        const reply = await c.request('connect', { token: await h.token('mallory', { info: JSON.parse(text) }) }).catch(() => undefined);
        assert.ok(reply === undefined || reply.error !== undefined, `accepted: ${JSON.stringify(reply)}`);
        assert.equal((await c.waitClose()).code, 3500, 'refused as an invalid token');
      }
      const presence = await fetch(`${h.url}/api/presence`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${h.apiKey}` },
        body: JSON.stringify({ channel }),
      });
      const raw = await presence.text();
      assert.ok(!raw.includes('__proto__') && !raw.includes('"prototype"'), raw);
    },
  );
});
