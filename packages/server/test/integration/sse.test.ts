/**
 * The SSE transport (docs/protocol.md, "SSE"), consumed by the real
 * `eventsource` npm client where the behaviour is about EventSource
 * (ids, reconnect with Last-Event-ID, no retry on HTTP errors), and by a raw
 * fetch reader where the exact wire matters.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import {
  ControlledFetch,
  RecordedEventSource,
  openSse,
  parseVector,
  sendCommand,
  sseUrl,
  type Frame,
  type SseStream,
} from '../helpers/rt-clients.ts';
import { sleep, waitUntil } from '../helpers/rt-util.ts';

let counter = 0;
const unique = (prefix: string): string => `${prefix}-${++counter}-${randomBytes(3).toString('hex')}`;

describe('SSE transport', { timeout: 60000 }, () => {
  let h: TestHerald;
  const sources: RecordedEventSource[] = [];
  const streams: SseStream[] = [];

  before(async () => {
    h = await startHerald();
  });
  after(async () => {
    for (const source of sources) source.close();
    for (const stream of streams) stream.abort();
    await h.close();
  });

  function eventSource(url: string, control?: ControlledFetch): RecordedEventSource {
    const source = new RecordedEventSource(url, control);
    sources.push(source);
    return source;
  }

  async function rawSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
    const stream = await openSse(url, headers);
    streams.push(stream);
    return stream;
  }

  async function publish(channel: string, data: unknown): Promise<{ epoch: string; offset: number }> {
    const answer = await h.api('publish', { channel, data });
    assert.equal(answer.status, 200, `API publish answered ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  function offsetsOf(frames: readonly Frame[]): number[] {
    return frames.map((f) => f['offset'] as number);
  }

  test('EventSource: connected (with session) first, subscribed, then API publications with id = position vector', async () => {
    const channel = unique('chat:sse');
    const source = eventSource(sseUrl(h.url, { token: await h.token('alice'), channels: [channel] }));

    const subscribed = await source.waitForFrame((f) => f['push'] === 'subscribed', 10000, 'subscribed');
    const first = source.messages[0];
    assert.ok(first?.frame, 'first event is JSON');
    assert.equal(first.frame['push'], 'connected', `first event must be connected, got ${first.data}`);
    assert.equal(typeof first.frame['client'], 'string');
    assert.ok((first.frame['client'] as string).length > 0);
    assert.equal(typeof first.frame['version'], 'string');
    assert.equal(first.frame['ping'], 25, 'ping is ping.intervalMs in seconds');
    const session = first.frame['session'];
    assert.equal(typeof session, 'string', 'connected carries a session');
    // 128 random bits: at least 22 characters in base64url, 32 in hex
    assert.ok((session as string).length >= 22, `session ${session} is too short for 128 bits`);
    assert.notEqual(session, first.frame['client'], 'the session is not the client id');

    const sub = subscribed.frame as Frame;
    assert.equal(sub['channel'], channel);
    assert.equal(sub['recoverable'], true);
    assert.equal(typeof sub['epoch'], 'string');
    assert.equal(sub['offset'], 0);
    assert.equal(sub['was_recovering'], false);
    assert.equal(sub['recovered'], false);
    assert.equal(subscribed.lastEventId, `${channel}|${sub['epoch']}|0`, 'subscribed carries the position vector as id');
    assert.equal(source.messages.indexOf(subscribed), 1, 'subscribed is the second event');

    for (let i = 1; i <= 3; i++) {
      const position = await publish(channel, { n: i });
      assert.deepEqual(position, { epoch: sub['epoch'], offset: i });
    }
    await waitUntil(() => source.frames('publication').length >= 3, { label: '3 publications' });
    const pubs = source.messages.filter((m) => m.frame?.['push'] === 'publication');
    assert.deepEqual(
      pubs.map((m) => m.frame?.['offset']),
      [1, 2, 3],
    );
    for (const [i, m] of pubs.entries()) {
      assert.equal(m.frame?.['channel'], channel);
      assert.deepEqual(m.frame?.['data'], { n: i + 1 });
      assert.equal(m.frame?.['info'], undefined, 'API publications carry no info');
      assert.equal(m.lastEventId, `${channel}|${sub['epoch']}|${i + 1}`, 'publication id is the vector after it');
    }
    assert.equal(source.es.readyState, 1, 'EventSource is OPEN');
    assert.equal(source.control.connections.length, 1, 'no reconnects happened');
  });

  test('raw stream: 200 text/event-stream, Bearer header auth, retry line, id lines only on position frames', async () => {
    const channel = unique('chat:raw');
    const stream = await rawSse(sseUrl(h.url, { channels: [channel] }), { authorization: `Bearer ${await h.token('carol')}` });
    assert.equal(stream.status, 200, `answer ${stream.status} ${JSON.stringify(stream.errorBody)}`);
    assert.match(stream.headers.get('content-type') ?? '', /^text\/event-stream/);
    const sub = await stream.waitForFrame((f) => f['push'] === 'subscribed', 10000, 'subscribed');
    await publish(channel, 'x');
    await stream.waitForFrame((f) => f['push'] === 'publication', 10000, 'publication');
    assert.equal(typeof stream.retry, 'number', 'the stream sets a retry interval');
    const [connected, subscribed, publication] = stream.events;
    assert.equal(connected?.frame?.['push'], 'connected');
    assert.equal(connected?.id, undefined, 'connected does not change positions: no id line');
    assert.equal(subscribed?.id, `${channel}|${sub['epoch']}|0`);
    assert.equal(publication?.id, `${channel}|${sub['epoch']}|1`);
    for (const event of stream.events) {
      assert.equal(event.data.includes('\n'), false, 'one data line per event');
    }
  });

  test('commands by POST /connection/command with Herald-Session: subscribe another channel, presence', async () => {
    const a = unique('chat:cmd-a');
    const b = unique('chat:cmd-b');
    const source = eventSource(sseUrl(h.url, { token: await h.token('alice'), channels: [a] }));
    const subA = (await source.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === a)).frame as Frame;
    const connected = source.frames('connected')[0] as Frame;
    const session = connected['session'] as string;

    const answer = await sendCommand(h.url, session, { id: 7, method: 'subscribe', params: { channel: b } });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.ok(Array.isArray(answer.body), 'the answer is an array of replies');
    const replies = answer.body as Frame[];
    assert.equal(replies.length, 1);
    assert.equal(replies[0]?.['id'], 7);
    const subB = replies[0]?.['result'] as Frame;
    assert.equal(subB['recoverable'], true);
    assert.equal(subB['offset'], 0);
    assert.equal(subB['was_recovering'], false);

    // the stream gets a subscribed push for b, with both channels in its id
    const pushed = await source.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === b, 10000, 'subscribed b');
    assert.equal(pushed.frame?.['epoch'], subB['epoch']);
    const vector = parseVector(pushed.lastEventId);
    assert.deepEqual(Object.fromEntries(vector), {
      [a]: { epoch: subA['epoch'], offset: 0 },
      [b]: { epoch: subB['epoch'], offset: 0 },
    });

    await publish(b, 'to-b');
    const pub = await source.waitForFrame((f) => f['push'] === 'publication' && f['channel'] === b, 10000, 'publication on b');
    assert.equal(pub.frame?.['data'], 'to-b');
    assert.deepEqual(Object.fromEntries(parseVector(pub.lastEventId)), {
      [a]: { epoch: subA['epoch'], offset: 0 },
      [b]: { epoch: subB['epoch'], offset: 1 },
    });

    // a batch: replies in command order
    const batch = await sendCommand(h.url, session, [
      { id: 8, method: 'presence', params: { channel: a } },
      { id: 9, method: 'presence_stats', params: { channel: a } },
    ]);
    assert.equal(batch.status, 200, JSON.stringify(batch.body));
    const [presence, stats] = batch.body as Frame[];
    assert.equal(presence?.['id'], 8);
    assert.equal(stats?.['id'], 9);
    const clientId = connected['client'] as string;
    assert.deepEqual(Object.keys(presence?.['result']['clients']), [clientId]);
    assert.equal(presence?.['result']['clients'][clientId]['user'], 'alice');
    assert.equal(presence?.['result']['clients'][clientId]['client'], clientId);
    assert.deepEqual(stats?.['result'], { num_clients: 1, num_users: 1 });

    // the session is the credential: unknown sessions and the client id are refused
    for (const wrong of ['no-such-session', clientId]) {
      const refused = await sendCommand(h.url, wrong, { id: 10, method: 'presence', params: { channel: a } });
      assert.equal(refused.status, 404, `session ${wrong}: ${refused.status} ${JSON.stringify(refused.body)}`);
      assert.equal((refused.body as Frame)['error']?.['code'], 'session_unknown');
    }
  });

  test('bad token: HTTP 401 with a JSON error, and EventSource does not retry', async () => {
    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('mallory')
      .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
      .sign(new TextEncoder().encode('another-secret-of-at-least-32-bytes!!'));
    for (const token of ['not-a-jwt', forged]) {
      const raw = await rawSse(sseUrl(h.url, { token, channels: [unique('chat:bad')] }));
      assert.equal(raw.status, 401, `token ${token.slice(0, 12)}…: status ${raw.status}`);
      assert.equal((raw.errorBody as Frame)?.['error']?.['code'], 'unauthorized', JSON.stringify(raw.errorBody));
    }

    const source = eventSource(sseUrl(h.url, { token: 'not-a-jwt', channels: [unique('chat:bad')] }));
    await waitUntil(() => source.errors.length > 0, { label: 'EventSource error' });
    assert.equal(source.errors[0]?.code, 401);
    assert.equal(source.es.readyState, 2, 'EventSource is CLOSED after a 401');
    // longer than the documented `retry: 1000`: still only the first request
    await sleep(1500);
    assert.equal(source.control.connections.length, 1, 'EventSource did not retry');
    assert.equal(source.messages.length, 0);
  });

  for (const mode of ['API disconnect with reconnect', 'network drop'] as const) {
    test(`resume after ${mode}: EventSource reconnects with Last-Event-ID and gets exactly the missed publications`, async () => {
      const channel = unique('chat:resume');
      const user = unique('bob');
      const control = new ControlledFetch();
      const source = eventSource(sseUrl(h.url, { token: await h.token(user), channels: [channel] }), control);
      const sub = (await source.waitForFrame((f) => f['push'] === 'subscribed')).frame as Frame;
      const epoch = sub['epoch'] as string;
      for (let i = 1; i <= 2; i++) await publish(channel, { n: i });
      await waitUntil(() => source.frames('publication').length >= 2, { label: 'publications 1-2' });

      // hold the reconnect, so that what follows is published while disconnected
      control.hold();
      if (mode === 'API disconnect with reconnect') {
        const answer = await h.api('disconnect', { user, reconnect: true });
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.equal(answer.body.disconnected, 1);
        const disconnect = await source.waitForFrame((f) => f['push'] === 'disconnect', 10000, 'disconnect push');
        assert.equal(disconnect.frame?.['reconnect'], true);
        assert.equal(disconnect.frame?.['code'], 3007, 'force reconnect');
      } else {
        control.cut();
      }
      await waitUntil(() => control.connections.length === 2, { label: 'EventSource reconnect attempt' });
      const firstConnection = source.messages.filter((m) => m.connection === 0);
      if (mode === 'API disconnect with reconnect') {
        assert.equal(firstConnection.at(-1)?.frame?.['push'], 'disconnect', 'disconnect is the last frame of the stream');
      }
      assert.equal(control.connections[1]?.lastEventId, `${channel}|${epoch}|2`, 'Last-Event-ID is the last position');

      for (let i = 3; i <= 5; i++) await publish(channel, { n: i });
      control.release();

      const resubscribed = await source.waitForFrame(
        (f, m) => f['push'] === 'subscribed' && m.connection === 1,
        10000,
        'subscribed after reconnect',
      );
      assert.deepEqual(resubscribed.frame, {
        push: 'subscribed',
        channel,
        recoverable: true,
        epoch,
        offset: 5,
        was_recovering: true,
        recovered: true,
      });
      // The id after the subscribed push must still be the client's position:
      // a drop right now must resume from 2, or 3-5 would be lost.
      assert.equal(resubscribed.lastEventId, `${channel}|${epoch}|2`, 'id of a recovering subscribed is the recovery position');

      await waitUntil(() => source.frames('publication', 1).length >= 3, { label: 'recovered publications' });
      await publish(channel, { n: 6 });
      await waitUntil(() => source.frames('publication').length >= 6, {
        label: 'live publication 6',
        describe: () => JSON.stringify(offsetsOf(source.frames('publication'))),
      });
      await sleep(50);
      const second = source.messages.filter((m) => m.connection === 1 && m.frame !== undefined);
      assert.equal(second[0]?.frame?.['push'], 'connected', 'a reconnect starts with connected');
      assert.equal(second[1]?.frame?.['push'], 'subscribed', 'subscribed comes before the recovered publications');
      const all = source.frames('publication');
      assert.deepEqual(offsetsOf(all), [1, 2, 3, 4, 5, 6], 'every publication exactly once, in order');
      assert.deepEqual(
        all.map((f) => f['data']),
        [1, 2, 3, 4, 5, 6].map((n) => ({ n })),
      );
      assert.deepEqual(
        second.filter((m) => m.frame?.['push'] === 'publication').map((m) => m.lastEventId),
        [3, 4, 5, 6].map((n) => `${channel}|${epoch}|${n}`),
      );
    });
  }

  test('a malformed Last-Event-ID is ignored as a whole: fresh subscribe, no replay, no crash', async () => {
    const channel = unique('chat:malformed');
    const { epoch } = await publish(channel, 1);
    await publish(channel, 2);
    const bad = [
      'garbage',
      `${channel}|${epoch}`,
      `${channel}|${epoch}|1 nonsense`,
      `${channel}|${epoch}|1|extra`,
      `${channel}|bad epoch!|1`,
      `${channel}|${epoch}|-1`,
      `${channel}|${epoch}|1.5`,
      `${channel}|${epoch}|99999999999999999999`,
      `chat:has space|${epoch}|1`,
      `${channel}|${epoch}|` + '1'.repeat(9000),
    ];
    for (const value of bad) {
      for (const via of ['header', 'query'] as const) {
        const url = sseUrl(h.url, { token: await h.token('dave'), channels: [channel], ...(via === 'query' ? { lastEventId: value } : {}) });
        const stream = await rawSse(url, via === 'header' ? { 'last-event-id': value } : {});
        const label = `${via} ${JSON.stringify(value.slice(0, 60))}`;
        assert.equal(stream.status, 200, `${label}: status ${stream.status} ${JSON.stringify(stream.errorBody)}`);
        const sub = await stream.waitForFrame((f) => f['push'] === 'subscribed', 10000, `subscribed (${label})`);
        assert.equal(stream.frames[0]?.['push'], 'connected', label);
        assert.equal(sub['channel'], channel, label);
        assert.equal(sub['was_recovering'], false, `${label}: must start fresh`);
        assert.equal(sub['recovered'], false, label);
        assert.equal(sub['epoch'], epoch, label);
        assert.equal(sub['offset'], 2, label);
        stream.abort();
      }
    }
    // still serving, and a fresh stream gets live publications only
    const health = await fetch(`${h.url}/health`);
    assert.equal(health.status, 200);
    const stream = await rawSse(sseUrl(h.url, { token: await h.token('dave'), channels: [channel] }), { 'last-event-id': 'garbage' });
    await stream.waitForFrame((f) => f['push'] === 'subscribed');
    await publish(channel, 3);
    const pub = await stream.waitForFrame((f) => f['push'] === 'publication');
    assert.equal(pub['offset'], 3);
    assert.deepEqual(offsetsOf(stream.pushes('publication')), [3], 'nothing replayed');
  });

  test('resuming several channels: every event id names every resumed position, the first subscribed frame\'s included (a client cut right after it resumes them all)', async () => {
    const first = unique('chat:resume-a');
    const second = unique('chat:resume-b');
    const a = await publish(first, 1);
    const b = await publish(second, 1);
    const vector = `${first}|${a.epoch}|${a.offset} ${second}|${b.epoch}|${b.offset}`;
    const stream = await rawSse(sseUrl(h.url, { token: await h.token('erin'), channels: [first, second] }), { 'last-event-id': vector });
    await stream.waitForEvent(() => stream.pushes('subscribed').length === 2, 10000, 'both subscribed');
    const withIds = stream.events.filter((e) => e.id !== undefined);
    assert.ok(withIds.length >= 2, 'the subscribed frames carry ids');
    for (const event of withIds) {
      assert.deepEqual([...parseVector(event.id!).keys()].sort(), [first, second].sort(), `id ${event.id} names both channels`);
    }
    stream.abort();
  });

  test('opens sending the same Last-Event-ID each get their own channels (one decoding of the vector serves them; each open its own map)', async () => {
    const resumed = unique('chat:shared-vector');
    const named = unique('chat:shared-vector-named');
    const { epoch } = await publish(resumed, 1);
    await publish(resumed, 2);
    const vector = `${resumed}|${epoch}|1`;
    const first = await rawSse(sseUrl(h.url, { token: await h.token('frank'), channels: [named] }), { 'last-event-id': vector });
    await first.waitForEvent(() => first.pushes('subscribed').length === 2, 10000, 'first: both subscribed');
    // No query at all (token in the header, position in Last-Event-ID, as EventSource resumes): the named channel of the first open is not this one's.
    const second = await rawSse(`${h.url}/connection/sse`, { authorization: `Bearer ${await h.token('frank')}`, 'last-event-id': vector });
    assert.equal(second.status, 200, JSON.stringify(second.errorBody));
    const sub = await second.waitForFrame((f) => f['push'] === 'subscribed', 10000, 'second: subscribed');
    assert.equal(sub['channel'], resumed);
    assert.equal(sub['recovered'], true);
    // The opening (every connect-time subscribed frame) is written at once: a live publication comes after all of it.
    await publish(resumed, 3);
    await waitUntil(() => second.pushes('publication').length >= 2, { label: 'recovered and live publications' });
    assert.deepEqual(
      second.pushes('subscribed').map((f) => f['channel']),
      [resumed],
      'the second open subscribes the vector\'s channel only',
    );
    assert.deepEqual(offsetsOf(second.pushes('publication')), [2, 3]);
  });

  test('subscribed frames of one channel in a row say how each subscription was made (recovering, fresh, recovering again)', async () => {
    const channel = unique('chat:subscribed-in-a-row');
    const { epoch } = await publish(channel, 1);
    await publish(channel, 2);
    const expected = [
      { vector: `${channel}|${epoch}|1`, was_recovering: true, recovered: true },
      { vector: undefined, was_recovering: false, recovered: false },
      { vector: `${channel}|${epoch}|1`, was_recovering: true, recovered: true },
      { vector: `${channel}|${epoch}|2`, was_recovering: true, recovered: true },
    ];
    for (const [index, step] of expected.entries()) {
      const stream = await rawSse(sseUrl(h.url, { token: await h.token('gina'), channels: [channel] }), step.vector === undefined ? {} : { 'last-event-id': step.vector });
      const sub = await stream.waitForFrame((f) => f['push'] === 'subscribed', 10000, `subscribed ${index}`);
      assert.deepEqual(
        { channel: sub['channel'], epoch: sub['epoch'], offset: sub['offset'], was_recovering: sub['was_recovering'], recovered: sub['recovered'] },
        { channel, epoch, offset: 2, was_recovering: step.was_recovering, recovered: step.recovered },
        `open ${index}`,
      );
      stream.abort();
    }
  });

  test('every channel in Last-Event-ID is resubscribed with recovery, even when not in channel', async () => {
    const channel = unique('chat:vector-only');
    const other = unique('chat:param');
    const { epoch } = await publish(channel, 1);
    await publish(channel, 2);
    await publish(channel, 3);
    const stream = await rawSse(sseUrl(h.url, { token: await h.token('erin'), channels: [other] }), {
      'last-event-id': `${channel}|${epoch}|1`,
    });
    assert.equal(stream.status, 200);
    const sub = await stream.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === channel, 10000, 'subscribed (vector)');
    assert.equal(sub['was_recovering'], true);
    assert.equal(sub['recovered'], true);
    assert.equal(sub['offset'], 3);
    await stream.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === other, 10000, 'subscribed (param)');
    await waitUntil(() => stream.pushes('publication').length >= 2, { label: 'recovered publications' });
    await publish(channel, 4);
    await waitUntil(() => stream.pushes('publication').length >= 3, { label: 'live publication' });
    assert.deepEqual(offsetsOf(stream.pushes('publication')), [2, 3, 4]);
  });
});
