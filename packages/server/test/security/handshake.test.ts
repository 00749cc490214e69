/**
 * SECURITY-TESTS A3, A4, A8: hostile upgrade heads are answered at once with
 * a 4xx and the server stays responsive; a WebSocket that never sends
 * `connect` is closed after `limits.staleMs` with 3502.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http } from '../helpers/herald-ws.ts';
import { RawWebSocket } from '../helpers/rt-raw.ts';
import { waitUntil } from '../helpers/rt-util.ts';
import { rawExchange, upgradeHead, upgradeStatus } from './raw-http.ts';

describe('hostile WebSocket handshakes (A3, A4) and stale connections (A8)', { timeout: 60000 }, () => {
  let h: TestHerald;

  before(async () => {
    h = await startHerald({ limits: { staleMs: 300 } });
  });
  afterEach(() => closeAllClients());
  after(() => h.close());

  test('Sec-WebSocket-Protocol of 16k spaces or 1000 tokens is answered at once (400, or 101 for one real token); the event loop stays responsive', async () => {
    const bystander = await connectWs(h, 'bystander');
    const hostile = [
      { value: ' '.repeat(16 * 1024), refused: true },
      // Leading whitespace is not part of a header value: this is the protocol "x", accepted.
      { value: ' '.repeat(15 * 1024) + 'x', refused: false },
      { value: Array.from({ length: 1000 }, (_, i) => `p${i}`).join(', '), refused: true },
      { value: Array.from({ length: 1000 }, () => 'a').join(','), refused: true },
      { value: ','.repeat(8000), refused: true },
    ];
    const answers = await Promise.all(
      hostile.flatMap(({ value, refused }) =>
        Array.from({ length: 4 }, async () => ({
          refused,
          answer: await rawExchange(h.server.port, upgradeHead(h.server.port, [`Sec-WebSocket-Protocol: ${value}`]), { until: 'head' }),
        })),
      ),
    );
    for (const { refused, answer } of answers) {
      if (refused) assert.equal(answer.status, 400, answer.text.slice(0, 120));
      else assert.equal(answer.status, 101, answer.text.slice(0, 120));
    }
    // Responsive: a command on a live connection and a fresh upgrade are answered.
    await bystander.call('ping');
    assert.equal((await upgradeStatus(h.server.port)).status, 101);
    // An ordinary subprotocol list still upgrades (Herald picks none of them).
    assert.equal((await upgradeStatus(h.server.port, ['Sec-WebSocket-Protocol: herald, chat'])).status, 101);
  });

  test('2001 headers or 17 KiB of headers on the upgrade get 431; the process stays alive', async () => {
    const many = Array.from({ length: 2001 }, (_, i) => `x${i % 26}:${i % 10}`);
    const manyAnswer = await rawExchange(h.server.port, upgradeHead(h.server.port, many));
    assert.equal(manyAnswer.status, 431, manyAnswer.text.slice(0, 120));
    assert.ok(manyAnswer.closed);

    const big = await rawExchange(h.server.port, upgradeHead(h.server.port, [`X-Big: ${'a'.repeat(17 * 1024)}`]));
    assert.equal(big.status, 431, big.text.slice(0, 120));

    const spread = Array.from({ length: 40 }, (_, i) => `X-Part-${i}: ${'b'.repeat(440)}`);
    const spreadAnswer = await rawExchange(h.server.port, upgradeHead(h.server.port, spread));
    assert.equal(spreadAnswer.status, 431, 'about 17.6 KiB over many headers');

    // The same limits apply to plain requests.
    const plain = await rawExchange(h.server.port, `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n${many.join('\r\n')}\r\n\r\n`);
    assert.equal(plain.status, 431);

    assert.equal((await http(`${h.url}/health`)).status, 200);
    const c = await connectWs(h, 'after');
    await c.call('ping');
  });

  test('a WebSocket that never sends connect is closed after staleMs with 3502; a connected one stays', async () => {
    const connected = await connectWs(h, 'connected');
    const silent = await RawWebSocket.connect(h.server.port);
    try {
      await waitUntil(() => silent.parser.closeCode(), { timeoutMs: 10000, label: 'close frame on the silent socket' });
      assert.equal(silent.parser.closeCode(), 3502);
      const close = silent.parser.frames.find((f) => f.opcode === 0x8);
      assert.match(close?.payload.subarray(2).toString('utf8') ?? '', /stale/);
      await connected.call('ping');
      assert.ok(connected.isOpen);
    } finally {
      silent.destroy();
    }
  });
});
