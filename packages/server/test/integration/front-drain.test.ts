/**
 * During a drain the front (packages/server/src/edge/front.ts) answers a
 * body it refuses as fastify does: the drain's `connection: close` and the
 * refusal's are one header, in the drain's place. Each case is sent as raw
 * bytes once to a front route (`POST /connection/poll/open`) and once to a
 * fastify route of the same listener (`POST /connection/command`); status,
 * headers in order (but `date`) and body must be the same.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { closeAllClients } from '../helpers/herald-ws.ts';
import { rawExchange } from '../security/raw-http.ts';

interface Answer {
  readonly status: number;
  readonly headers: readonly string[];
  readonly body: string;
}

async function send(port: number, path: string, lines: readonly string[], body: Buffer): Promise<Answer> {
  const head = [`POST ${path} HTTP/1.1`, `Host: 127.0.0.1:${String(port)}`, 'Content-Type: application/json', `Content-Length: ${String(body.length)}`, ...lines].join('\r\n');
  const raw = await rawExchange(port, Buffer.concat([Buffer.from(head + '\r\n\r\n'), body]));
  const end = raw.text.indexOf('\r\n\r\n');
  const [statusLine = '', ...headers] = raw.text.slice(0, end).split('\r\n');
  return {
    status: Number(statusLine.split(' ')[1]),
    headers: headers.map((line) => line.toLowerCase()).filter((line) => !line.startsWith('date:')),
    body: raw.text.slice(end + 4),
  };
}

describe('front during a drain', { timeout: 60000 }, () => {
  let h: TestHerald;
  let drained: Promise<boolean>;
  before(async () => {
    h = await startHerald({ api: { maxBodyBytes: 2048 }, limits: { maxMessageBytes: 2048 } });
    // A long-poll session that does not poll keeps the drain going (its 3001 waits for its next poll).
    await LongPollSession.open(h.url, {});
    drained = h.server.shutdown(5000);
    while ((await fetch(`${h.url}/health`)).status !== 503) await sleep(10);
  });
  after(async () => {
    closeAllClients();
    await drained;
    await h.close();
  });

  test('a refused body: one connection: close, and the same answer as a fastify route', async () => {
    const cases: [string, Buffer][] = [
      ['too large', Buffer.from(`{"x":"${'x'.repeat(4096)}"}`)],
      ['invalid JSON', Buffer.from('{"seq":')],
      ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])],
    ];
    for (const [name, body] of cases) {
      const front = await send(h.server.port, '/connection/poll/open', [], body);
      const fastify = await send(h.server.port, '/connection/command', [], body);
      assert.ok(front.status >= 400, `${name}: ${front.status} ${front.body}`);
      assert.deepEqual(
        front.headers.filter((line) => line.startsWith('connection:')),
        ['connection: close'],
        `${name}: ${front.headers.join(' | ')}`,
      );
      assert.deepEqual(front, fastify, `${name}: front and fastify answer alike`);
    }
  });
});
