/**
 * Hostile input on a WebSocket opened in its upgrade request (`connect=1`,
 * docs/protocol.md "WebSocket"): SECURITY-TESTS A1 (a foreign origin is
 * refused before anything runs), A4 (an overlong URL), C14/C18 (forged
 * tokens, too many channels, bad and hostile names and position vectors),
 * B12 (hostile query values answer fast, the process stays alive) and the
 * rule that tokens are never logged, even from the query string.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import diagnosticsChannel from 'node:diagnostics_channel';
import { buildConfig } from '../../src/config/load.ts';
import { startServer, type HeraldServer } from '../../src/app/app.ts';
import { createLogger } from '../../src/observability/pino-logger.ts';
import { testConfig } from '../helpers/herald.ts';
import { signToken } from '../helpers/herald-ws.ts';
import { rawExchange, upgradeHead, type RawAnswer } from './raw-http.ts';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('WebSocket open in the upgrade request: hostile queries', { timeout: 60000 }, () => {
  let server: HeraldServer;
  let stateDir = '';
  const hmacSecret = randomBytes(32).toString('base64url');
  const logLines: string[] = [];

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'herald-ws-open-sec-'));
    const raw = testConfig(hmacSecret, randomBytes(24).toString('base64url'));
    const config = buildConfig({ ...raw, stateDir, cors: { origins: ['https://site.example'] } }, { env: {} });
    const destination = new Writable({
      write(chunk, _encoding, done) {
        logLines.push(String(chunk));
        done();
      },
    });
    server = await startServer({ config, logger: createLogger('trace', destination) });
  });
  after(async () => {
    await server.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  const token = (sub: string, claims: Record<string, unknown> = {}): Promise<string> =>
    signToken(hmacSecret, { sub, exp: Math.floor(Date.now() / 1000) + 600, ...claims });
  const open = (query: string, extra: readonly string[] = []): Promise<RawAnswer> =>
    rawExchange(server.port, upgradeHead(server.port, extra, `/connection/websocket?connect=1&${query}`), { until: 'head', timeoutMs: 10000 });
  const errorCode = (answer: RawAnswer): string => {
    const body = answer.body.length > 0 ? answer.body : '{}';
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code ?? '';
  };

  test('forged tokens are refused before the 101 with 401', async () => {
    const forged = [
      // alg none
      `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"x"}').toString('base64url')}.`,
      await signToken('not-the-secret', { sub: 'x', exp: Math.floor(Date.now() / 1000) + 600 }),
      (await token('x')).slice(0, -4),
      'a'.repeat(8000),
      '%00%01%02',
    ];
    for (const value of forged) {
      const answer = await rawExchange(server.port, upgradeHead(server.port, [], `/connection/websocket?connect=1&token=${value}`), { timeoutMs: 10000 });
      assert.equal(answer.status, 401, value.slice(0, 40));
      assert.equal(errorCode(answer), 'unauthorized');
    }
  });

  test('more channels than limits.maxChannelsPerConnection, by name or by vector, are refused with 400', async () => {
    const t = await token('many');
    const names = Array.from({ length: 129 }, (_, i) => `channel=public:c${i}`).join('&');
    const byName = await rawExchange(server.port, upgradeHead(server.port, [], `/connection/websocket?connect=1&token=${t}&${names}`));
    assert.equal(byName.status, 400);
    assert.equal(errorCode(byName), 'bad_request');
    assert.match(byName.body, /maxChannelsPerConnection/);
    // The same channel many times is one channel.
    const same = await open(`token=${t}&${Array.from({ length: 500 }, () => 'channel=public:same').join('&')}`);
    assert.equal(same.status, 101);
    // 128 entries in the vector and one more by name.
    const vector = encodeURIComponent(Array.from({ length: 128 }, (_, i) => `public:v${i}|e|1`).join(' '));
    const mixed = await rawExchange(server.port, upgradeHead(server.port, [], `/connection/websocket?connect=1&token=${t}&last_event_id=${vector}&channel=public:extra`));
    assert.equal(mixed.status, 400);
  });

  test('bad and hostile channel names and vectors: 400 or ignored as documented, never a crash', async () => {
    const t = await token('names');
    const refusedNames = ['public:' + 'x'.repeat(300), 'public:a%00b', 'nope:x', 'public:a%0Ab'];
    for (const name of refusedNames) {
      const answer = await rawExchange(server.port, upgradeHead(server.port, [], `/connection/websocket?connect=1&token=${t}&channel=${name}`));
      assert.equal(answer.status, 400, `${name.slice(0, 40)}: ${answer.text.slice(0, 160)}`);
    }
    // Names that look like object keys are plain channels of the default namespace (no prototype is touched).
    for (const name of ['__proto__', 'constructor']) assert.equal((await open(`token=${t}&channel=${name}`)).status, 101, name);
    // A malformed vector is ignored as a whole (docs/protocol.md, "Position vectors"): the open succeeds.
    const malformed = ['|||', 'public:a|e', 'public:a|e|-1', 'public:a|e|1e400', 'x'.repeat(9000), '__proto__|x|1 constructor|y|2'];
    for (const vector of malformed) {
      const answer = await open(`token=${t}&last_event_id=${encodeURIComponent(vector)}`);
      assert.ok(answer.status === 101 || answer.status === 400, `${vector.slice(0, 40)}: ${answer.status}`);
    }
    // A hostile vector in the Last-Event-ID header likewise.
    const header = await open(`token=${t}`, ['Last-Event-ID: __proto__|x|1']);
    assert.ok(header.status === 101 || header.status === 400);
    // Still alive and answering.
    assert.equal((await open(`token=${t}&channel=public:alive`)).status, 101);
  });

  test('an overlong URL is answered 431 by the HTTP parser before any of this runs', async () => {
    const answer = await rawExchange(server.port, upgradeHead(server.port, [], `/connection/websocket?connect=1&channel=${'a'.repeat(17 * 1024)}`));
    assert.equal(answer.status, 431);
    // A long but acceptable one (about 12 KiB of vector) opens.
    const t = await token('long');
    const vector = encodeURIComponent(Array.from({ length: 100 }, (_, i) => `public:${'v'.repeat(60)}${i}|epoch|${i}`).join(' '));
    assert.ok(vector.length > 7000);
    const long = await open(`token=${t}&last_event_id=${vector}`);
    assert.equal(long.status, 101, long.text.slice(0, 200));
  });

  test('a request that is no valid WebSocket handshake is refused by the handshake check before connect runs', async () => {
    const t = await token('handshake');
    const target = `/connection/websocket?connect=1&token=${t}&channel=public:h`;
    const heads = [
      upgradeHead(server.port, [], target).replace(/Sec-WebSocket-Key: [^\r]+\r\n/, ''),
      upgradeHead(server.port, [], target).replace(/Sec-WebSocket-Key: [^\r]+/, 'Sec-WebSocket-Key: short'),
      upgradeHead(server.port, [], target).replace('Sec-WebSocket-Version: 13', 'Sec-WebSocket-Version: 12'),
    ];
    // No connection is created for them (herald:connection:opened, observability/diagnostics.ts).
    let opened = 0;
    const count = (): void => void opened++;
    diagnosticsChannel.subscribe('herald:connection:opened', count);
    try {
      for (const head of heads) {
        const answer = await rawExchange(server.port, head);
        assert.equal(answer.status, 400, answer.text.slice(0, 120));
      }
    } finally {
      diagnosticsChannel.unsubscribe('herald:connection:opened', count);
    }
    assert.equal(opened, 0);
    assert.equal((await open(`token=${t}&channel=public:h`)).status, 101);
  });

  test('a foreign origin is refused before the token is even read', async () => {
    const answer = await rawExchange(server.port, upgradeHead(server.port, ['Origin: https://evil.example'], `/connection/websocket?connect=1&token=${await token('o')}`));
    assert.equal(answer.status, 403);
    assert.equal(errorCode(answer), 'origin_not_allowed');
  });

  test('tokens from the query never reach the log', async () => {
    const good = await token('logged-user', { marker: randomBytes(8).toString('hex') });
    const bad = await signToken('not-the-secret', { sub: 'x', exp: Math.floor(Date.now() / 1000) + 600 });
    const expired = await signToken(hmacSecret, { sub: 'x', exp: Math.floor(Date.now() / 1000) - 600 });
    for (const value of [good, bad, expired]) await open(`token=${value}&channel=public:log`);
    await open(`token=${good}&channel=nope:x`);
    const text = logLines.join('');
    assert.ok(logLines.length > 0, 'the server logged at trace level');
    for (const value of [good, bad, expired]) {
      assert.ok(!text.includes(value), 'a token in the log');
      // Nor its signature alone.
      assert.ok(!text.includes(value.split('.')[2]!), 'a token signature in the log');
    }
  });
});
