/**
 * SECURITY-TESTS A5 and A6, in the same run: hundreds of slowloris sockets
 * (one header byte at a time) and slow-body sockets are closed by the
 * headers and request timeouts while a normal client still connects; an idle
 * authenticated WebSocket and an idle SSE stream, which see only heartbeats,
 * outlive every HTTP timeout and still deliver afterwards.
 *
 * The timeouts are configured small; the test waits for events (closes,
 * heartbeats counted), never for a wall-clock threshold.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http, unique } from '../helpers/herald-ws.ts';
import { RawSse } from '../helpers/rt-raw.ts';
import { waitUntil } from '../helpers/rt-util.ts';

const HEADERS_TIMEOUT_MS = 400;
const REQUEST_TIMEOUT_MS = 800;
const KEEP_ALIVE_TIMEOUT_MS = 200;
const PING_MS = 250;
/** A held poll outlives the request timeout too. */
const POLL_TIMEOUT_MS = 2 * REQUEST_TIMEOUT_MS;
/**
 * Generous: the test process also drives hundreds of slow sockets on a shared
 * machine; and a held poll only counts as activity when it arrives, so
 * intervalMs × maxMissed must exceed the poll timeout.
 */
const MAX_MISSED = 8;
const SLOW_HEADER_SOCKETS = 250;
const SLOW_BODY_SOCKETS = 25;
const DRIP_MS = 100;
/** Safety bound: a drip never goes on longer than this, whatever happens. */
const DRIP_LIMIT_MS = 20000;

interface Dripper {
  readonly socket: net.Socket;
  closed: boolean;
  answer: string;
  stop(): void;
}

/** Connects and sends `head` at once, then one byte of `drip` every DRIP_MS until closed. */
function dripper(port: number, head: string, drip: string): Dripper {
  const socket = net.connect({ port, host: '127.0.0.1' });
  let index = 0;
  const state: Dripper = {
    socket,
    closed: false,
    answer: '',
    stop: () => {
      clearInterval(timer);
      clearTimeout(limit);
    },
  };
  let timer: NodeJS.Timeout | undefined;
  const limit = setTimeout(() => {
    state.stop();
    socket.destroy();
  }, DRIP_LIMIT_MS);
  socket.on('connect', () => {
    socket.write(head);
    timer = setInterval(() => {
      if (state.closed || index >= drip.length) return;
      socket.write(drip[index++]!);
    }, DRIP_MS);
  });
  socket.on('data', (chunk: Buffer) => {
    state.answer += chunk.toString('latin1');
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    state.closed = true;
    state.stop();
  });
  return state;
}

describe('slowloris and long-lived connections (A5, A6)', { timeout: 90000 }, () => {
  let h: TestHerald;

  before(async () => {
    h = await startHerald({
      http: { headersTimeoutMs: HEADERS_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS, keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS },
      ping: { intervalMs: PING_MS, maxMissed: MAX_MISSED },
      longPoll: { pollTimeoutMs: POLL_TIMEOUT_MS, sessionTimeoutMs: 10 * POLL_TIMEOUT_MS },
    });
  });
  after(async () => {
    closeAllClients();
    await h.close();
  });

  test('slow sockets are cut by the HTTP timeouts while idle WebSocket and SSE connections outlive them all', async () => {
    const channel = unique('chat:longlived');
    // A6: idle, authenticated, long-lived connections opened first.
    const ws = await connectWs(h, 'idle-ws');
    await ws.call('subscribe', { channel });
    const sse = await RawSse.connect(h.server.port, `/connection/sse?token=${await h.token('idle-sse')}&channel=${channel}`);
    assert.match(sse.statusLine, /^HTTP\/1\.1 200 /);
    await waitUntil(() => sse.frames.some((f) => f['push'] === 'subscribed'), { label: 'SSE subscribed' });
    // A long poll with nothing to deliver is held for pollTimeoutMs, twice the request timeout.
    const opened = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('idle-poll') } });
    assert.equal(opened.status, 200);
    const held = http(`${h.url}/connection/poll`, { headers: { 'herald-session': opened.body.session }, body: { seq: opened.body.seq } });

    // A5: slow headers (one byte per tick, never finishing) and slow bodies.
    const slow: Dripper[] = [];
    for (let i = 0; i < SLOW_HEADER_SOCKETS; i++) {
      slow.push(dripper(h.server.port, 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ', 'a'.repeat(10000)));
    }
    for (let i = 0; i < SLOW_BODY_SOCKETS; i++) {
      slow.push(
        dripper(
          h.server.port,
          `POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${h.apiKey}\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n`,
          ' '.repeat(10000),
        ),
      );
    }
    try {
      // A normal client gets through while the slow sockets are held.
      const health = await http(`${h.url}/health`);
      assert.equal(health.status, 200);
      const fresh = await connectWs(h, 'fresh');
      await fresh.call('ping');

      await waitUntil(() => slow.every((s) => s.closed), {
        timeoutMs: DRIP_LIMIT_MS - 2000,
        intervalMs: 20,
        label: 'every slow socket closed by the server',
        describe: () => `${slow.filter((s) => !s.closed).length} of ${slow.length} still open`,
      });
      const timedOut = slow.filter((s) => s.answer.startsWith('HTTP/1.1 408 '));
      assert.ok(timedOut.length > 0, `answers: ${[...new Set(slow.map((s) => s.answer.split('\r\n')[0]))].join(' / ')}`);
      for (const s of slow) assert.ok(s.answer === '' || /^HTTP\/1\.1 408 /.test(s.answer), `unexpected answer ${s.answer.slice(0, 60)}`);
    } finally {
      for (const s of slow) {
        s.stop();
        s.socket.destroy();
      }
    }

    // A6: both idle connections see only heartbeats for longer than twice the
    // largest HTTP timeout (counted in heartbeats), then still deliver.
    const beats = Math.ceil((2 * Math.max(HEADERS_TIMEOUT_MS, REQUEST_TIMEOUT_MS, KEEP_ALIVE_TIMEOUT_MS)) / PING_MS) + 1;
    const wsPingsBefore = ws.frames.filter((f) => f.push === 'ping').length;
    const ssePingsBefore = sse.frames.filter((f) => f['push'] === 'ping').length;
    await ws.waitUntil(() => (ws.frames.filter((f) => f.push === 'ping').length >= wsPingsBefore + beats ? true : undefined), `${beats} more WebSocket heartbeats`, 30000);
    await waitUntil(() => sse.frames.filter((f) => f['push'] === 'ping').length >= ssePingsBefore + beats, {
      timeoutMs: 30000,
      label: `${beats} more SSE heartbeats`,
      describe: () => `ended=${sse.ended} closed=${sse.closed}`,
    });
    assert.ok(ws.isOpen, 'the idle WebSocket is open');
    assert.ok(!sse.ended && !sse.closed, 'the idle SSE stream is open');
    assert.equal((await h.api('publish', { channel, data: 'still here' })).status, 200);
    await ws.waitMarker(channel, 'still here');
    await waitUntil(() => sse.frames.some((f) => f['push'] === 'publication' && f['data'] === 'still here'), { label: 'SSE publication' });
    const polled = await held;
    assert.equal(polled.status, 200, polled.text);
    assert.deepEqual(polled.body.messages, [], 'answered empty at the poll timeout, not cut by the request timeout: ' + polled.text);
    await http(`${h.url}/connection/close`, { headers: { 'herald-session': opened.body.session }, body: {} });
    sse.destroy();
  });
});
