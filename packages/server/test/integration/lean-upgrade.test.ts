/**
 * `http.leanWebSocket` (packages/server/src/edge/lean-upgrade.ts): the lean
 * HTTP layer reads WebSocket upgrade requests on the connection paths and
 * hands them to the WebSocket endpoint without node:http's request objects.
 * An upgrade it takes is counted (`leanStats.upgrades`) and answered as on
 * node:http (a server with the switch off beside one with it on): the 101
 * with the opening frames and the bytes the client sent behind its request
 * (a ping), whole or with the head split over writes, and every refusal
 * byte for byte; what it does not take (another path, HTTP/1.0, a body
 * announced) goes to node:http and gets node:http's answer.
 * websocket*.test.ts run on the layer by default and on node:http with
 * HERALD_TEST_NODE_HTTP=1 (node-http-suites.test.ts).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startPusherHerald, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import net from 'node:net';
import { leanStats } from '../../src/edge/lean-http.ts';
import { serverFrames } from '../helpers/ws-frames.ts';

const ORIGIN = 'https://app.example';

/** An upgrade request's head with a fixed key (the answers of two servers compare byte for byte). */
function upgrade(target: string, extra: readonly string[] = [], version = '1.1'): string {
  return [`GET ${target} HTTP/${version}`, 'Host: 127.0.0.1', 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${KEY}`, 'Sec-WebSocket-Version: 13', ...extra, '', ''].join(
    '\r\n',
  );
}
const KEY = randomBytes(16).toString('base64');

/** A masked ping with payload "p1". */
const mask = [1, 2, 3, 4];
const PING = Buffer.from([0x89, 0x80 | 2, ...mask, 'p'.charCodeAt(0) ^ mask[0]!, '1'.charCodeAt(0) ^ mask[1]!]);

/** Server frames after the answer's head (complete ones; lengths below 65536): a push by its name, another frame by its opcode and payload. */
function frames(bytes: Buffer): string[] {
  return serverFrames(bytes).map(({ opcode, payload }) => (opcode === 1 ? `push ${String((JSON.parse(payload) as { push?: string }).push)}` : `opcode ${opcode}: ${payload}`));
}

/**
 * Writes `parts` (30 ms apart) on a new connection and reads the answer: its
 * head (without Date), the bytes after it and the frames in them, once the
 * server ended the connection, a refusal's body is complete, or `done` holds
 * for the frames after a 101 (rejects after 15 s); `done` by default: at
 * once (a 101 by commands gets no frame before the client sends one).
 */
async function exchange(port: number, parts: readonly (string | Buffer)[], done: (frames: string[]) => boolean = () => true): Promise<{ head: string; body: string; frames: string[]; ended: boolean }> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  let received = Buffer.alloc(0);
  let ended = false;
  const result = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no whole answer in 15 s: ${received.toString('latin1').slice(0, 300)}`)), 15000);
    const check = (): void => {
      const end = received.indexOf('\r\n\r\n');
      const head = end === -1 ? '' : received.subarray(0, end).toString('latin1');
      const rest = received.subarray(end + 4);
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? '0');
      const whole = end !== -1 && (head.startsWith('HTTP/1.1 101') ? done(frames(rest)) : rest.length >= length);
      if (!ended && !whole) return;
      clearTimeout(timer);
      resolve();
    };
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      check();
    });
    socket.on('end', () => {
      ended = true;
      check();
    });
    socket.on('error', reject);
  });
  for (const [i, part] of parts.entries()) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 30));
    socket.write(part);
  }
  await result;
  // Anything after the answer, and whether the server ends the connection, shows within 50 ms.
  await new Promise((resolve) => setTimeout(resolve, 50));
  socket.destroy();
  const end = received.indexOf('\r\n\r\n');
  const rest = end === -1 ? Buffer.alloc(0) : received.subarray(end + 4);
  const head = (end === -1 ? received : received.subarray(0, end)).toString('latin1').replace(/\r\nDate: [^\r]*/, '');
  return { head, body: rest.toString('latin1'), frames: frames(rest), ended };
}

describe('lean HTTP layer: WebSocket upgrades', { timeout: 120000 }, () => {
  let plain: PusherHerald;
  let lean: PusherHerald;
  // The second app's key names its Pusher path; its native paths are /apps/shop/….
  const apps = [testApp('main'), testApp('shop', { key: 'shop-key' })];
  before(async () => {
    const opts = { cors: { origins: [ORIGIN] }, channels: { namespaces: [{ name: 'public', allowAnonymous: true }] } };
    plain = await startPusherHerald(apps, { ...opts, http: { leanWebSocket: false } });
    lean = await startPusherHerald(apps, { ...opts, http: { leanWebSocket: true } });
  });
  after(async () => {
    await plain?.close();
    await lean?.close();
  });

  const port = (h: PusherHerald): number => h.server.port;

  test('an open in the upgrade request with a ping behind it, whole or split: served by the layer, answered as on node:http', async () => {
    const accept = createHash('sha1').update(`${KEY}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    const head = upgrade('/connection/websocket?connect=1&channel=public%3Alean');
    const whole = Buffer.concat([Buffer.from(head, 'latin1'), PING]);
    const done = (seen: string[]): boolean => seen.includes('opcode 10: p1') && seen.includes('push subscribed');
    for (const parts of [[whole], [head.slice(0, 20), head.slice(20, 70), Buffer.concat([Buffer.from(head.slice(70), 'latin1'), PING])]]) {
      const before = leanStats.upgrades;
      const expected = await exchange(port(plain), parts, done);
      assert.equal(leanStats.upgrades, before, 'the switch off: node:http took it');
      const got = await exchange(port(lean), parts, done);
      assert.equal(leanStats.upgrades, before + 1, `the layer took it (${parts.length} writes)`);
      assert.equal(got.head, expected.head);
      assert.match(got.head, new RegExp(`^HTTP/1\\.1 101 Switching Protocols\\r\\n[^]*Sec-WebSocket-Accept: ${accept.replace(/[+/]/g, '\\$&')}`));
      assert.deepEqual([...got.frames].sort(), [...expected.frames].sort());
      assert.equal(got.frames[0], 'push connected');
    }
  });

  test('refusals and upgrades by commands: taken by the layer, answered byte for byte as on node:http', async () => {
    // With the number of frames that follow a 101.
    const cases: [string, string, number?][] = [
      ['by commands', upgrade('/connection/websocket')],
      ['an app path, anonymous', upgrade('/apps/shop/connection/websocket?connect=1&channel=public%3Ax')],
      ['an app path by commands', upgrade('/apps/shop/connection/websocket')],
      ['an unknown app', upgrade('/apps/nope/connection/websocket')],
      ['a bad key', upgrade('/connection/websocket?connect=1').replace(/Sec-WebSocket-Key: [^\r]*/, 'Sec-WebSocket-Key: short')],
      ['a bad version', upgrade('/connection/websocket').replace('Sec-WebSocket-Version: 13', 'Sec-WebSocket-Version: 7')],
      ['a refused origin', upgrade('/connection/websocket?connect=1', ['Origin: https://evil.example', 'Cookie: herald_token=x'])],
      ['an invalid token', upgrade('/connection/websocket?connect=1&token=nope')],
      ['a private channel anonymously', upgrade('/connection/websocket?connect=1&channel=secret%3Ax')],
      ['a protocol header too long', upgrade('/connection/websocket', [`Sec-WebSocket-Protocol: ${'a,'.repeat(600)}a`])],
      ['a subprotocol', upgrade('/connection/websocket?connect=1&channel=public%3Ay', ['Sec-WebSocket-Protocol: herald, chat']), 2],
    ];
    for (const [name, data, count = 0] of cases) {
      const expected = await exchange(port(plain), [data], (seen) => seen.length >= count);
      const before = leanStats.upgrades;
      const got = await exchange(port(lean), [data], (seen) => seen.length >= count);
      assert.equal(leanStats.upgrades, before + 1, `${name}: the layer took it`);
      assert.equal(got.head, expected.head, name);
      // After a 101: the same frames (their client ids and epochs differ between the servers).
      if (got.head.startsWith('HTTP/1.1 101')) assert.deepEqual(got.frames, expected.frames, name);
      else assert.equal(got.body, expected.body, name);
      assert.equal(got.ended, expected.ended, name);
    }
  });

  test('what the layer does not take goes to node:http with its bytes and gets its answer', async () => {
    const cases: [string, string][] = [
      ['the Pusher path', upgrade('/app/shop-key?protocol=7')],
      ['another path', upgrade('/connection/websocketx')],
      ['HTTP/1.0', upgrade('/connection/websocket', [], '1.0')],
      ['a body announced', upgrade('/connection/websocket', ['Content-Length: 2'])],
      ['no Upgrade', upgrade('/connection/websocket').replace('Upgrade: websocket\r\n', '')],
    ];
    for (const [name, data] of cases) {
      const expected = await exchange(port(plain), [data]);
      const before = leanStats.upgrades;
      const handOffs = leanStats.handOffs;
      const got = await exchange(port(lean), [data]);
      assert.equal(leanStats.upgrades, before, `${name}: not taken`);
      assert.equal(leanStats.handOffs, handOffs + 1, `${name}: handed to node:http`);
      assert.equal(got.head.replace(/\r\nKeep-Alive: [^\r]*/, ''), expected.head.replace(/\r\nKeep-Alive: [^\r]*/, ''), name);
      assert.equal(got.ended, expected.ended, name);
    }
  });
});
