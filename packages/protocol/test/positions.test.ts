/**
 * Position vectors (SSE Last-Event-ID, long-poll cursor), docs/protocol.md:
 *
 *   vector = entry *( " " entry )
 *   entry  = channel "|" epoch "|" offset
 *
 * At most 128 entries and 8 KiB; a malformed vector is ignored as a whole.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  decodePositions,
  encodePositionEntry,
  encodePositions,
  isValidEpoch,
  isValidOffset,
  MAX_VECTOR_ENTRIES,
  MAX_VECTOR_LENGTH,
  type StreamPosition,
} from '../src/positions.ts';

function entries(map: Map<string, StreamPosition> | null): [string, StreamPosition][] | null {
  return map === null ? null : [...map].map(([channel, p]) => [channel, { epoch: p.epoch, offset: p.offset }]);
}

function assertDecodes(text: string, expected: [string, StreamPosition][]): void {
  assert.deepEqual(entries(decodePositions(text)), expected, JSON.stringify(text.length > 80 ? text.slice(0, 80) + '…' : text));
}

function assertNull(text: unknown, maxChannelBytes?: number): void {
  const label = typeof text === 'string' && text.length > 80 ? text.slice(0, 80) + '…' : text;
  assert.equal(decodePositions(text, maxChannelBytes), null, `expected null for ${JSON.stringify(label)}`);
}

/** A valid vector of `count` distinct entries whose total length is exactly `length` (when reachable). */
function vectorOf(count: number, length: number): string {
  const list: string[] = [];
  for (let i = 0; i < count; i++) list.push(`c${i}|e|1`);
  let text = list.join(' ');
  const missing = length - text.length;
  assert.ok(missing >= 0, 'target length reachable');
  // Grow channel names (each at most 255 bytes) until the length is exact.
  let remaining = missing;
  for (let i = 0; i < count && remaining > 0; i++) {
    const grow = Math.min(remaining, 255 - `c${i}`.length);
    list[i] = `c${i}${'x'.repeat(grow)}|e|1`;
    remaining -= grow;
  }
  assert.equal(remaining, 0, 'target length reachable with 255-byte channels');
  text = list.join(' ');
  assert.equal(text.length, length);
  return text;
}

describe('valid vectors', () => {
  it('the example from the protocol document', () => {
    assertDecodes('chat:room-1|q3Yk2w8T|42 news|Z0aBc9xy|7', [
      ['chat:room-1', { epoch: 'q3Yk2w8T', offset: 42 }],
      ['news', { epoch: 'Z0aBc9xy', offset: 7 }],
    ]);
  });

  it('an empty string is an empty vector', () => {
    assertDecodes('', []);
  });

  it('offset 0 and MAX_SAFE_INTEGER are accepted', () => {
    assertDecodes('a|e|0', [['a', { epoch: 'e', offset: 0 }]]);
    assertDecodes(`a|e|${Number.MAX_SAFE_INTEGER}`, [['a', { epoch: 'e', offset: Number.MAX_SAFE_INTEGER }]]);
  });

  it('epochs of 1 and 32 characters from A-Z a-z 0-9 _ - are accepted', () => {
    assertDecodes('a|x|1', [['a', { epoch: 'x', offset: 1 }]]);
    const epoch = 'AZaz09_-'.repeat(4);
    assertDecodes(`a|${epoch}|1`, [['a', { epoch, offset: 1 }]]);
  });

  it('channels containing ":" and other name characters are kept whole', () => {
    assertDecodes('chat:room:1|e|5 a@b/c=d,e.f|e|6', [
      ['chat:room:1', { epoch: 'e', offset: 5 }],
      ['a@b/c=d,e.f', { epoch: 'e', offset: 6 }],
    ]);
  });

  it('exactly 128 entries are accepted', () => {
    const text = Array.from({ length: MAX_VECTOR_ENTRIES }, (_, i) => `c${i}|e|${i}`).join(' ');
    assert.equal(decodePositions(text)?.size, 128);
  });

  it('exactly 8 KiB is accepted', () => {
    assert.equal(MAX_VECTOR_LENGTH, 8192);
    const text = vectorOf(40, 8192);
    assert.equal(decodePositions(text)?.size, 40);
  });

  it('entries keep their order', () => {
    const text = 'z|e|1 a|e|2 m|e|3';
    assert.deepEqual([...(decodePositions(text)?.keys() ?? [])], ['z', 'a', 'm']);
  });
});

describe('malformed vectors are null as a whole', () => {
  const table: [string, string][] = [
    ['leading space', ' a|e|1'],
    ['trailing space', 'a|e|1 '],
    ['double space', 'a|e|1  b|e|2'],
    ['only a space', ' '],
    ['tab separator', 'a|e|1\tb|e|2'],
    ['newline separator', 'a|e|1\nb|e|2'],
    ['comma separator', 'a|e|1,b|e|2'],
    ['plus separator (form-encoded space)', 'a|e|1+b|e|2'],
    ['percent-encoded space', 'a|e|1%20b|e|2'],
    ['missing offset', 'a|e'],
    ['missing offset after separator', 'a|e|'],
    ['only the channel', 'a'],
    ['extra field', 'a|e|1|2'],
    ['doubled field separator', 'a||e|1'],
    ['trailing field separator', 'a|e|1|'],
    ['empty channel', '|e|1'],
    ['empty epoch', 'a||1'],
    ['epoch of 33 characters', `a|${'e'.repeat(33)}|1`],
    ['epoch with a dot', 'a|e.1|1'],
    ['epoch with a colon', 'a|e:1|1'],
    ['epoch with a plus (base64, not base64url)', 'a|ab+c|1'],
    ['epoch with a slash', 'a|ab/c|1'],
    ['epoch with padding', 'a|abc=|1'],
    ['epoch with non-ASCII', 'a|épo|1'],
    ['negative offset', 'a|e|-1'],
    ['offset with plus sign', 'a|e|+1'],
    ['fractional offset', 'a|e|1.5'],
    ['offset 1.0', 'a|e|1.0'],
    ['exponent offset', 'a|e|1e3'],
    ['hex offset', 'a|e|0x10'],
    ['offset with space inside', 'a|e|1 2'],
    ['Arabic-Indic digits', 'a|e|١٢'],
    ['fullwidth digits', 'a|e|１２'],
    ['offset MAX_SAFE_INTEGER + 1', `a|e|${Number.MAX_SAFE_INTEGER + 1}`],
    ['offset of 16 nines', `a|e|${'9'.repeat(16)}`],
    ['offset of 17 digits', `a|e|${'1'.repeat(17)}`],
    ['offset Infinity', 'a|e|Infinity'],
    ['duplicate channel', 'a|e|1 a|e|1'],
    ['duplicate channel, different positions', 'a|e|1 b|e|1 a|f|2'],
    ['channel with a bad namespace', 'Chat:x|e|1'],
    ['channel with an empty name', 'chat:|e|1'],
    ['channel with non-ASCII', 'chаt|e|1'],
    ['channel with NUL', 'a\u0000|e|1'],
    ['channel over 255 bytes', `${'x'.repeat(256)}|e|1`],
    ['one bad entry among good ones', 'a|e|1 b|e|x c|e|3'],
  ];
  for (const [name, text] of table) {
    it(name, () => assertNull(text));
  }

  it('more than 128 entries', () => {
    const list = Array.from({ length: MAX_VECTOR_ENTRIES + 1 }, (_, i) => `c${i}|e|1`);
    const text = list.join(' ');
    assert.ok(text.length <= MAX_VECTOR_LENGTH, 'fails on the entry count, not the length');
    assertNull(text);
  });

  it('far more than 128 entries', () => {
    assertNull(Array.from({ length: 1000 }, (_, i) => `c${i}|e|1`).join(' ').slice(0, 8000).replace(/ [^ ]*$/, ''));
  });

  it('more than 8 KiB', () => {
    assertNull(vectorOf(40, 8193));
    assertNull('a'.repeat(1_000_000));
  });

  it('channels longer than a custom maxChannelBytes', () => {
    assert.notEqual(decodePositions(`${'x'.repeat(16)}|e|1`, 16), null);
    assertNull(`${'x'.repeat(17)}|e|1`, 16);
  });

  it('non-strings', () => {
    for (const value of [undefined, null, 0, 1, true, [], ['a|e|1'], {}, new String('a|e|1')]) assertNull(value);
  });
});

describe('encoding', () => {
  it('encodes entries as channel|epoch|offset joined by single spaces', () => {
    assert.equal(encodePositionEntry('chat:room-1', 'q3Yk2w8T', 42), 'chat:room-1|q3Yk2w8T|42');
    assert.equal(
      encodePositions([
        ['chat:room-1', { epoch: 'q3Yk2w8T', offset: 42 }],
        ['news', { epoch: 'Z0aBc9xy', offset: 7 }],
      ]),
      'chat:room-1|q3Yk2w8T|42 news|Z0aBc9xy|7',
    );
    assert.equal(encodePositions([]), '');
    assert.equal(encodePositions(new Map([['a', { epoch: 'e', offset: 0 }]])), 'a|e|0');
  });

  it('isValidEpoch and isValidOffset', () => {
    assert.ok(isValidEpoch('q3Yk2w8T'));
    assert.ok(!isValidEpoch(''));
    assert.ok(!isValidEpoch('e'.repeat(33)));
    assert.ok(!isValidEpoch('a b'));
    assert.ok(!isValidEpoch(1));
    assert.ok(isValidOffset(0));
    assert.ok(isValidOffset(Number.MAX_SAFE_INTEGER));
    assert.ok(!isValidOffset(-1));
    assert.ok(!isValidOffset(1.5));
    assert.ok(!isValidOffset(Number.MAX_SAFE_INTEGER + 1));
    assert.ok(!isValidOffset('1'));
    assert.ok(!isValidOffset(Number.NaN));
  });
});

describe('properties', () => {
  const runs = { numRuns: 2000 };
  const chars = (set: string, min: number, max: number) =>
    fc.array(fc.constantFrom(...set), { minLength: min, maxLength: max }).map((a) => a.join(''));
  const namespace = chars('abcdefghijklmnopqrstuvwxyz0123456789_-', 1, 12);
  const name = chars('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:@/=,;', 1, 24);
  const channel = fc.oneof(
    fc.tuple(namespace, name).map(([ns, n]) => `${ns}:${n}`),
    name.filter((n) => !n.includes(':')),
  );
  const position = fc.record({
    epoch: chars('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-', 1, 32),
    offset: fc.oneof(fc.nat(1000), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
  });
  const vector = fc.uniqueArray(fc.tuple(channel, position), { selector: ([c]) => c, maxLength: 30 });

  it('encode then decode is the identity', () => {
    fc.assert(
      fc.property(vector, (list) => {
        const text = encodePositions(list);
        assert.ok(text.length <= MAX_VECTOR_LENGTH);
        assert.deepEqual(entries(decodePositions(text)), entries(new Map(list)));
        assert.equal(encodePositions(decodePositions(text)!), text, 'decode then encode is the identity too');
      }),
      runs,
    );
  });

  it('decoded vectors always satisfy the limits and the grammar', () => {
    const vectorish = fc
      .array(fc.oneof(fc.constantFrom('a', 'b', 'chat:', ':', '|', ' ', '0', '9', 'e', '-', '.', 'é', '\u0000', '99999999999999999'), channel), { maxLength: 40 })
      .map((parts) => parts.join(''));
    fc.assert(
      fc.property(vectorish, (text) => {
        const decoded = decodePositions(text);
        if (decoded === null) return;
        assert.ok(decoded.size <= MAX_VECTOR_ENTRIES);
        for (const [, p] of decoded) {
          assert.ok(isValidEpoch(p.epoch));
          assert.ok(isValidOffset(p.offset));
        }
        assert.deepEqual(entries(decodePositions(encodePositions(decoded))), entries(decoded), 're-encoding round-trips');
        const canonical = text
          .split(' ')
          .map((entry) => entry.replace(/\|([0-9]+)$/, (_, digits: string) => `|${Number(digits)}`))
          .join(' ');
        assert.equal(encodePositions(decoded), canonical, 'encoding gives back the text, up to leading zeros in offsets');
      }),
      runs,
    );
  });

  it('never throws on arbitrary strings or values', () => {
    const anyUnits = fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 300 }).map((u) => String.fromCharCode(...u));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), anyUnits, fc.anything()), fc.option(fc.integer({ min: 1, max: 1024 }), { nil: undefined }), (value, max) => {
        const decoded = decodePositions(value, max);
        assert.ok(decoded === null || decoded instanceof Map);
      }),
      runs,
    );
  });
});
