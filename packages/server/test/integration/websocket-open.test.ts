/**
 * A WebSocket connection opened in its upgrade request (docs/protocol.md,
 * "WebSocket", "Connect in the upgrade request"): `connect=1` with the
 * token, channels and a position vector in the URL. Refusals come before
 * the 101 as HTTP errors with the registered body; after it the client
 * reads `connected`, `subscribed` (or `unsubscribed`) pushes and the
 * recovered publications without sending anything, then uses the
 * connection as any other.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, openWs, signToken, unique, type Json, type WsClient } from '../helpers/herald-ws.ts';
import { parseAnswer, rawExchange, upgradeHead } from '../security/raw-http.ts';
import { openUrl } from '../helpers/ws-open.ts';
import { serverFrames } from '../helpers/ws-frames.ts';

/** An upgrade answer read off a raw socket: its head and the server's frames after it (unmasked, payload as text). */
interface RawUpgrade {
  readonly status: number;
  readonly headers: Map<string, string>;
  readonly frames: { readonly opcode: number; readonly payload: string }[];
}

/** Writes `data` on a raw socket and reads the upgrade answer until `done(frames)` (rejects after 10 s). */
function rawExchangeUntil(port: number, data: string | Buffer, done: (frames: RawUpgrade['frames']) => boolean): Promise<RawUpgrade> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer within 10 s; got: ${received.toString('latin1').slice(0, 300)}`));
    }, 10000);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      const answer = parseAnswer(received.subarray(0, end + 4).toString('latin1'), false);
      const frames = serverFrames(received.subarray(end + 4));
      if (!done(frames)) return;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: answer.status, headers: answer.headers, frames });
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.write(data);
  });
}

/** Frames in arrival order, replies left out. */
function pushes(client: WsClient): Json[] {
  return client.frames.filter((f: Json) => f.push !== undefined);
}

describe('WebSocket opened in the upgrade request', { timeout: 60000 }, () => {
  let h: TestHerald;
  let dir = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'herald-ws-open-'));
    const file = join(dir, 'hooks.js');
    writeFileSync(
      file,
      `export function onConnect(e) {
  if (e.user === 'banned') return { error: { code: 4403, message: 'banned' } };
  return { result: { user: e.user } };
}
export function onSubscribe(e) {
  if (e.channel.startsWith('hooked:secret')) return { error: { code: 1403, message: 'not a member' } };
  return { result: {} };
}
`,
    );
    h = await startHerald({
      hooks: { javascript: { file, events: ['connect', 'subscribe'] } },
      channels: {
        namespaces: [
          { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
          { name: 'public', allowAnonymous: true, clientPublish: true },
          { name: 'hooked' },
          { name: 'priv', private: true },
        ],
      },
    });
  });
  afterEach(() => closeAllClients());
  after(async () => {
    await h.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('connects and subscribes with recovery: connected, subscribed, the missed publications in order and once, then live ones; nothing sent by the client', async () => {
    const a = unique('chat:a');
    const b = unique('chat:b');
    const first = await h.api('publish', { channel: a, data: { n: 1 } });
    assert.equal(first.status, 200);
    const { epoch } = first.body;
    for (const n of [2, 3, 4]) assert.equal((await h.api('publish', { channel: a, data: { n } })).status, 200);
    const client = await openWs(openUrl(h.wsUrl, { token: await h.token('alice'), channel: b, last_event_id: `${a}|${epoch}|1` }));
    const connected = await client.push('connected');
    assert.equal(typeof connected.client, 'string');
    assert.equal(connected.session, undefined, 'no session: commands go over the socket');
    const subA = await client.push('subscribed', a);
    assert.deepEqual({ was_recovering: subA.was_recovering, recovered: subA.recovered, epoch: subA.epoch, offset: subA.offset }, { was_recovering: true, recovered: true, epoch, offset: 4 });
    const subB = await client.push('subscribed', b);
    assert.equal(subB.was_recovering, false);
    await client.waitPublications(a, 3);
    await h.api('publish', { channel: a, data: { n: 5 } });
    await h.api('publish', { channel: b, data: { n: 1 } });
    await client.waitPublications(a, 4);
    await client.waitPublications(b, 1);
    assert.deepEqual(
      client.publications(a).map((p: Json) => [p.offset, p.data.n]),
      [
        [2, 2],
        [3, 3],
        [4, 4],
        [5, 5],
      ],
    );
    // The `connected` push comes first, each `subscribed` before its channel's publications.
    const order = pushes(client).map((f: Json) => `${f.push}:${f.channel ?? ''}`);
    assert.equal(order[0], 'connected:');
    assert.ok(order.indexOf(`subscribed:${a}`) < order.indexOf(`publication:${a}`));
    // The connection works as any other: commands, presence, a further subscribe, a second connect refused.
    assert.deepEqual(await client.call('ping'), {});
    assert.equal(Object.keys((await client.call('presence', { channel: a })).clients).length, 1);
    const c = unique('chat:c');
    assert.equal((await client.call('subscribe', { channel: c })).recoverable, true);
    assert.equal(await client.callError('subscribe', { channel: a }), 105, 'already subscribed');
    assert.equal(await client.callError('connect', { token: await h.token('alice') }), 114, 'already connected');
    await client.close();
  });

  test('refusals before the 101 are HTTP errors with the registered body', async () => {
    const port = h.server.port;
    const cases: { target: string; extra?: string[]; status: number; code: string }[] = [
      { target: `/connection/websocket?connect=1&token=not-a-jwt`, status: 401, code: 'unauthorized' },
      { target: `/connection/websocket?connect=1&token=${await signToken('wrong-secret', { sub: 'x' })}`, status: 401, code: 'unauthorized' },
      { target: `/connection/websocket?connect=1&token=${await h.token('alice', {}, -60)}`, status: 401, code: 'token_expired' },
      { target: `/connection/websocket?connect=1&token=${await h.token('banned')}`, status: 403, code: 'connection_denied' },
      { target: `/connection/websocket?connect=1&channel=chat:x`, status: 403, code: 'anonymous_not_allowed' },
      { target: `/connection/websocket?connect=1&token=${await h.token('alice')}&channel=priv:x`, status: 403, code: 'subscription_token_required' },
      { target: `/connection/websocket?connect=1&token=${await h.token('alice')}&channel=nope:x`, status: 400, code: 'unknown_namespace' },
      { target: `/connection/websocket?connect=1&token=${await h.token('alice')}&name=${'n'.repeat(65)}`, status: 400, code: 'bad_request' },
      // The Authorization header carries the token as well (non-browser clients).
      { target: `/connection/websocket?connect=1`, extra: ['Authorization: Bearer not-a-jwt'], status: 401, code: 'unauthorized' },
    ];
    for (const { target, extra, status, code } of cases) {
      const answer = await rawExchange(port, upgradeHead(port, extra, target), { timeoutMs: 3000 }).catch((error: Error) => assert.fail(`${target}: ${error.message}`));
      assert.equal(answer.status, status, `${target.slice(0, 80)}: ${answer.text.slice(0, 200)}`);
      assert.equal(JSON.parse(answer.body).error.code, code, target.slice(0, 80));
      assert.ok(answer.closed);
      assert.ok(!answer.text.includes('101 Switching'), 'no upgrade');
    }
    // A good one upgrades, with a bearer header instead of the query.
    const ok = await rawExchange(port, upgradeHead(port, [`Authorization: Bearer ${await h.token('alice')}`], '/connection/websocket?connect=1'), { until: 'head' });
    assert.equal(ok.status, 101);
  });

  test('a subscribe hook refusal leaves the connection open with an unsubscribed push for that channel; the others are made', async () => {
    const open = unique('hooked:open');
    const secret = unique('hooked:secret');
    const client = await openWs(openUrl(h.wsUrl, { token: await h.token('bob'), channel: [secret, open] }));
    await client.push('connected');
    const refused = await client.push('unsubscribed', secret);
    assert.deepEqual({ code: refused.code, reason: refused.reason }, { code: 1403, reason: 'not a member' });
    await client.push('subscribed', open);
    await h.api('publish', { channel: open, data: { ok: true } });
    await client.waitPublications(open, 1);
    assert.deepEqual(await client.call('ping'), {});
  });

  test('a private channel from a position vector gets unsubscribed 3504, and subscribes by command with its token', async () => {
    const channel = unique('priv:p');
    const first = await h.api('publish', { channel, data: { n: 1 } });
    const client = await openWs(openUrl(h.wsUrl, { token: await h.token('carol'), last_event_id: `${channel}|${first.body.epoch}|1` }));
    await client.push('connected');
    const push = await client.push('unsubscribed', channel);
    assert.equal(push.code, 3504);
  });

  test('batch=1 combines: connected says batch and the opening frames may share a message', async () => {
    const channel = unique('chat:batch');
    const first = await h.api('publish', { channel, data: { n: 1 } });
    for (const n of [2, 3]) await h.api('publish', { channel, data: { n } });
    const client = await openWs(openUrl(h.wsUrl, { token: await h.token('dave'), batch: '1', last_event_id: `${channel}|${first.body.epoch}|1` }));
    // A batch is one message of frames joined by "\n" (recorded unparsed by the helper).
    const expand = (): Json[] => client.frames.flatMap((f: Json) => (f.unparsable === undefined ? [f] : String(f.unparsable).split('\n').map((line) => JSON.parse(line))));
    const frames = await client.waitUntil(() => {
      const all = expand();
      return all.filter((f) => f.push === 'publication').length >= 2 ? all : undefined;
    }, 'two recovered publications');
    const connected = frames.find((f) => f.push === 'connected');
    assert.equal(connected.batch, true);
    assert.deepEqual(
      frames.filter((f) => f.push === 'publication').map((f) => f.offset).sort(),
      [2, 3],
    );
  });

  test('a Last-Event-ID header is read before the last_event_id parameter, as on SSE', async () => {
    const channel = unique('chat:hdr');
    const first = await h.api('publish', { channel, data: { n: 1 } });
    for (const n of [2, 3]) await h.api('publish', { channel, data: { n } });
    const client = await openWs(openUrl(h.wsUrl, { token: await h.token('erin'), last_event_id: `${channel}|${first.body.epoch}|3` }), {
      headers: { 'Last-Event-ID': `${channel}|${first.body.epoch}|1` },
    });
    await client.push('subscribed', channel);
    const publications = await client.waitPublications(channel, 2);
    assert.deepEqual(
      publications.map((p: Json) => p.offset),
      [2, 3],
    );
  });

  test('frames sent right behind the upgrade request are read after the 101 and the opening frames: a ping is answered after them', async () => {
    const channel = unique('public:ping');
    const head = upgradeHead(h.server.port, [], `/connection/websocket?connect=1&channel=${encodeURIComponent(channel)}`);
    // A masked ping with payload "p1" in the same write as the request.
    const mask = [1, 2, 3, 4];
    const ping = Buffer.from([0x89, 0x80 | 2, ...mask, 'p'.charCodeAt(0) ^ mask[0]!, '1'.charCodeAt(0) ^ mask[1]!]);
    const names = (frames: RawUpgrade['frames']): string[] => frames.map((f) => (f.opcode === 1 ? `${JSON.parse(f.payload).push}` : `opcode ${f.opcode}:${f.payload}`));
    const answer = await rawExchangeUntil(h.server.port, Buffer.concat([Buffer.from(head, 'latin1'), ping]), (frames) => names(frames).includes('opcode 10:p1') && names(frames).includes('subscribed'));
    // The answer starts with the 101 (a pong written before it would come first), then `connected`.
    assert.equal(answer.status, 101);
    assert.equal(answer.headers.get('sec-websocket-protocol'), undefined, 'no subprotocol asked, none answered');
    const order = names(answer.frames);
    assert.equal(order[0], 'connected');
    assert.deepEqual([...order].sort(), ['connected', 'opcode 10:p1', 'subscribed']);
  });

  test('a subprotocol list is answered as ws answers it (the first one) on an open in the upgrade request too', async () => {
    const channel = unique('public:proto');
    const head = upgradeHead(h.server.port, ['Sec-WebSocket-Protocol: herald, chat'], `/connection/websocket?connect=1&channel=${encodeURIComponent(channel)}`);
    const answer = await rawExchangeUntil(h.server.port, head, (frames) => frames.length >= 2);
    assert.equal(answer.status, 101);
    assert.equal(answer.headers.get('sec-websocket-protocol'), 'herald');
    assert.deepEqual(
      answer.frames.map((f) => JSON.parse(f.payload).push),
      ['connected', 'subscribed'],
    );
  });

  test('an anonymous open on a namespace that allows it', async () => {
    const channel = unique('public:p');
    const client = await openWs(openUrl(h.wsUrl, { channel }));
    await client.push('connected');
    await client.push('subscribed', channel);
    await h.api('publish', { channel, data: { n: 1 } });
    await client.waitPublications(channel, 1);
  });
});
