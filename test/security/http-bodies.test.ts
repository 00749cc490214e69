/**
 * How the public listener judges HTTP requests before any handler runs
 * (docs/errors.md, docs/security.md "Hostile input"): bodies that are not
 * strict UTF-8 are refused with their own code instead of being repaired
 * with U+FFFD; a body that is not JSON is 415; a known path asked with the
 * wrong method is 405 with `Allow`; route schemas neither coerce types nor
 * drop unknown keys.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, postRaw, unique } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';

/** Byte sequences that are not UTF-8 (RFC 3629), placed inside a JSON string. */
const invalidUtf8: Record<string, number[]> = {
  'lone continuation byte': [0x80],
  'bytes that never appear': [0xff, 0xfe],
  'overlong slash': [0xc0, 0xaf],
  'overlong NUL': [0xe0, 0x80, 0x80],
  'encoded surrogate': [0xed, 0xa0, 0x80],
  'above U+10FFFF': [0xf4, 0x90, 0x80, 0x80],
  'truncated sequence': [0xe2, 0x82],
};

function body(before: string, bytes: number[], after: string): Buffer {
  return Buffer.concat([Buffer.from(before), Buffer.from(bytes), Buffer.from(after)]);
}

describe('HTTP bodies', { timeout: 60000 }, () => {
  let h: TestHerald;
  let session: LongPollSession;
  before(async () => {
    h = await startHerald();
    session = await LongPollSession.open(h.url, { token: await h.token('bob') });
  });
  after(async () => {
    closeAllClients();
    await h?.close();
  });

  test('invalid UTF-8 is 400 invalid_utf8 on every JSON endpoint, and nothing runs', async () => {
    const channel = unique('chat:utf8');
    const watcher = await connectWs(h, 'watcher');
    await watcher.call('subscribe', { channel });
    const json = { 'content-type': 'application/json' };
    for (const [name, bytes] of Object.entries(invalidUtf8)) {
      const requests: [string, Record<string, string>, Buffer][] = [
        ['/api/publish', { ...json, authorization: `Bearer ${h.apiKey}` }, body(`{"channel":"${channel}","data":"`, bytes, '"}')],
        ['/connection/command', { ...json, 'herald-session': session.session }, body(`{"id":1,"method":"publish","params":{"channel":"${channel}","data":"`, bytes, '"}}')],
        ['/connection/poll/open', json, body('{"channels":["public:x"],"cursor":"', bytes, '"}')],
        ['/connection/poll', { ...json, 'herald-session': session.session }, body('{"seq":0,"x":"', bytes, '"}')],
      ];
      for (const [path, headers, payload] of requests) {
        const answer = await postRaw(`${h.url}${path}`, headers, payload);
        assert.equal(answer.status, 400, `${name} on ${path}: ${answer.status} ${answer.text}`);
        assert.equal(answer.body.error.code, 'invalid_utf8', `${name} on ${path}: ${answer.text}`);
      }
    }
    // valid multi-byte text still goes through, unchanged
    const text = 'é ü ✓ 😀 \u2028';
    const ok = await postRaw(`${h.url}/api/publish`, { ...json, authorization: `Bearer ${h.apiKey}` }, Buffer.from(JSON.stringify({ channel, data: text })));
    assert.equal(ok.status, 200, ok.text);
    const [publication] = await watcher.waitPublications(channel, 1);
    assert.equal(publication.data, text);
    const history = await h.api('history', { channel, limit: 10 });
    assert.equal(history.body.publications.length, 1, 'only the valid publication was published');
  });
});
