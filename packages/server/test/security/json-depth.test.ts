/**
 * `limits.maxJsonDepth` on every JSON input (SECURITY-TESTS B 12; DESIGN.md
 * defaults): the server API, commands on WebSocket and over HTTP (SSE and
 * long polling), the long-poll open and poll bodies, JWT claims and the
 * config file. A property drives nesting depths around the limit (limit − 1,
 * limit, limit + 1) and far beyond it (thousands), in arrays, objects, and
 * arrays whose strings hold brackets and escaped quotes, through each entry
 * point of a running server: at or under the limit the input is judged as
 * usual; above it the answer is the documented code (HTTP 400
 * `json_too_deep`, reply error 117 on WebSocket, 3500 for a token), never a
 * 500 or 100; the connection stays usable; and every stored publication
 * still reads back from history.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { createHmac } from 'node:crypto';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http, openWs, unique, type HttpAnswer, type Json, type WsClient } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { loadConfig } from '../../src/config/load.ts';
import { replyErrors } from '@herald/protocol';

const LIMIT = 64;

type Shape = 'arrays' | 'objects' | 'tricky';

/** JSON text of nesting depth `depth` (a scalar is depth 0). */
function nested(depth: number, shape: Shape): string {
  switch (shape) {
    case 'arrays':
      return '['.repeat(depth) + '0' + ']'.repeat(depth);
    case 'objects':
      return '{"a":'.repeat(depth) + '0' + '}'.repeat(depth);
    case 'tricky':
      // brackets and an escaped quote inside strings do not nest
      return '["]\\"[{",'.repeat(depth) + '"{[\\\\"' + ']'.repeat(depth);
  }
}

/** An HS256 JWT around exactly this payload text. */
function signRaw(payload: string, secret: string): string {
  const input = Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url') + '.' + Buffer.from(payload).toString('base64url');
  return input + '.' + createHmac('sha256', secret).update(input).digest('base64url');
}

interface Entry {
  readonly name: string;
  /** Levels the entry point's envelope adds around the nested value. */
  readonly envelope: number;
  /** Largest nested value the entry point can carry within its size limits. */
  readonly maxInner: number;
  /** Sends a body of total depth `depth`; checks the answer for `within` (depth ≤ limit). */
  run(inner: string, within: boolean): Promise<void>;
}

function assertTooDeep(answer: HttpAnswer, what: string): void {
  assert.equal(answer.status, 400, `${what}: ${answer.status} ${answer.text.slice(0, 200)}`);
  assert.equal(answer.body?.error?.code, 'json_too_deep', `${what}: ${answer.text.slice(0, 200)}`);
}

describe('JSON nesting depth limit on every input', { timeout: 180000 }, () => {
  let h: TestHerald;
  let headers: Record<string, string>;
  const channels = new Set<string>();
  let ws: WsClient;
  let session: LongPollSession;
  let wsId = 1000;

  before(async () => {
    h = await startHerald({ limits: { inboundRatePerSecond: 100000, inboundBurst: 100000, inboundHardPerSecond: 100000 } });
    headers = { authorization: `Bearer ${h.apiKey}` };
    ws = await connectWs(h, 'alice');
    session = await LongPollSession.open(h.url, { token: await h.token('bob') });
  });
  after(async () => {
    closeAllClients();
    await h?.close();
  });

  test('the default limit is 64', () => {
    assert.equal(h.server.node.config.limits.maxJsonDepth, LIMIT);
  });

  async function wsRequest(text: string, id: number): Promise<Json> {
    ws.sendRaw(text);
    return ws.take((f) => f.id === id, `reply ${id}`);
  }

  const entries: Entry[] = [
    {
      name: 'API publish',
      envelope: 1,
      maxInner: 60000,
      async run(inner, within) {
        const channel = unique('chat:depth-api');
        channels.add(channel);
        const answer = await http(`${h.url}/api/publish`, { headers, body: `{"channel":"${channel}","data":${inner}}` });
        if (within) assert.equal(answer.status, 200, answer.text.slice(0, 200));
        else assertTooDeep(answer, 'API publish');
      },
    },
    {
      name: 'API broadcast',
      envelope: 1,
      maxInner: 60000,
      async run(inner, within) {
        const channel = unique('chat:depth-broadcast');
        channels.add(channel);
        const answer = await http(`${h.url}/api/broadcast`, { headers, body: `{"channels":["${channel}"],"data":${inner}}` });
        if (within) assert.equal(answer.status, 200, answer.text.slice(0, 200));
        else assertTooDeep(answer, 'API broadcast');
      },
    },
    {
      name: 'WebSocket publish',
      envelope: 2,
      maxInner: 60000,
      async run(inner, within) {
        const channel = unique('chat:depth-ws');
        channels.add(channel);
        const id = ++wsId;
        const reply = await wsRequest(`{"id":${id},"method":"publish","params":{"channel":"${channel}","data":${inner}}}`, id);
        if (within) assert.equal(reply.error, undefined, JSON.stringify(reply).slice(0, 200));
        else assert.equal(reply.error?.code, replyErrors.json_too_deep.code, JSON.stringify(reply).slice(0, 200));
        // the connection stays usable
        const ping = ++wsId;
        assert.deepEqual((await wsRequest(`{"id":${ping},"method":"ping"}`, ping)).result, {});
      },
    },
    {
      name: 'HTTP command (SSE, long polling)',
      envelope: 2,
      maxInner: 60000,
      async run(inner, within) {
        const channel = unique('chat:depth-cmd');
        channels.add(channel);
        const answer = await http(`${h.url}/connection/command`, {
          headers: { 'herald-session': session.session },
          body: `{"id":1,"method":"publish","params":{"channel":"${channel}","data":${inner}}}`,
        });
        if (within) {
          assert.equal(answer.status, 200, answer.text.slice(0, 200));
          assert.equal(answer.body[0].error, undefined, answer.text.slice(0, 200));
        } else assertTooDeep(answer, 'HTTP command');
        assert.deepEqual((await session.request('ping', {})).result, {}, 'the session stays usable');
      },
    },
    {
      name: 'HTTP command batch',
      envelope: 3,
      maxInner: 60000,
      async run(inner, within) {
        const answer = await http(`${h.url}/connection/command`, {
          headers: { 'herald-session': session.session },
          body: `[{"id":1,"method":"ping"},{"id":2,"method":"publish","params":{"channel":"chat:depth-batch","data":${inner}}}]`,
        });
        if (within) assert.equal(answer.status, 200, answer.text.slice(0, 200));
        else assertTooDeep(answer, 'HTTP command batch');
      },
    },
    {
      name: 'long-poll open',
      envelope: 1,
      maxInner: 60000,
      async run(inner, within) {
        // `cursor` must be a string: within the limit this is a schema error
        const answer = await http(`${h.url}/connection/poll/open`, { body: `{"channels":["public:x"],"cursor":${inner}}` });
        if (within) {
          assert.equal(answer.status, 400, answer.text.slice(0, 200));
          assert.equal(answer.body.error.code, 'bad_request', answer.text.slice(0, 200));
        } else assertTooDeep(answer, 'long-poll open');
      },
    },
    {
      name: 'long-poll poll',
      envelope: 1,
      maxInner: 60000,
      async run(inner, within) {
        const answer = await http(`${h.url}/connection/poll`, { headers: { 'herald-session': session.session }, body: `{"seq":${inner}}` });
        if (within) {
          assert.equal(answer.status, 400, answer.text.slice(0, 200));
          assert.equal(answer.body.error.code, 'bad_request', answer.text.slice(0, 200));
        } else assertTooDeep(answer, 'long-poll poll');
      },
    },
    {
      name: 'JWT claims',
      envelope: 1,
      // a token is at most 16 KiB
      maxInner: 11000,
      async run(inner, within) {
        // signed by hand: jose's own signer copies the claims recursively
        const token = signRaw(`{"sub":"deep","exp":${Math.floor(Date.now() / 1000) + 3600},"info":${inner}}`, h.hmacSecret);
        const c = await openWs(h.wsUrl);
        c.sendRaw(JSON.stringify({ id: 1, method: 'connect', params: { token } }));
        if (within) {
          const reply = await c.take((f) => f.id === 1, 'connect reply');
          assert.equal(reply.error, undefined, JSON.stringify(reply).slice(0, 200));
          c.ws.close();
        } else assert.equal((await c.closed).code, 3500, 'refused as an invalid token');
      },
    },
  ];

  test('property: depths around the limit and far beyond, through every entry point', async () => {
    const depth = fc.oneof(fc.constantFrom(LIMIT - 1, LIMIT, LIMIT + 1), fc.integer({ min: 1000, max: 20000 }));
    const shape = fc.constantFrom<Shape>('arrays', 'objects', 'tricky');
    const checked = new Set<string>();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...entries), depth, shape, async (entry, total, form) => {
        const inner = nested(Math.max(0, total - entry.envelope), form);
        if (inner.length > entry.maxInner) return;
        checked.add(`${entry.name} ${total <= LIMIT ? 'within' : 'above'}`);
        await entry.run(inner, total <= LIMIT);
      }),
      {
        numRuns: 150,
        // every entry point at the boundary, whatever the random runs pick
        examples: entries.flatMap((entry) => [LIMIT - 1, LIMIT, LIMIT + 1, 4400].map((total) => [entry, total, 'arrays'] as [Entry, number, Shape])),
      },
    );
    for (const entry of entries) {
      assert.ok(checked.has(`${entry.name} within`) && checked.has(`${entry.name} above`), `${entry.name} was driven on both sides of the limit`);
    }
  });

  test('nothing stored breaks a reader: history of every channel reads back, on the API and on WebSocket', async () => {
    // one publication exactly at the limit (data at depth LIMIT - 1), read back where the reply nests it deeper
    const channel = unique('chat:depth-boundary');
    channels.add(channel);
    const boundary = await http(`${h.url}/api/publish`, { headers, body: `{"channel":"${channel}","data":${nested(LIMIT - 1, 'arrays')}}` });
    assert.equal(boundary.status, 200, boundary.text);
    for (const name of channels) {
      const api = await http(`${h.url}/api/history`, { headers, body: { channel: name, limit: 100 } });
      assert.equal(api.status, 200, `${name}: ${api.text.slice(0, 200)}`);
      assert.ok(Array.isArray(api.body.publications));
      const reply = await ws.request('history', { channel: name, limit: 100 });
      assert.equal(reply.error, undefined, `${name}: ${JSON.stringify(reply).slice(0, 200)}`);
    }
    const read = await http(`${h.url}/api/history`, { headers, body: { channel, limit: 1 } });
    assert.equal(read.text.includes('['.repeat(LIMIT - 1) + '0' + ']'.repeat(LIMIT - 1)), true, 'the data comes back as it was published');
  });
});

describe('JSON nesting depth limit on the config file', () => {
  test('a config file nested deeper than 64 levels is refused with a message that says so', () => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-depth-'));
    try {
      fc.assert(
        fc.property(fc.oneof(fc.constantFrom(LIMIT - 1, LIMIT, LIMIT + 1), fc.integer({ min: 1000, max: 50000 })), (total) => {
          const file = join(dir, 'config.json');
          // {"channels":{"defaults":{"presence": <nested>}}}: 3 levels around the value
          writeFileSync(file, `{"channels":{"defaults":{"presence":${nested(total - 3, 'arrays')}}}}`);
          let message = '';
          try {
            loadConfig({ file, env: {} });
          } catch (error) {
            message = (error as Error).message;
          }
          assert.notEqual(message, '', 'refused either way (presence is a boolean)');
          assert.equal(/nest/i.test(message), total > LIMIT, `depth ${total}: ${message.slice(0, 200)}`);
        }),
        { numRuns: 30 },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
