/**
 * `POST /api/batch`: many publishes in one request, in order, each with its
 * own result; and what it refuses as a whole (docs/protocol.md "Server HTTP
 * API"): too many items, wrong types, a missing `data`, unknown keys,
 * `__proto__`, a body over api.maxBodyBytes, a key without the scope.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { apiErrors } from '@herald/protocol';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http, unique, type Json } from '../helpers/herald-ws.ts';

const sha256 = (key: string): string => createHash('sha256').update(key).digest('hex');
const ADMIN = randomBytes(24).toString('base64url');
const READER = randomBytes(24).toString('base64url');

describe('server API: batch', { timeout: 30000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({
      api: {
        maxBatchPublishes: 5,
        keys: [
          { name: 'admin', sha256: sha256(ADMIN), scopes: ['admin'] },
          { name: 'reader', sha256: sha256(READER), scopes: ['read'] },
        ],
      },
      limits: { maxMessageBytes: 1024 },
    });
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await h.close();
  });

  const api = (method: string, body: unknown, key = ADMIN) => h.api(method, body, key);

  function assertError(answer: { status: number; body: Json }, status: number, code: keyof typeof apiErrors, detail?: RegExp): void {
    assert.equal(answer.status, status, `expected ${status} ${code}, got ${answer.status} ${JSON.stringify(answer.body)}`);
    assert.equal(answer.body?.error?.code, code, JSON.stringify(answer.body));
    assert.equal(answer.body.error.message, apiErrors[code].message);
    if (detail !== undefined) assert.match(answer.body.error.detail ?? '', detail);
  }

  /** Publishes a marker and returns what the subscriber saw on `channel` up to it: proves nothing else arrived. */
  async function seenUntilMarker(c: Awaited<ReturnType<typeof connectWs>>, channel: string): Promise<unknown[]> {
    const marker = await api('publish', { channel, data: 'marker' });
    assert.equal(marker.status, 200);
    return (await c.waitMarker(channel, 'marker')).map((p) => p.data);
  }

  test('publishes in order, one result per publish, each failing on its own', async () => {
    const a = unique('chat:batch-a');
    const b = unique('chat:batch-b');
    const c = await connectWs(h, 'alice');
    const subA = await c.call('subscribe', { channel: a });
    const subB = await c.call('subscribe', { channel: b });
    const answer = await api('batch', {
      publishes: [
        { channel: a, data: { n: 1 } },
        { channel: b, data: 'b1' },
        { channel: 'nope:x', data: 1 },
        { channel: a, data: { n: 2, big: 'x'.repeat(2000) } },
        { channel: a, data: { n: 3 } },
      ],
    });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.deepEqual(answer.body, {
      results: [
        { channel: a, epoch: subA.epoch, offset: 1 },
        { channel: b, epoch: subB.epoch, offset: 1 },
        { channel: 'nope:x', error: { code: 'unknown_namespace', message: apiErrors.unknown_namespace.message } },
        { channel: a, error: { code: 'payload_too_large', message: apiErrors.payload_too_large.message } },
        { channel: a, epoch: subA.epoch, offset: 2 },
      ],
    });
    assert.deepEqual(
      (await c.waitPublications(a, 2)).map((p) => [p.offset, p.data]),
      [
        [1, { n: 1 }],
        [2, { n: 3 }],
      ],
    );
    assert.deepEqual((await c.waitPublications(b, 1))[0].data, 'b1');
  });

  test('refused as a whole, publishing nothing: too many, none, wrong types, missing data, unknown keys', async () => {
    const channel = unique('chat:batch-bad');
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel });
    const item = { channel, data: 'must not arrive' };
    const cases: [unknown, RegExp][] = [
      [{ publishes: Array.from({ length: 6 }, () => item) }, /^\/publishes: /],
      [{ publishes: [] }, /^\/publishes: /],
      [{}, /publishes/],
      [{ publishes: item }, /^\/publishes: /],
      [{ publishes: [item, 'x'] }, /^\/publishes\/1: /],
      [{ publishes: [item, { channel: 5, data: 1 }] }, /^\/publishes\/1\/channel: /],
      [{ publishes: [item, { channel }] }, /^\/publishes\/1\/data: expected required property/],
      [{ publishes: [item, { ...item, extra: 1 }] }, /^\/publishes\/1/],
      [{ publishes: [item], extra: 1 }, /extra/],
      [[item], /^\//],
    ];
    for (const [body, detail] of cases) assertError(await api('batch', body), 400, 'bad_request', detail);
    const proto = await http(`${h.url}/api/batch`, {
      headers: { authorization: `Bearer ${ADMIN}` },
      body: `{"publishes":[{"channel":"${channel}","data":{"__proto__":{"polluted":"yes"}}}]}`,
    });
    assert.equal(proto.status, 400, proto.text);
    assert.deepEqual(await seenUntilMarker(c, channel), ['marker']);
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  });

  test('a body over api.maxBodyBytes is 413 and publishes nothing; a key without scope publish is 403; no key 401', async () => {
    const channel = unique('chat:batch-big');
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel });
    const item = { channel, data: 'y'.repeat(1000) };
    const tooLarge = await api('batch', { publishes: Array.from({ length: 5 }, () => item), pad: 'z'.repeat(70 * 1024) });
    assertError(tooLarge, 413, 'payload_too_large');
    assertError(await api('batch', { publishes: [item] }, READER), 403, 'forbidden');
    const noKey = await http(`${h.url}/api/batch`, { body: { publishes: [item] } });
    assertError({ status: noKey.status, body: noKey.body }, 401, 'unauthorized');
    assert.deepEqual(await seenUntilMarker(c, channel), ['marker']);
  });
});
