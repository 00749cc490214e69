/**
 * The long-polling transport and HTTP commands against docs/protocol.md.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, eventually, http, postRaw, signToken, unique, WAIT_MS, type Json } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { waitUntil } from '../helpers/rt-util.ts';

/** True while the server holds a poll of this session (read from the running node, not mocked). */
function pollHeld(h: TestHerald, s: LongPollSession): boolean {
  const id = s.messages.find((m) => m.push === 'connected')?.client;
  return [...h.server.node.connectedClients()].some((c) => c.id === id && c.transport.holdsRequest?.() === true);
}

const offsets = (pubs: Json[]): number[] => pubs.map((p) => p.offset);

describe('long polling', { timeout: 30000 }, () => {
  let h: TestHerald;
  before(async () => {
    // A poll waits far longer than any test waits for an answer (WAIT_MS * 3),
    // so a poll that should be answered at once but is not fails the test.
    h = await startHerald({ longPoll: { pollTimeoutMs: 60000 }, limits: { maxMessageBytes: 4096 } });
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await h.close();
  });

  async function apiPublish(channel: string, data: unknown): Promise<Json> {
    const answer = await h.api('publish', { channel, data });
    assert.equal(answer.status, 200, `API publish answered ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  async function open(sub: string | null, body: Record<string, unknown> = {}): Promise<LongPollSession> {
    return LongPollSession.open(h.url, sub === null ? body : { token: await h.token(sub), ...body });
  }

  const connectedOf = (s: LongPollSession): Json => s.messages.find((m) => m.push === 'connected');
  const subscribedOf = (s: LongPollSession, channel: string): Json[] =>
    s.messages.filter((m) => m.push === 'subscribed' && m.channel === channel);

  test('open with channels answers a session, connected and subscribed; polls deliver publications', async () => {
    const channel = unique('chat:lp');
    const s = await open('alice', { channels: [channel] });
    assert.equal(s.messages[0]?.push, 'connected', 'connected is the first message');
    const connected = connectedOf(s);
    assert.equal(typeof connected.client, 'string');
    assert.equal(typeof connected.version, 'string');
    assert.equal(connected.ping, 25);
    assert.ok(s.session.length >= 16, 'the session secret has at least 128 bits');
    assert.notEqual(s.session, connected.client, 'the session secret is not the client id');

    const [subscribed] = subscribedOf(s, channel);
    assert.ok(subscribed, `no subscribed push in ${JSON.stringify(s.messages)}`);
    assert.equal(subscribed.recoverable, true);
    assert.equal(subscribed.offset, 0);
    assert.equal(subscribed.was_recovering, false);
    assert.equal(subscribed.recovered, false);
    assert.equal(typeof s.seq, 'number');
    assert.equal(s.cursor, `${channel}|${subscribed.epoch}|0`);

    const seqBefore = s.seq;
    await apiPublish(channel, { n: 1 });
    await apiPublish(channel, { n: 2 });
    const pubs = await s.pollUntil((all) => {
      const list = all.filter((m) => m.push === 'publication' && m.channel === channel);
      return list.length >= 2 ? list : undefined;
    }, '2 publications');
    assert.deepEqual(offsets(pubs), [1, 2]);
    assert.deepEqual(
      pubs.map((p) => p.data),
      [{ n: 1 }, { n: 2 }],
    );
    assert.ok(s.seq >= seqBefore + 2, `seq ${seqBefore} -> ${s.seq} for two messages`);
    assert.equal(s.cursor, `${channel}|${subscribed.epoch}|2`);
    await s.close();
  });

  test('commands by POST with Herald-Session: subscribe, publish, presence, batches', async () => {
    const channel = unique('chat:lpc');
    const s = await open('alice');
    const clientId = connectedOf(s).client;

    const sub = await s.call('subscribe', { channel });
    assert.equal(sub.recoverable, true);
    assert.equal(sub.offset, 0);
    const published = await s.call('publish', { channel, data: { text: 'hi' } });
    assert.deepEqual(published, { epoch: sub.epoch, offset: 1 });

    const pubs = await s.waitMarker(channel, { text: 'hi' });
    assert.equal(pubs.length, 1);
    assert.deepEqual(pubs[0].info, { client: clientId, user: 'alice' });
    // a subscription made by command is announced on the stream, before its publications
    const subscribedIndex = s.messages.findIndex((m) => m.push === 'subscribed' && m.channel === channel);
    const pubIndex = s.messages.findIndex((m) => m.push === 'publication' && m.channel === channel);
    assert.ok(subscribedIndex !== -1, 'subscribed push for a command subscription');
    assert.ok(subscribedIndex < pubIndex, 'subscribed comes before the first publication');
    assert.equal(s.cursor, `${channel}|${sub.epoch}|1`);

    const presence = await s.call('presence', { channel });
    assert.deepEqual(presence.clients, { [clientId]: { client: clientId, user: 'alice' } });
    assert.deepEqual(await s.call('presence_stats', { channel }), { num_clients: 1, num_users: 1 });

    const batch = await s.rawCommand([
      { id: 10, method: 'ping' },
      { method: 'pong' },
      { id: 11, method: 'presence_stats', params: { channel } },
      { id: 12, method: 'subscribe', params: { channel: 'nope:x' } },
    ]);
    assert.equal(batch.status, 200, batch.text);
    assert.deepEqual(batch.body, [
      { id: 10, result: {} },
      { id: 11, result: { num_clients: 1, num_users: 1 } },
      { id: 12, error: { code: 102, message: batch.body[2]?.error?.message } },
    ]);

    assert.deepEqual(await s.call('unsubscribe', { channel }), {});
    assert.deepEqual(await s.call('presence_stats', { channel }), { num_clients: 0, num_users: 0 });
    await s.close();
  });

  test('a wrong or absent session is 404 session_unknown', async () => {
    const s = await open('alice');
    const wrong = 'x'.repeat(s.session.length);
    for (const answer of [
      await s.rawPoll(s.seq, wrong),
      await s.rawCommand({ id: 1, method: 'ping' }, wrong),
      await s.rawCommand({ id: 1, method: 'ping' }, null),
      await http(`${h.url}/connection/poll`, { body: { seq: s.seq } }),
      await http(`${h.url}/connection/close`, { method: 'POST', headers: { 'herald-session': wrong } }),
    ]) {
      assert.equal(answer.status, 404, answer.text);
      assert.equal(answer.body?.error?.code, 'session_unknown', answer.text);
    }
    assert.deepEqual(await s.call('ping'), {}, 'the real session still works');
    await s.close();
  });

  test('the client id is not a credential: a stolen client id cannot act', async () => {
    const channel = unique('chat:stolen');
    const s = await open('alice');
    const clientId = connectedOf(s).client;
    for (const answer of [
      await s.rawCommand({ id: 1, method: 'subscribe', params: { channel } }, clientId),
      await s.rawCommand({ id: 2, method: 'publish', params: { channel, data: 'forged' } }, clientId),
      await s.rawPoll(s.seq, clientId),
      await http(`${h.url}/connection/close`, { method: 'POST', headers: { 'herald-session': clientId } }),
    ]) {
      assert.equal(answer.status, 404, answer.text);
      assert.equal(answer.body?.error?.code, 'session_unknown', answer.text);
    }
    const presence = await h.api('presence', { channel });
    assert.deepEqual(presence.body.clients, {}, 'nothing was subscribed');
    assert.equal((await h.api('history', { channel })).body.offset, 0, 'nothing was published');
    assert.deepEqual(await s.call('ping'), {}, 'the session was not closed');
    await s.close();
  });

  test('a poll with the same seq again re-delivers a lost answer', async () => {
    const channel = unique('chat:lp-lost');
    const s = await open('alice', { channels: [channel] });
    const seq0 = s.seq;
    await apiPublish(channel, 'a');
    // the answer to this poll is "lost": the client never acknowledges it
    const first = await s.rawPoll(seq0);
    assert.equal(first.status, 200, first.text);
    assert.ok(first.body.messages.length > 0, 'publication available at once');
    const again = await s.rawPoll(seq0);
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(again.body, first.body, 're-delivered identically');
    assert.deepEqual(
      first.body.messages.filter((m: Json) => m.push === 'publication').map((m: Json) => m.data),
      ['a'],
    );

    s.seq = first.body.seq;
    await apiPublish(channel, 'b');
    const next = await s.poll();
    assert.deepEqual(
      next.filter((m) => m.push === 'publication').map((m) => m.data),
      ['b'],
      'acknowledged messages are not sent again',
    );
    await s.close();
  });

  test('a second poll answers the first at once', async () => {
    const channel = unique('chat:lp-second');
    const s = await open('alice', { channels: [channel] });
    const first = s.rawPoll(s.seq);
    const second = s.rawPoll(s.seq);
    await apiPublish(channel, 'x');
    const answers = await Promise.all([first, second]);
    for (const answer of answers) assert.equal(answer.status, 200, answer.text);
    const delivered = answers.flatMap((a) => a.body.messages).filter((m: Json) => m.push === 'publication');
    assert.ok(delivered.length >= 1, 'the publication was delivered by one of the polls');
    await s.close();
  });

  test('reopen with the cursor recovers missed publications, then live ones', async () => {
    const channel = unique('chat:lp-rec');
    const s1 = await open('alice', { channels: [channel] });
    await apiPublish(channel, 1);
    await apiPublish(channel, 2);
    await s1.waitMarker(channel, 2);
    const epoch = subscribedOf(s1, channel)[0].epoch;
    assert.equal(s1.cursor, `${channel}|${epoch}|2`);
    const closeAnswer = await s1.close();
    assert.ok(closeAnswer.status >= 200 && closeAnswer.status < 300, closeAnswer.text);

    for (let i = 3; i <= 5; i++) await apiPublish(channel, i);

    const s2 = await open('alice', { channels: [channel], cursor: s1.cursor });
    const subscribed = subscribedOf(s2, channel);
    assert.equal(subscribed.length, 1, 'one subscription for a channel in both channels and cursor');
    assert.equal(subscribed[0].was_recovering, true);
    assert.equal(subscribed[0].recovered, true);
    assert.equal(subscribed[0].epoch, epoch);
    assert.equal(subscribed[0].offset, 5);

    await s2.waitMarker(channel, 5);
    await apiPublish(channel, 'live');
    const all = await s2.waitMarker(channel, 'live');
    assert.deepEqual(offsets(all), [3, 4, 5, 6], 'exactly the missed ones, in order, then live');
    assert.equal(s2.cursor, `${channel}|${epoch}|6`);
    await s2.close();
  });

  test('a cursor alone resubscribes its channels with recovery', async () => {
    const channel = unique('chat:lp-cursor');
    const s1 = await open('alice', { channels: [channel] });
    await apiPublish(channel, 1);
    await s1.waitMarker(channel, 1);
    await s1.close();
    await apiPublish(channel, 2);
    const s2 = await open('alice', { cursor: s1.cursor });
    const [subscribed] = subscribedOf(s2, channel);
    assert.ok(subscribed, 'channel of the cursor resubscribed');
    assert.equal(subscribed.recovered, true);
    const pubs = await s2.waitMarker(channel, 2);
    assert.deepEqual(offsets(pubs), [2]);
    await s2.close();
  });

  test('a cursor with several channels recovers each of them', async () => {
    const c1 = unique('chat:lp-multi-a');
    const c2 = unique('chat:lp-multi-b');
    const s1 = await open('alice', { channels: [c1, c2] });
    await apiPublish(c1, 'a1');
    await apiPublish(c2, 'b1');
    await apiPublish(c2, 'b2');
    await s1.waitMarker(c1, 'a1');
    await s1.waitMarker(c2, 'b2');
    const e1 = subscribedOf(s1, c1)[0].epoch;
    const e2 = subscribedOf(s1, c2)[0].epoch;
    assert.deepEqual(s1.cursor.split(' ').sort(), [`${c1}|${e1}|1`, `${c2}|${e2}|2`].sort());
    await s1.close();
    await apiPublish(c1, 'a2');
    await apiPublish(c2, 'b3');
    const s2 = await open('alice', { cursor: s1.cursor });
    for (const channel of [c1, c2]) assert.equal(subscribedOf(s2, channel)[0]?.recovered, true, channel);
    assert.deepEqual(offsets(await s2.waitMarker(c1, 'a2')), [2]);
    assert.deepEqual(offsets(await s2.waitMarker(c2, 'b3')), [3]);
    await s2.close();
  });

  test('a malformed cursor is ignored as a whole: subscriptions start fresh', async () => {
    const good = unique('chat:lp-goodcursor');
    const channel = unique('chat:lp-badcursor');
    const epoch = (await apiPublish(good, 1)).epoch;
    await apiPublish(channel, 1);
    // one valid entry, one broken: the whole vector is ignored
    const s = await open('alice', { channels: [good, channel], cursor: `${good}|${epoch}|0 ${channel}|not an epoch|x` });
    for (const name of [good, channel]) {
      const [subscribed] = subscribedOf(s, name);
      assert.ok(subscribed, `${name} subscribed despite the bad cursor`);
      assert.equal(subscribed.was_recovering, false, name);
      assert.equal(subscribed.recovered, false, name);
      assert.equal(subscribed.offset, 1, name);
    }
    assert.equal(s.publications(good).length, 0, 'nothing replayed from the ignored vector');
    await s.close();
  });

  test('POST /connection/close ends the session at once', async () => {
    const channel = unique('chat:lp-close');
    const s = await open('alice', { channels: [channel] });
    assert.equal(Object.keys((await h.api('presence', { channel })).body.clients).length, 1);
    const inFlight = s.rawPoll(s.seq);
    // close once the server holds the poll (a poll arriving after the close would be a 404)
    await waitUntil(() => pollHeld(h, s), { label: 'the poll held by the server' });
    const closed = await s.close();
    assert.ok(closed.status >= 200 && closed.status < 300, `close answered ${closed.status} ${closed.text}`);
    // the poll in flight is answered (it would otherwise wait pollTimeoutMs, far beyond the fetch timeout)
    const answer = await inFlight;
    assert.equal(answer.status, 200, `in-flight poll answered ${answer.status} ${answer.text}`);
    const last = answer.body.messages[answer.body.messages.length - 1];
    assert.equal(last?.push, 'disconnect', 'disconnect is the last frame of a long-poll connection');
    const after = await s.rawPoll(s.seq);
    assert.equal(after.status, 404, after.text);
    assert.equal(after.body?.error?.code, 'session_unknown');
    await eventually(
      async () => (Object.keys((await h.api('presence', { channel })).body.clients).length === 0 ? true : undefined),
      'presence to be empty after close',
    );
  });

  test('a bad token at open is 401 unauthorized', async () => {
    const forged = await signToken('another-secret-of-at-least-32-bytes!!', {
      sub: 'mallory',
      exp: Math.floor(Date.now() / 1000) + 3600,
    });
    const answer = await http(`${h.url}/connection/poll/open`, { body: { token: forged, channels: ['chat:x'] } });
    assert.equal(answer.status, 401, answer.text);
    assert.equal(answer.body?.error?.code, 'unauthorized', answer.text);
  });

  test('oversize bodies are 413 payload_too_large', async () => {
    const s = await open('alice');
    // far above any sane limit: 100 commands × maxMessageBytes (4 KiB) is 400 KiB
    const big = Buffer.from(JSON.stringify({ id: 1, method: 'publish', params: { channel: 'chat:big', data: 'x'.repeat(2 * 1024 * 1024) } }));
    for (const [path, headers] of [
      ['/connection/command', { 'herald-session': s.session }],
      ['/connection/poll/open', {}],
    ] as const) {
      const answer = await postRaw(`${h.url}${path}`, headers, big);
      assert.equal(answer.status, 413, `${path}: ${answer.status} ${answer.text}`);
      assert.equal(answer.body?.error?.code, 'payload_too_large', answer.text);
    }
    assert.deepEqual(await s.call('ping'), {}, 'the session survives a refused body');
    await s.close();
  });

  test('malformed JSON is 400 invalid_json; JSON that is not a command is 400 bad_request', async () => {
    const s = await open('alice');
    const bad = await s.rawCommand('{"id":1,"method":');
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.body?.error?.code, 'invalid_json', bad.text);

    const badOpen = await http(`${h.url}/connection/poll/open`, { body: '{"channels":[' });
    assert.equal(badOpen.status, 400, badOpen.text);
    assert.equal(badOpen.body?.error?.code, 'invalid_json', badOpen.text);

    for (const body of ['42', '"ping"', '{"method":"ping"}', '{"id":0,"method":"ping"}']) {
      const answer = await s.rawCommand(body);
      assert.equal(answer.status, 400, `${body}: ${answer.text}`);
      assert.equal(answer.body?.error?.code, 'bad_request', `${body}: ${answer.text}`);
    }
    const tooMany = await s.rawCommand(Array.from({ length: 101 }, (_, i) => ({ id: i + 1, method: 'ping' })));
    assert.equal(tooMany.status, 400, `101 commands: ${tooMany.text}`);

    const proto = await s.rawCommand('{"id":1,"method":"publish","params":{"channel":"chat:p","data":{"__proto__":{"x":1}}}}');
    assert.equal(proto.status, 400, `__proto__: ${proto.text}`);
    assert.equal(({} as Record<string, unknown>)['x'], undefined);

    assert.deepEqual(await s.call('ping'), {}, 'the session survives bad bodies');
    await s.close();
  });
});

describe('long-poll session timeout', { timeout: 30000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({ longPoll: { pollTimeoutMs: 200, sessionTimeoutMs: 300 } });
  });
  after(async () => {
    await h.close();
  });

  test('a session without a poll in flight for sessionTimeoutMs is closed', async () => {
    const channel = unique('chat:lp-timeout');
    const s = await LongPollSession.open(h.url, { token: await h.token('alice'), channels: [channel] });
    const presence = await h.api('presence', { channel });
    assert.equal(Object.keys(presence.body.clients).length, 1, 'subscribed while the session lives');
    // no poll from here on
    await eventually(
      async () => (Object.keys((await h.api('presence', { channel })).body.clients).length === 0 ? true : undefined),
      'the idle session to be closed',
      WAIT_MS,
    );
    // The session is gone: the next poll is either 404 session_unknown, or
    // (docs/protocol.md: "disconnect is the last frame of a long-poll
    // connection") one last answer ending with a disconnect 3010 that says to
    // reconnect, after which the session is unknown.
    let answer = await s.rawPoll(s.seq);
    if (answer.status === 200) {
      const last = answer.body.messages[answer.body.messages.length - 1];
      assert.equal(last?.push, 'disconnect', answer.text);
      assert.equal(last.code, 3010, answer.text);
      assert.equal(last.reconnect, true, answer.text);
      answer = await s.rawPoll(answer.body.seq);
    }
    assert.equal(answer.status, 404, answer.text);
    assert.equal(answer.body?.error?.code, 'session_unknown');
  });

  test('a session that keeps polling stays open past sessionTimeoutMs', async () => {
    const channel = unique('chat:lp-alive');
    const s = await LongPollSession.open(h.url, { token: await h.token('alice'), channels: [channel] });
    // each poll waits pollTimeoutMs (200 ms) and is renewed at once: several session timeouts pass
    const started = Date.now();
    while (Date.now() - started < 1200) await s.poll();
    await publishVia(h, channel, 'still here');
    const pubs = await s.waitMarker(channel, 'still here');
    assert.deepEqual(offsets(pubs), [1]);
    await s.close();
  });
});

describe('long-poll poll abandoned', { timeout: 30000 }, () => {
  let h: TestHerald;
  before(async () => {
    // A held poll would wait a minute: only noticing that its client hung up ends the session in time.
    h = await startHerald({ longPoll: { pollTimeoutMs: 60000, sessionTimeoutMs: 300 }, limits: { maxConnectionsPerIp: 1 } });
  });
  after(async () => {
    await h.close();
  });

  test('a held poll whose client hung up: the session expires after sessionTimeoutMs and gives its place under the caps back', async () => {
    const channel = unique('chat:lp-gone');
    const s = await LongPollSession.open(h.url, { token: await h.token('alice'), channels: [channel] });
    const refused = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('bob'), channels: [channel] } });
    assert.equal(refused.status, 429, 'the one place per IP is taken');
    assert.equal(refused.body.error.code, 'connection_limit');
    const body = JSON.stringify({ seq: s.seq });
    const socket = connect(Number(new URL(h.url).port), '127.0.0.1');
    socket.on('error', () => {});
    socket.write(
      `POST /connection/poll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nHerald-Session: ${s.session}\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    await waitUntil(() => pollHeld(h, s), { label: 'the poll held' });
    socket.destroy();
    await eventually(
      async () => (Object.keys((await h.api('presence', { channel })).body.clients).length === 0 ? true : undefined),
      'the abandoned session to be closed',
      WAIT_MS,
    );
    const again = await LongPollSession.open(h.url, { token: await h.token('bob'), channels: [channel] });
    await again.close();
  });
});

async function publishVia(h: TestHerald, channel: string, data: unknown): Promise<void> {
  const answer = await h.api('publish', { channel, data });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

describe('long-poll shutdown', { timeout: 30000 }, () => {
  test('graceful shutdown answers a poll in flight with disconnect 3001 (reconnect)', async () => {
    const h = await startHerald({ longPoll: { pollTimeoutMs: 60000 } });
    try {
      const s = await LongPollSession.open(h.url, { token: await h.token('alice'), channels: [unique('chat:bye')] });
      // Make sure a poll is registered on the server before shutting down: of
      // two polls, the later one answers the earlier at once (documented), so
      // once one is answered the other is the session's waiting poll.
      const p1 = s.rawPoll(s.seq).then((answer) => ({ which: 1, answer }));
      const p2 = s.rawPoll(s.seq).then((answer) => ({ which: 2, answer }));
      const firstAnswered = await Promise.race([p1, p2]);
      assert.equal(firstAnswered.answer.status, 200, firstAnswered.answer.text);
      const inFlight = firstAnswered.which === 1 ? p2 : p1;
      const stopping = h.server.shutdown(3000);
      const { answer } = await inFlight;
      assert.equal(answer.status, 200, answer.text);
      const last = answer.body.messages[answer.body.messages.length - 1];
      assert.equal(last?.push, 'disconnect', answer.text);
      assert.equal(last.code, 3001);
      assert.equal(last.reconnect, true);
      await stopping;
    } finally {
      await h.close();
    }
  });
});
