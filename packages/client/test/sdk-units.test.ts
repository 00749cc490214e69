/**
 * SDK unit tests: backoff (full jitter bounds, cap), what the client does
 * after each code, position bookkeeping (dedupe, gap, recovered: false),
 * the SSE parser and endpoint URLs. Pure functions; no server.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { backoffCeiling, backoffDelay } from '../src/backoff.ts';
import { closeAction, isTemporaryReplyError, openFailure, sdkCodes } from '../src/codes.ts';
import { PositionTracker } from '../src/position-tracker.ts';
import { SseParser } from '../src/sse-parser.ts';
import { endpointsFor } from '../src/client.ts';
import { disconnects } from '@herald/protocol';

describe('backoff: exponential with full jitter', () => {
  const options = { baseDelayMs: 500, maxDelayMs: 20000 };

  test('the ceiling doubles per attempt and stops at the cap', () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 7, 40, 1e9].map((a) => backoffCeiling(a, options)),
      [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000, 20000],
    );
  });

  test('random 0 gives 0 and random just below 1 gives just below the ceiling (full jitter spans [0, ceiling))', () => {
    for (const attempt of [0, 3, 10]) {
      assert.equal(backoffDelay(attempt, options, () => 0), 0);
      const top = backoffDelay(attempt, options, () => 0.999999);
      assert.ok(top < backoffCeiling(attempt, options) && top >= backoffCeiling(attempt, options) - 1, `attempt ${attempt}: ${top}`);
    }
  });

  test('every delay is an integer in [0, min(cap, base·2^attempt)) for any attempt and random value', () => {
    fc.assert(
      fc.property(fc.integer({ min: -5, max: 200 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 1, max: 120000 }), (attempt, r, base, max) => {
        const opts = { baseDelayMs: base, maxDelayMs: max };
        const delay = backoffDelay(attempt, opts, () => r);
        const ceiling = Math.min(max, base * 2 ** Math.max(0, Math.min(attempt, 30)));
        return Number.isInteger(delay) && delay >= 0 && delay < Math.max(ceiling, 1) && delay <= max;
      }),
    );
  });

  test('with Math.random the delays spread over the whole range', () => {
    const delays = Array.from({ length: 2000 }, () => backoffDelay(2, options));
    assert.ok(Math.min(...delays) < 200, 'some delays are short');
    assert.ok(Math.max(...delays) > 1800, 'some delays are near the ceiling of 2000');
    assert.ok(delays.every((d) => d >= 0 && d < 2000));
  });
});

describe('code handling: what the client does after a code', () => {
  test('3000–3499 reconnect, 3003 refreshes the token first', () => {
    for (const code of [3001, 3002, 3004, 3005, 3006, 3007, 3008, 3009, 3010, 3499]) assert.equal(closeAction(code), 'reconnect', String(code));
    assert.equal(closeAction(disconnects.token_expired.code), 'refresh-token');
  });

  test('3500–3999 are terminal (invalid token, force disconnect, …): never reconnect', () => {
    for (const code of [3500, 3501, 3502, 3503, 3504, 3505, 3506, 3999]) assert.equal(closeAction(code), 'stop', String(code));
    assert.equal(closeAction(disconnects.invalid_token.code), 'stop');
  });

  test('application codes: 4000–4499 reconnect, 4500–4999 stop', () => {
    assert.equal(closeAction(4000), 'reconnect');
    assert.equal(closeAction(4499), 'reconnect');
    assert.equal(closeAction(4500), 'stop');
    assert.equal(closeAction(4999), 'stop');
  });

  test('WebSocket closes: 1006 and 1001 reconnect; protocol and size violations (1002, 1007, 1009) stop', () => {
    assert.equal(closeAction(1006), 'reconnect');
    assert.equal(closeAction(1001), 'reconnect');
    assert.equal(closeAction(1000), 'reconnect');
    for (const code of [1002, 1003, 1007, 1008, 1009]) assert.equal(closeAction(code), 'stop', String(code));
  });

  test("the SDK's own codes (transport closed, no ping) reconnect", () => {
    assert.equal(closeAction(sdkCodes.transport_closed.code), 'reconnect');
    assert.equal(closeAction(sdkCodes.no_ping.code), 'reconnect');
  });

  test('SDK codes stay below 100, apart from reply errors (100–199) and close codes (≥ 1000)', () => {
    const codes = Object.values(sdkCodes).map((entry) => entry.code);
    assert.equal(new Set(codes).size, codes.length, 'unique');
    assert.ok(codes.every((code) => code >= 0 && code < 100));
  });

  test('temporary subscribe failures are retried: internal, token expired, rate limited, timeouts', () => {
    for (const code of [100, 109, 111, sdkCodes.timeout.code, sdkCodes.disconnected.code]) assert.ok(isTemporaryReplyError(code), String(code));
    for (const code of [101, 102, 103, 106, 107, 108, 112, 113]) assert.ok(!isTemporaryReplyError(code), String(code));
  });

  test('HTTP open failures map to the disconnect code with the same meaning', () => {
    assert.deepEqual(openFailure(401, 'unauthorized', false), { code: 3500, reason: 'invalid token', channelsRefused: false });
    assert.deepEqual(openFailure(401, 'token_expired', true), { code: 3003, reason: 'token expired', channelsRefused: false });
    assert.equal(openFailure(403, 'forbidden', false).code, 3504);
    assert.equal(openFailure(403, 'anonymous_not_allowed', false).code, 3504, 'an anonymous connection where no namespace allows one');
    assert.equal(openFailure(403, 'anonymous_not_allowed', true).channelsRefused, true);
    assert.equal(openFailure(403, 'subscription_token_required', true).channelsRefused, true);
    // With channels requested, a 403/400 may be about one channel: open again without them.
    assert.equal(openFailure(403, 'forbidden', true).channelsRefused, true);
    assert.equal(openFailure(400, 'unknown_namespace', true).channelsRefused, true);
    // Not Herald's answer, or a transient one: the transport failed, try the next.
    for (const [status, code] of [[404, 'not_found'], [404, undefined], [502, undefined], [503, 'unavailable'], [429, 'too_many_requests']] as const) {
      const failure = openFailure(status, code, false);
      assert.equal(failure.code, sdkCodes.transport_closed.code, `${status}`);
      assert.equal(closeAction(failure.code), 'reconnect');
    }
  });
});

describe('position bookkeeping', () => {
  test('a fresh subscription takes the stream position; the next offsets are delivered, repeats dropped', () => {
    const tracker = new PositionTracker();
    assert.equal(tracker.position, undefined);
    assert.deepEqual(tracker.recoverParams(), {});
    tracker.onSubscribed({ recoverable: true, epoch: 'e1', offset: 5, recovered: false });
    assert.deepEqual(tracker.position, { epoch: 'e1', offset: 5 });
    assert.equal(tracker.onPublication(5), 'duplicate');
    assert.equal(tracker.onPublication(6), 'deliver');
    assert.equal(tracker.onPublication(7), 'deliver');
    assert.equal(tracker.onPublication(6), 'duplicate');
    assert.equal(tracker.onPublication(7), 'duplicate');
    assert.deepEqual(tracker.position, { epoch: 'e1', offset: 7 });
    assert.deepEqual(tracker.recoverParams(), { recover: true, epoch: 'e1', offset: 7 });
  });

  test('a gap is reported, not delivered, and does not move the position', () => {
    const tracker = new PositionTracker();
    tracker.onSubscribed({ recoverable: true, epoch: 'e1', offset: 0, recovered: false });
    assert.equal(tracker.onPublication(1), 'deliver');
    assert.equal(tracker.onPublication(3), 'gap');
    assert.deepEqual(tracker.position, { epoch: 'e1', offset: 1 });
    assert.equal(tracker.onPublication(2), 'deliver');
    assert.equal(tracker.onPublication(3), 'deliver');
  });

  test('recovered: true keeps our offset, so the replayed publications are delivered after it', () => {
    const tracker = new PositionTracker();
    tracker.onSubscribed({ recoverable: true, epoch: 'e1', offset: 0, recovered: false });
    tracker.onPublication(1);
    tracker.onPublication(2);
    // reconnect: the stream is at 5 now, the server replays 3, 4, 5
    tracker.onSubscribed({ recoverable: true, epoch: 'e1', offset: 5, recovered: true });
    assert.deepEqual(tracker.position, { epoch: 'e1', offset: 2 });
    assert.deepEqual([2, 3, 4, 5, 5, 6].map((o) => tracker.onPublication(o)), ['duplicate', 'deliver', 'deliver', 'deliver', 'duplicate', 'deliver']);
  });

  test('recovered: false (new epoch, or history trimmed) jumps to the stream position', () => {
    const tracker = new PositionTracker();
    tracker.onSubscribed({ recoverable: true, epoch: 'e1', offset: 0, recovered: false });
    tracker.onPublication(1);
    tracker.onSubscribed({ recoverable: true, epoch: 'e2', offset: 3, recovered: false });
    assert.deepEqual(tracker.position, { epoch: 'e2', offset: 3 });
    assert.equal(tracker.onPublication(3), 'duplicate');
    assert.equal(tracker.onPublication(4), 'deliver');
  });

  test('conflation: a publication that names the last delivered offset as prev follows it; any other skip is a gap', () => {
    const tracker = new PositionTracker();
    tracker.onSubscribed({ recoverable: true, epoch: 'e1', offset: 4, recovered: false });
    assert.equal(tracker.onPublication(9, 4), 'deliver');
    assert.deepEqual(tracker.position, { epoch: 'e1', offset: 9 });
    assert.equal(tracker.onPublication(10), 'deliver', 'the next offset needs no prev');
    assert.equal(tracker.onPublication(15, 12), 'gap', 'prev must be the offset delivered last');
    assert.equal(tracker.onPublication(15), 'gap');
    assert.deepEqual(tracker.position, { epoch: 'e1', offset: 10 });
    assert.equal(tracker.onPublication(8, 4), 'duplicate');
    assert.equal(tracker.onPublication(15, 10), 'deliver');
  });

  test('a claimed recovery with another epoch is treated as not recovered', () => {
    const tracker = new PositionTracker({ epoch: 'old', offset: 9 });
    tracker.onSubscribed({ recoverable: true, epoch: 'new', offset: 2, recovered: true });
    assert.deepEqual(tracker.position, { epoch: 'new', offset: 2 });
  });

  test('a starting position (`since`) makes the first subscribe a recovery', () => {
    const tracker = new PositionTracker({ epoch: 'e1', offset: 40 });
    assert.deepEqual(tracker.recoverParams(), { recover: true, epoch: 'e1', offset: 40 });
  });

  test('channels without history have no position: everything is delivered', () => {
    const tracker = new PositionTracker();
    tracker.onSubscribed({ recoverable: false, epoch: '', offset: 0, recovered: false });
    assert.equal(tracker.position, undefined);
    assert.deepEqual(tracker.recoverParams(), {});
    assert.deepEqual([0, 0, 0].map((o) => tracker.onPublication(o)), ['deliver', 'deliver', 'deliver']);
  });

  test('any sequence of offsets delivers a strictly increasing, contiguous run', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 200 }), (offsets) => {
        const tracker = new PositionTracker();
        tracker.onSubscribed({ recoverable: true, epoch: 'e', offset: 0, recovered: false });
        const delivered = offsets.filter((o) => tracker.onPublication(o) === 'deliver');
        return delivered.every((o, i) => o === i + 1);
      }),
    );
  });
});

describe('SSE parser', () => {
  test('events with data and id, comments and retry ignored', () => {
    const parser = new SseParser();
    const events = parser.push('retry: 1000\n\n: comment\ndata: {"a":1}\n\nid: x|e|1\ndata: {"b":2}\n\n');
    assert.deepEqual(events, [
      { data: '{"a":1}', id: undefined },
      { data: '{"b":2}', id: 'x|e|1' },
    ]);
  });

  test('chunks split anywhere, CRLF and CR line ends, multi-line data', () => {
    const text = 'data: one\r\ndata: two\r\n\r\nid: 7\rdata: three\r\rdata:four\n\n';
    const expected = [
      { data: 'one\ntwo', id: undefined },
      { data: 'three', id: '7' },
      { data: 'four', id: '7' },
    ];
    for (let size = 1; size <= text.length; size++) {
      const parser = new SseParser();
      const events = [];
      for (let i = 0; i < text.length; i += size) events.push(...parser.push(text.slice(i, i + size)));
      assert.deepEqual(events, expected, `chunk size ${size}`);
    }
  });

  test('an unterminated event is not dispatched', () => {
    const parser = new SseParser();
    assert.deepEqual(parser.push('data: partial\n'), []);
    assert.deepEqual(parser.push('\n'), [{ data: 'partial', id: undefined }]);
  });
});

describe('endpoints', () => {
  test('from an http base URL, with or without a path prefix', () => {
    assert.deepEqual(endpointsFor('http://127.0.0.1:8000'), {
      websocket: 'ws://127.0.0.1:8000/connection/websocket',
      sse: 'http://127.0.0.1:8000/connection/sse',
      pollOpen: 'http://127.0.0.1:8000/connection/poll/open',
      poll: 'http://127.0.0.1:8000/connection/poll',
      command: 'http://127.0.0.1:8000/connection/command',
      close: 'http://127.0.0.1:8000/connection/close',
    });
    const prefixed = endpointsFor('https://rt.example.com/herald/');
    assert.equal(prefixed.websocket, 'wss://rt.example.com/herald/connection/websocket');
    assert.equal(prefixed.sse, 'https://rt.example.com/herald/connection/sse');
    assert.equal(endpointsFor('http://h', 'ws://other/ws').websocket, 'ws://other/ws');
  });
});

describe('SDK dependencies', () => {
  test('the SDK imports only itself and @herald/protocol (its main entry: no command decoder, no JSON guard, no Node APIs, no other packages)', async () => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const dir = new URL('../src/', import.meta.url);
    const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
    assert.ok(files.length > 5);
    for (const file of files) {
      const text = readFileSync(new URL(file, dir), 'utf8');
      for (const match of text.matchAll(/^\s*(?:import|export)[^'"]*from\s+'([^']+)'/gm)) {
        const specifier = match[1]!;
        assert.ok(specifier.startsWith('./') || specifier === '@herald/protocol', `${file} imports ${specifier}`);
      }
      assert.doesNotMatch(text, /\bprocess\.|\brequire\(|import\(/, `${file} uses Node-only APIs`);
    }
    // What the protocol's main entry pulls in: only modules without dependencies.
    const protocol = new URL('../../protocol/src/', import.meta.url);
    const seen = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(new URL(file, protocol), 'utf8');
      for (const match of text.matchAll(/^\s*(?:import|export)[^'"]*from\s+'([^']+)'/gm)) {
        const specifier = match[1]!;
        assert.ok(specifier.startsWith('./'), `protocol ${file} (reached from its main entry) imports ${specifier}`);
        visit(specifier.slice(2));
      }
      assert.doesNotMatch(text, /\bprocess\.|\brequire\(|import\(/, `protocol ${file} uses Node-only APIs`);
    };
    visit('index.ts');
    assert.ok(!seen.has('command-decoder.ts') && !seen.has('safe-json.ts'), `the main entry reaches ${[...seen].join(', ')}`);
  });
});
