/**
 * `http.leanLongPoll`: a body that came in the read of its head goes to the
 * body reader whole (lean-http.ts `LeanRequest.takeBody`, front.ts `readBodyThen`), with
 * no listeners nor events. The answers must be the front's on node:http,
 * byte for byte but the Date, whether the body came whole or later; a poll
 * answered while it is served (messages queued) and pipelined requests
 * behind it are answered in order.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { RawHttp, answers, exchange, request } from '../helpers/raw-http.ts';
import { leanStats } from '../../src/edge/lean-http.ts';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const host = 'Host: 127.0.0.1';
const poll = (session: string, body: string | Buffer) => request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', `Herald-Session: ${session}`], body);

describe('lean long-poll layer: bodies read with their head', { timeout: 120000 }, () => {
  let front: TestHerald;
  let lean: TestHerald;
  before(async () => {
    const opts = { api: { maxBodyBytes: 2048 }, limits: { maxJsonDepth: 8 } };
    // leanPublish off on both: the publishes below would count in leanStats.wholeBodies when a run turns it on (HERALD_TEST_LEAN_HTTP=1).
    front = await startHerald({ ...opts, http: { leanLongPoll: false, leanPublish: false } });
    lean = await startHerald({ ...opts, http: { leanLongPoll: true, leanPublish: false } });
  });
  after(async () => {
    await front?.close();
    await lean?.close();
  });

  const port = (h: TestHerald): number => Number(new URL(h.url).port);

  test('whole or split, a body is answered as the front answers it', async () => {
    const cases: [string, Buffer][] = [
      ['unknown session', poll('nope', '{"seq":0}')],
      ['not the quick form', poll('nope', '{ "seq": 0 }')],
      ['invalid JSON', poll('nope', '{"seq":')],
      ['invalid UTF-8', poll('nope', Buffer.from([0x7b, 0xc0, 0xaf, 0x7d]))],
      ['bad schema', poll('nope', '{"seq":-1,"x":1}')],
      ['too deep', request(['POST /connection/poll/open HTTP/1.1', host, 'Content-Type: application/json'], '['.repeat(20) + ']'.repeat(20))],
    ];
    for (const [name, data] of cases) {
      const headEnd = data.indexOf('\r\n\r\n') + 4;
      const expected = answers((await exchange(port(front), [data], 1)).text);
      assert.ok(expected.length === 1, `${name}: the front answered`);
      const whole = leanStats.wholeBodies;
      const a = await exchange(port(lean), [data], 1);
      assert.equal(leanStats.wholeBodies - whole, 1, `${name}: the body was taken whole`);
      assert.deepEqual(answers(a.text), expected, `${name}: whole, ${a.text}`);
      const split = leanStats.wholeBodies;
      const b = await exchange(port(lean), [data.subarray(0, headEnd), data.subarray(headEnd)], 1);
      assert.equal(leanStats.wholeBodies - split, 0, `${name}: the body came later`);
      assert.deepEqual(answers(b.text), expected, `${name}: split, ${b.text}`);
    }
  });

  test('a poll answered while served, a held poll and a request pipelined behind them, in order', async () => {
    const opened = await exchange(port(lean), [request(['POST /connection/poll/open HTTP/1.1', host, 'Content-Type: application/json'], '{"channels":["public:w"]}')], 1);
    const { session, seq } = JSON.parse(answers(opened.text)[0]!.body) as { session: string; seq: number };
    assert.equal((await lean.api('publish', { channel: 'public:w', data: { n: 1 } })).status, 200);
    const raw = await RawHttp.connect(port(lean));
    const whole = leanStats.wholeBodies;
    // The first poll has a message waiting (answered at once), the second is held, the third waits behind it.
    raw.socket.write(Buffer.concat([poll(session, `{"seq":${seq}}`), poll(session, `{"seq":${seq + 1}}`), poll('nope', '{"seq":0}')]));
    await raw.until((r) => answers(r.text).length >= 1, 'first answer');
    await pause(100);
    assert.equal(answers(raw.text).length, 1, 'the second poll is held, the third waits');
    assert.equal((await lean.api('publish', { channel: 'public:w', data: { n: 2 } })).status, 200);
    await raw.until((r) => answers(r.text).length >= 3, 'three answers');
    const [a, b, c] = answers(raw.text);
    assert.match(a!.head, /^HTTP\/1\.1 200 /);
    assert.match(a!.body, /"n":1/);
    assert.match(b!.head, /^HTTP\/1\.1 200 /);
    assert.match(b!.body, /"n":2/);
    assert.doesNotMatch(b!.body, /"n":1/);
    assert.match(c!.head, /^HTTP\/1\.1 404 /);
    assert.equal(raw.ended, false, 'the connection stays open');
    assert.equal(leanStats.wholeBodies - whole, 3, 'the three bodies were taken whole');
    raw.destroy();
  });
  test('the cursors of sessions on different channels name their own channel and offset, publications interleaved', async () => {
    const open = async (channel: string) => {
      const opened = await exchange(port(lean), [request(['POST /connection/poll/open HTTP/1.1', host, 'Content-Type: application/json'], `{"channels":["${channel}"]}`)], 1);
      return JSON.parse(answers(opened.text)[0]!.body) as { session: string; seq: number };
    };
    const a = await open('public:ca');
    const b = await open('public:cb');
    const offsets: Record<string, number> = {};
    for (const channel of ['public:ca', 'public:cb', 'public:ca', 'public:cb']) {
      const published = await lean.api('publish', { channel, data: { on: channel } });
      assert.equal(published.status, 200);
      offsets[channel] = (published.body as { offset: number }).offset;
    }
    for (const [session, channel] of [[a, 'public:ca'], [b, 'public:cb']] as const) {
      const polled = answers((await exchange(port(lean), [poll(session.session, `{"seq":${session.seq}}`)], 1)).text)[0]!;
      const { cursor } = JSON.parse(polled.body) as { cursor: string };
      const [name, , offset] = cursor.split('|');
      assert.equal(name, channel, `the cursor ${cursor}`);
      assert.equal(Number(offset), offsets[channel], `the cursor ${cursor}`);
    }
  });
});
