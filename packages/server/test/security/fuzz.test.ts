/**
 * SECURITY-TESTS.md section B, item 12: property-based fuzzing of every
 * decoder of ours, fed through real sockets in 1–32 byte chunks.
 *
 * The decoders' own properties live beside them (packages/server/test/unit/command-decoder,
 * positions, channel-name). Here the same kinds of input arrive the way an
 * attacker sends them: a WebSocket message split into fragments and TCP
 * writes, an SSE request with a fuzzed `Last-Event-ID` / query / token /
 * cookie, a long-poll open with a fuzzed cursor, fuzzed HTTP command bodies.
 * For every input: no uncaught exception (the server runs in this process),
 * no `internal` answer (500, 3002, 1011), a documented answer within a
 * bounded wait (a hang fails; slowness does not), the oracle of the pure
 * decoder agrees with what the server did, and afterwards the server serves
 * a normal client with memory back near where it started.
 *
 * Budget: every property has `numRuns` and `interruptAfterTimeLimit`; the
 * whole file stays under about 20 s. A failure prints fast-check's seed and
 * path; rerun with them to reproduce.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { IncomingMessage } from 'node:http';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { connectWs, closeAllClients, http } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import type { RawWebSocket } from '../helpers/rt-raw.ts';
import { seededRandom } from '../helpers/rt-util.ts';
import { fragmented, frame, Opcode, openRaw, retainedBytes } from '../helpers/ws-frames.ts';
import { RawHttp, request } from '../helpers/raw-http.ts';
import { decodeCommand, parseJsonSafely } from '@herald/protocol/commands';
import { decodePositions } from '@herald/protocol';
import { apiErrors, disconnects } from '@herald/protocol';
import { bearer } from '../../src/transports/sse.ts';
import { Edge } from '../../src/edge/edge.ts';
import { buildConfig } from '../../src/config/load.ts';

const MAX_MESSAGE = 65536;
const MiB = 1024 * 1024;
const ORIGIN = 'https://app.example';
const COOKIE = 'herald_token';

/** Per-property budget: whichever comes first. */
const budget = (numRuns: number, ms: number) => ({ numRuns, interruptAfterTimeLimit: ms, markInterruptAsFailure: false });

const registeredDisconnects = new Set<number>(Object.values(disconnects).map((d) => d.code));
const internalDisconnect = disconnects.internal.code;
const registeredApiErrors = new Set(Object.keys(apiErrors));

// ---------------------------------------------------------------------------
// Inputs

const weird = ['|', ' ', ':', '\t', '\u0000', '\u0001', 'é', '€', '😀', '\ud800', '%', '%E0%A4%A', '99999999999999999999', '-', '"', '\\', '{', '}', '[', ']', ',', '\r\n', '__proto__', 'constructor'];

/** Applies a few random edits (delete, insert, replace, duplicate, truncate) to a string. */
function mutated(base: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const edit = fc.tuple(fc.constantFrom('delete', 'insert', 'replace', 'duplicate', 'truncate'), fc.nat(), fc.nat(), fc.constantFrom(...weird));
  return fc.tuple(base, fc.array(edit, { minLength: 1, maxLength: 4 })).map(([text, edits]) => {
    let out = text;
    for (const [op, a, b, piece] of edits) {
      const at = out.length === 0 ? 0 : a % out.length;
      const to = out.length === 0 ? 0 : at + (b % Math.max(1, out.length - at));
      if (op === 'delete') out = out.slice(0, at) + out.slice(at + 1);
      else if (op === 'insert') out = out.slice(0, at) + piece + out.slice(at);
      else if (op === 'replace') out = out.slice(0, at) + piece + out.slice(at + 1);
      else if (op === 'duplicate') out = out.slice(0, to) + out.slice(at, to) + out.slice(to);
      else out = out.slice(0, at);
    }
    return out;
  });
}

const publicChannel = fc.stringMatching(/^public:[a-z0-9_]{1,12}$/);
const anyChannel = fc.oneof(publicChannel, fc.stringMatching(/^[a-z]{1,6}:[A-Za-z0-9_.:@/=,-]{1,20}$/), fc.string({ maxLength: 40 }));
const epoch = fc.stringMatching(/^[A-Za-z0-9_-]{1,32}$/);
const offset = fc.oneof(fc.nat(1000), fc.constant(Number.MAX_SAFE_INTEGER), fc.nat());
const validVector = fc
  .uniqueArray(fc.tuple(publicChannel, epoch, offset), { selector: (t) => t[0], minLength: 1, maxLength: 6 })
  .map((list) => list.map(([c, e, o]) => `${c}|${e}|${o}`).join(' '));
const vectorish = fc.oneof(
  { weight: 3, arbitrary: validVector },
  { weight: 4, arbitrary: mutated(validVector) },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 100 }) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', '|||', 'public:a|e|1 '.repeat(129), 'x'.repeat(9000), 'public:a|e|1  public:b|e|2') },
);

const methods = ['connect', 'subscribe', 'unsubscribe', 'publish', 'history', 'presence', 'presence_stats', 'ping', 'pong', 'refresh', 'sub_refresh', 'nope', '__proto__', 'toString'];
const idish = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 2 ** 31 - 1 }) }, { weight: 1, arbitrary: fc.constantFrom(0, -1, 2 ** 31, 1.5, '1', null, 1e300) });
const paramsish = fc.record(
  {
    channel: anyChannel,
    token: fc.oneof(fc.string({ maxLength: 60 }), fc.constant('eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.')),
    data: fc.jsonValue({ maxDepth: 3 }),
    recover: fc.boolean(),
    epoch: fc.oneof(epoch, fc.string({ maxLength: 40 })),
    offset: fc.oneof(offset, fc.integer(), fc.double()),
    limit: fc.integer({ min: -5, max: 20000 }),
    since: fc.record({ epoch, offset }),
    extra: fc.anything({ maxDepth: 2 }),
  },
  { requiredKeys: [] },
);
const commandObject = fc.record({ id: idish, method: fc.constantFrom(...methods), params: paramsish }, { requiredKeys: ['method'] });
const channelParams = fc.record({ channel: fc.oneof({ weight: 4, arbitrary: publicChannel }, { weight: 1, arbitrary: anyChannel }) });
const validParams: Record<string, fc.Arbitrary<unknown>> = {
  connect: fc.record({ token: fc.string({ maxLength: 40 }), name: fc.string({ maxLength: 64 }) }, { requiredKeys: [] }),
  subscribe: fc.record({ channel: publicChannel, recover: fc.boolean(), epoch, offset }, { requiredKeys: ['channel'] }),
  unsubscribe: channelParams,
  publish: fc.record({ channel: publicChannel, data: fc.jsonValue({ maxDepth: 3 }) }),
  history: fc.record({ channel: publicChannel, limit: fc.nat(20), since: fc.record({ epoch, offset }), reverse: fc.boolean() }, { requiredKeys: ['channel'] }),
  presence: channelParams,
  presence_stats: channelParams,
  ping: fc.constant({}),
};
/** Commands that pass the envelope and mostly the params schema: they reach the handlers. */
const validCommand = fc.oneof(
  ...Object.entries(validParams).map(([method, params]) => fc.record({ id: fc.integer({ min: 1, max: 2 ** 31 - 1 }), method: fc.constant(method), params })),
);
/** Texts a client might send as one command. */
const commandText = fc.oneof(
  { weight: 6, arbitrary: validCommand.map((c) => JSON.stringify(c)) },
  { weight: 3, arbitrary: commandObject.map((c) => JSON.stringify(c)) },
  { weight: 3, arbitrary: mutated(fc.oneof(validCommand, commandObject).map((c) => JSON.stringify(c))) },
  { weight: 1, arbitrary: fc.json({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 100 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '[]',
      '{"id":1,"method":"ping","params":{}}'.padEnd(MAX_MESSAGE, ' '),
      '{"id":1,"method":"ping","params":{}}'.padEnd(MAX_MESSAGE + 1, ' '),
      '['.repeat(20000) + ']'.repeat(20000),
      '{"a":'.repeat(8000) + '1' + '}'.repeat(8000),
      '{"id":1,"method":"publish","params":{"channel":"public:x","data":{"__proto__":{"polluted":1}}}}',
      '{"id":1,"method":"connect","params":{"constructor":{"prototype":{"polluted":1}}}}',
      '{"id":1,"method":"subscribe","params":{"channel":"public:' + 'a'.repeat(300) + '"}}',
      '{"id":1,"method":"history","params":{"channel":"public:x","limit":10000,"since":{"epoch":"x","offset":9007199254740991}}}',
    ),
  },
);

/** A percent-encoding that never throws (lone surrogates become U+FFFD, like a browser would send). */
function percentEncode(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += /[A-Za-z0-9_.~-]/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** SSE frames (`data:` lines) of a stream body. */
function sseFrames(body: string): Record<string, unknown>[] {
  const frames: Record<string, unknown>[] = [];
  for (const line of body.split('\n')) {
    if (!line.startsWith('data: ')) continue;
    const parsed = parseJsonSafely(line.slice(6));
    if (typeof parsed === 'object' && parsed !== null) frames.push(parsed as Record<string, unknown>);
  }
  return frames;
}

let parserLevelAnswers = 0;

/** A non-200 HTTP answer must be a documented status with, when JSON, a registered code. */
function assertDocumentedError(exchange: RawHttp, allowed: ReadonlySet<number>, label: string): void {
  const status = exchange.status;
  assert.ok(status !== undefined && allowed.has(status), `${label}: status ${status}: ${exchange.text.slice(0, 200)}`);
  const parsed = parseJsonSafely(exchange.body) as { error?: { code?: unknown } | string } | undefined;
  if (typeof parsed?.error === 'string') {
    // fastify's answer to a request the HTTP parser refused (bad header bytes): not one of ours, but a 4xx that ends the exchange
    assert.ok(status === 400 || status === 413 || status === 431, `${label}: parser-level answer ${status}`);
    parserLevelAnswers++;
  } else if (parsed?.error !== undefined) {
    assert.ok(registeredApiErrors.has(String(parsed.error.code)), `${label}: unregistered code ${String(parsed.error.code)}`);
    assert.notEqual(parsed.error.code, 'internal', `${label}: internal error`);
  }
}

// ---------------------------------------------------------------------------

describe('fuzzing over real sockets (SECURITY-TESTS B 12)', { timeout: 120000 }, () => {
  let h: TestHerald;
  let baseline = 0;
  const seen = { wsClosed: new Map<number, number>(), wsAnswered: 0, httpStatus: new Map<number, number>() };
  const count = (map: Map<number, number>, key: number) => map.set(key, (map.get(key) ?? 0) + 1);

  before(async () => {
    h = await startHerald({
      auth: { cookieName: COOKIE },
      cors: { origins: [ORIGIN] },
      limits: {
        newConnectionsPerIpPerSecond: 1000000,
        maxConnectionsPerIp: 100000,
        inboundRatePerSecond: 100000,
        inboundBurst: 100000,
        inboundHardPerSecond: 100000,
      },
      api: { rateLimitPerIp: 1000000, rateLimitPerKey: 1000000 },
    });
    baseline = retainedBytes();
  });
  after(async () => {
    closeAllClients();
    await h?.close();
    process.stdout.write(`# fuzz outcomes: ws commands answered ${seen.wsAnswered}, ws close codes ${JSON.stringify([...seen.wsClosed])}, http statuses ${JSON.stringify([...seen.httpStatus])}, HTTP-parser refusals ${parserLevelAnswers}\n`);
  });

  test('token extraction: bearer() and the token cookie never throw and return bounded, trimmed values', () => {
    const config = buildConfig({ mode: 'production', auth: { hmacSecret: 'x'.repeat(32), cookieName: COOKIE }, cors: { origins: [ORIGIN] } }, { env: {} });
    const edge = new Edge(config);
    const headerish = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.string({ unit: 'binary', maxLength: 100 }),
      fc.tuple(fc.constantFrom('Bearer ', 'Bearer', 'bearer ', 'Bearer  ', 'Basic ', ''), fc.string({ maxLength: 100 })).map(([a, b]) => a + b),
    );
    fc.assert(
      fc.property(headerish, (header) => {
        const token = bearer(header);
        if (token === undefined) return;
        assert.ok(header.startsWith('Bearer '));
        assert.equal(token, token.trim());
        assert.ok(token.length <= header.length - 7);
      }),
      budget(3000, 1500),
    );
    assert.equal(bearer(undefined), undefined);

    const cookieish = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.tuple(fc.array(fc.tuple(fc.constantFrom(COOKIE, 'a', ' herald_token', 'HERALD_TOKEN', ''), fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('%', '%E0%A4%A', '%ZZ', '"x', '=;', 'x'.repeat(9000)))), { maxLength: 6 }), fc.constantFrom('; ', ';', ',', ' ; '))
        .map(([pairs, sep]) => pairs.map(([k, v]) => `${k}=${v}`).join(sep)),
    );
    fc.assert(
      fc.property(cookieish, (cookie) => {
        const token = edge.cookieToken({ headers: { cookie } } as unknown as IncomingMessage);
        if (token === undefined) return;
        assert.equal(typeof token, 'string');
        assert.ok(token.length > 0 && token.length <= 8192);
      }),
      budget(3000, 1500),
    );
  });

  test('origin and X-Forwarded-For decoding never throw', () => {
    const config = buildConfig(
      { mode: 'production', auth: { hmacSecret: 'x'.repeat(32) }, cors: { origins: [ORIGIN] }, http: { trustedProxies: ['127.0.0.1'] } },
      { env: {} },
    );
    const edge = new Edge(config);
    const originish = fc.oneof(fc.string({ maxLength: 100 }), mutated(fc.constant(ORIGIN)), fc.constantFrom('null', 'https://app.example.', 'https://APP.example', 'https://app.example:443'));
    fc.assert(
      fc.property(originish, fc.option(fc.string({ maxLength: 60 }), { nil: undefined }), (origin, host) => {
        const verdict = edge.origins.check(origin, host);
        assert.ok(verdict === 'allowed' || verdict === 'refused');
        if (verdict === 'allowed' && origin !== ORIGIN) assert.ok(host !== undefined, `${origin} allowed without a Host`);
      }),
      budget(3000, 1500),
    );
    const xff = fc.oneof(fc.string({ maxLength: 200 }), fc.array(fc.oneof(fc.ipV4(), fc.ipV6(), fc.string({ maxLength: 20 })), { maxLength: 20 }).map((a) => a.join(', ')));
    fc.assert(
      fc.property(xff, fc.constantFrom('127.0.0.1', '10.0.0.1', '::1'), (forwarded, peer) => {
        const fake = { headers: { 'x-forwarded-for': forwarded }, socket: { remoteAddress: peer }, connection: { remoteAddress: peer } };
        const ip = edge.address.ip(fake as unknown as IncomingMessage);
        assert.equal(typeof ip, 'string');
        if (peer !== '127.0.0.1') assert.equal(ip, peer, 'X-Forwarded-For is believed only from a trusted proxy');
      }),
      budget(3000, 1500),
    );
  });

  test('WebSocket: fuzzed commands, fragmented and written in 1–32 byte chunks', async () => {
    const probeId = 2147483001;
    await fc.assert(
      fc.asyncProperty(commandText, fc.integer({ min: 1, max: 12 }), fc.boolean(), fc.integer(), async (text, fragments, connectFirst, seed) => {
        const socket: RawWebSocket = await openRaw(h.server.port);
        try {
          if (connectFirst) await socket.call('connect', {});
          const random = seededRandom(seed);
          const data = Buffer.from(text, 'utf8');
          const frames = data.length === 0 ? [frame({ opcode: Opcode.text })] : fragmented(data, Math.min(fragments, data.length));
          await writeChunks(socket, Buffer.concat([...frames, frame({ opcode: Opcode.text, payload: `{"id":${probeId},"method":"ping"}` })]), random);
          // bounded wait for the probe's reply or a close
          for (let i = 0; i < 3000; i++) {
            if (socket.parser.messages().some((m) => m['id'] === probeId) || socket.parser.closeCode() !== undefined || socket.closed) break;
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
          const code = socket.parser.closeCode();
          const answered = socket.parser.messages().some((m) => m['id'] === probeId);
          assert.ok(code !== undefined || answered, `no answer and no close for ${JSON.stringify(text.slice(0, 120))}`);
          // what the server decodes: the UTF-8 bytes (a lone surrogate became U+FFFD)
          const expected = decodeCommand(data.toString('utf8'), MAX_MESSAGE);
          const violation = !expected.ok && (expected.error === 'malformed' || expected.error === 'too_large');
          if (code === undefined) seen.wsAnswered++;
          if (code !== undefined) {
            count(seen.wsClosed, code);
            assert.notEqual(code, internalDisconnect, 'internal error');
            assert.ok(code === 1009 || registeredDisconnects.has(code), `undocumented close ${code}`);
          }
          if (violation) {
            // too large: ws refuses the bytes before Herald decodes them (1009); anything else malformed is 3501
            const wanted = expected.error === 'too_large' ? 1009 : 3501;
            assert.equal(code, wanted, `a ${expected.error} command must close with ${wanted}, got ${code} for ${JSON.stringify(text.slice(0, 120))}`);
          } else {
            assert.ok(code !== 3501 && code !== 3505 && code !== 1009, `a decodable command closed the socket with ${code}: ${JSON.stringify(text.slice(0, 120))}`);
            if (code === undefined && expected.ok && expected.command.id !== undefined) {
              const id = expected.command.id;
              assert.ok(socket.parser.messages().some((m) => m['id'] === id), `no reply to command ${id}`);
            }
          }
        } finally {
          socket.destroy();
        }
      }),
      budget(150, 5000),
    );
  });

  test('WebSocket: arbitrary bytes after the upgrade', async () => {
    const prefix = fc.constantFrom(
      Buffer.alloc(0),
      frame({ opcode: Opcode.text, payload: '{"id":1,', fin: false }),
      Buffer.from([0x81, 0xfe]),
      Buffer.from([0x81, 0xff, 0xff, 0xff]),
    );
    await fc.assert(
      fc.asyncProperty(prefix, fc.uint8Array({ maxLength: 300 }), fc.integer(), async (head, bytes, seed) => {
        const socket = await openRaw(h.server.port);
        try {
          await writeChunks(socket, Buffer.concat([head, bytes]), seededRandom(seed));
          socket.socket.end();
          for (let i = 0; i < 3000 && !socket.closed; i++) await new Promise((resolve) => setTimeout(resolve, 5));
          assert.ok(socket.closed, 'the server closes once the peer is done');
          const code = socket.parser.closeCode();
          if (code !== undefined) {
            count(seen.wsClosed, code);
            assert.ok([1002, 1007, 1008, 1009].includes(code) || (registeredDisconnects.has(code) && code !== internalDisconnect), `close ${code}`);
          }
        } finally {
          socket.destroy();
        }
      }),
      budget(80, 2500),
    );
  });

  test('SSE: fuzzed Last-Event-ID, query, Authorization and cookie, written in 1–32 byte chunks', async () => {
    const token = await h.token('fuzzer');
    const auth = fc.oneof(
      { weight: 4, arbitrary: fc.constant<{ kind: 'none' }>({ kind: 'none' }) },
      { weight: 1, arbitrary: fc.constant({ kind: 'valid' as const }) },
      { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 80 }), mutated(fc.constant(`Bearer ${token}`))).map((value) => ({ kind: 'authorization' as const, value })) },
      { weight: 1, arbitrary: fc.tuple(fc.oneof(fc.string({ maxLength: 80 }), mutated(fc.constant(`${COOKIE}=${token}`))), fc.boolean()).map(([value, origin]) => ({ kind: 'cookie' as const, value, origin })) },
    );
    const place = fc.constantFrom('header', 'query', 'raw-query');
    const allowed = new Set([200, 400, 401, 403, 404, 413, 431]);
    await fc.assert(
      fc.asyncProperty(vectorish, place, auth, fc.boolean(), fc.integer(), async (vector, where, credentials, withChannel, seed) => {
        const query: string[] = [];
        if (withChannel) query.push('channel=public:fuzz');
        if (where === 'query') query.push('last_event_id=' + percentEncode(vector));
        // unencoded, as far as a request line allows: only "%" sequences left to break
        if (where === 'raw-query') query.push('last_event_id=' + [...vector].map((ch) => (/^[!-~]$/.test(ch) && ch !== '#' ? ch : '%')).join(''));
        const lines: (string | Buffer)[] = [`GET /connection/sse${query.length > 0 ? '?' + query.join('&') : ''} HTTP/1.1`, `Host: 127.0.0.1:${h.server.port}`, 'Accept: text/event-stream'];
        if (where === 'header') lines.push(Buffer.concat([Buffer.from('Last-Event-ID: '), Buffer.from(vector, 'utf8')]));
        if (credentials.kind === 'valid') lines.push(`Authorization: Bearer ${token}`);
        if (credentials.kind === 'authorization') lines.push(Buffer.concat([Buffer.from('Authorization: '), Buffer.from(credentials.value, 'utf8')]));
        if (credentials.kind === 'cookie') {
          lines.push(Buffer.concat([Buffer.from('Cookie: '), Buffer.from(credentials.value, 'utf8')]));
          if (credentials.origin) lines.push(`Origin: ${ORIGIN}`);
        }
        lines.push('Connection: close');
        const exchange = await RawHttp.connect(h.server.port);
        try {
          await exchange.write(request(lines), seededRandom(seed));
          const positions = decodePositions(vector);
          // the oracle's case: credentials fine, a vector that decodes, of channels the connection may join
          const clean =
            (credentials.kind === 'none' || credentials.kind === 'valid') &&
            where !== 'raw-query' &&
            positions !== null &&
            [...positions.keys()].every((c) => c.startsWith('public:')) &&
            !/[\r\n]/.test(vector);
          const wanted = clean ? positions!.size + (withChannel && !positions!.has('public:fuzz') ? 1 : 0) : 0;
          await exchange.until(
            (x) =>
              x.status !== undefined &&
              (x.status !== 200 ? x.complete : sseFrames(x.body).filter((f) => f['push'] === 'subscribed').length >= wanted && x.body.includes('"push":"connected"')),
            'an answer',
          );
          count(seen.httpStatus, exchange.status!);
          if (exchange.status !== 200) {
            assertDocumentedError(exchange, allowed, `SSE ${JSON.stringify(vector.slice(0, 80))}`);
            assert.ok(!clean || where !== 'header' || /[^\x20-\x7e]/.test(vector), `a valid vector was refused with ${exchange.status}: ${exchange.text.slice(0, 200)}`);
            return;
          }
          if (clean) {
            const subscribed = sseFrames(exchange.body).filter((f) => f['push'] === 'subscribed');
            for (const [channel] of positions!) {
              const push = subscribed.find((f) => f['channel'] === channel);
              assert.ok(push !== undefined, `${channel} from the vector was not resubscribed`);
              assert.equal(push['was_recovering'], true);
            }
          }
        } finally {
          exchange.destroy();
        }
      }),
      budget(80, 4000),
    );
  });

  test('long polling: fuzzed open bodies and cursors, written in 1–32 byte chunks', async () => {
    const body = fc.oneof(
      { weight: 4, arbitrary: fc.tuple(vectorish, fc.boolean()).map(([cursor, channels]) => ({ cursor, ...(channels ? { channels: ['public:fuzz'] } : {}) })).map((b) => JSON.stringify(b)) },
      { weight: 1, arbitrary: mutated(fc.constant('{"cursor":"public:a|abc|1","channels":["public:b"]}')) },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? '') },
      { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
    );
    const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', undefined);
    const allowed = new Set([200, 400, 401, 403, 404, 413, 415]);
    await fc.assert(
      fc.asyncProperty(body, contentType, fc.integer(), async (text, type, seed) => {
        const lines = ['POST /connection/poll/open HTTP/1.1', `Host: 127.0.0.1:${h.server.port}`, 'Connection: close'];
        if (type !== undefined) lines.push(`Content-Type: ${type}`);
        const exchange = await RawHttp.connect(h.server.port);
        try {
          await exchange.write(request(lines, text), seededRandom(seed));
          await exchange.until((x) => x.complete, 'an answer');
          count(seen.httpStatus, exchange.status ?? 0);
          if (exchange.status !== 200) {
            assertDocumentedError(exchange, allowed, `poll/open ${JSON.stringify(text.slice(0, 80))}`);
            return;
          }
          const answer = parseJsonSafely(exchange.body) as { session: string; messages: Record<string, unknown>[] };
          assert.equal(typeof answer.session, 'string');
          assert.equal(answer.messages[0]?.['push'], 'connected');
          const parsed = parseJsonSafely(text) as { cursor?: unknown } | undefined;
          const positions = parsed !== undefined && typeof parsed === 'object' && parsed !== null ? decodePositions(parsed.cursor) : null;
          if (positions !== null) {
            // (a 200 means every channel of the cursor was admitted)
            for (const [channel] of positions) {
              const push = answer.messages.find((m) => m['push'] === 'subscribed' && m['channel'] === channel);
              assert.ok(push !== undefined, `${channel} from the cursor was not resubscribed`);
              assert.equal(push['was_recovering'], true);
            }
          }
          await http(`${h.url}/connection/close`, { headers: { 'herald-session': answer.session }, body: {} });
        } finally {
          exchange.destroy();
        }
      }),
      budget(80, 3000),
    );
  });

  test('HTTP commands: fuzzed bodies for a live session, written in 1–32 byte chunks', async () => {
    let session = await LongPollSession.open(h.url, { token: await h.token('fuzzer') });
    const body = fc.oneof(
      { weight: 3, arbitrary: commandText.filter((t) => Buffer.byteLength(t) <= MAX_MESSAGE + 1) },
      { weight: 1, arbitrary: fc.array(commandObject.map((c) => JSON.stringify(c)), { maxLength: 5 }).map((list) => `[${list.join(',')}]`) },
      { weight: 1, arbitrary: fc.constantFrom(`[${'{"id":1,"method":"ping"},'.repeat(100)}{"id":1,"method":"ping"}]`, '[]', '{}', '') },
    );
    const allowed = new Set([200, 400, 404, 413, 415]);
    await fc.assert(
      fc.asyncProperty(body, fc.integer(), async (text, seed) => {
        const lines = ['POST /connection/command HTTP/1.1', `Host: 127.0.0.1:${h.server.port}`, 'Connection: close', 'Content-Type: application/json', `Herald-Session: ${session.session}`];
        const exchange = await RawHttp.connect(h.server.port);
        try {
          await exchange.write(request(lines, text), seededRandom(seed), Buffer.byteLength(text) > 4096 ? 4096 : 32);
          await exchange.until((x) => x.complete, 'an answer');
          const status = exchange.status;
          count(seen.httpStatus, status ?? 0);
          if (status === 200) {
            assert.ok(Array.isArray(parseJsonSafely(exchange.body)), `200 without a reply array: ${exchange.body.slice(0, 200)}`);
            const single = decodeCommand(text, MAX_MESSAGE);
            assert.ok(!(text.trimStart().startsWith('{') && !single.ok && single.error === 'malformed'), `a malformed command was answered 200: ${text.slice(0, 120)}`);
          } else {
            assertDocumentedError(exchange, allowed, `command ${JSON.stringify(text.slice(0, 80))}`);
          }
          if (status === 404) session = await LongPollSession.open(h.url, { token: await h.token('fuzzer') });
        } finally {
          exchange.destroy();
        }
      }),
      budget(100, 3000),
    );
    await session.close();
  });

  test('afterwards the server serves normal clients, and memory is back near its baseline', async (t) => {
    const channel = 'public:after-fuzz';
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel });
    const published = await h.api('publish', { channel, data: { ok: true } });
    assert.equal(published.status, 200);
    await c.waitPublications(channel, 1);
    const sse = await RawHttp.connect(h.server.port);
    await sse.write(request([`GET /connection/sse?channel=${channel} HTTP/1.1`, `Host: 127.0.0.1:${h.server.port}`]), () => 1, 4096);
    await sse.until((x) => x.body.includes('"push":"subscribed"'), 'an SSE subscription');
    sse.destroy();
    closeAllClients();
    // wait for the server to release what the fuzzing connections held
    for (let i = 0; i < 200 && h.server.node.hub.clientCount > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    const grown = retainedBytes() - baseline;
    t.diagnostic(`retained memory after fuzzing: ${(grown / MiB).toFixed(1)} MiB above the baseline`);
    assert.ok(grown < 48 * MiB, `retained memory grew by ${(grown / MiB).toFixed(1)} MiB over the fuzzing`);
  });
});

/** Writes to a raw WebSocket's TCP socket in 1–32 byte chunks, yielding between writes. */
async function writeChunks(socket: RawWebSocket, data: Buffer, random: () => number): Promise<void> {
  // big inputs in bigger chunks: the chunking matters at frame and UTF-8 boundaries, not 64 KiB × 16 writes
  const maxChunk = data.length > 8192 ? 2048 : 32;
  for (let at = 0; at < data.length && !socket.closed && !socket.socket.destroyed; ) {
    const size = 1 + Math.floor(random() * maxChunk);
    socket.socket.write(data.subarray(at, at + size));
    at += size;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
