/** The conflation map and keys (core/conflation.ts); the behaviour over real sockets is in integration/conflation.test.ts. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodePublicationPush } from '@herald/protocol';
import fc from 'fast-check';
import { conflationKey, keyOfJson, latestValues, LatestByKey, withPrev } from '../../src/core/conflation.ts';
import { EncodedFrame } from '../../src/core/encoded-frame.ts';

const frame = (offset: number, data: unknown): EncodedFrame => new EncodedFrame(encodePublicationPush('px:a', offset, JSON.stringify(data), undefined));
const offsets = (list: readonly { offset: number }[]): number[] => list.map((p) => p.offset);

describe('LatestByKey', () => {
  it('keeps the newest publication per key, in offset order (a replaced key moves to the end)', () => {
    const map = new LatestByKey(8);
    map.put('a', { offset: 1, frame: frame(1, {}) });
    map.put('b', { offset: 2, frame: frame(2, {}) });
    map.put('a', { offset: 3, frame: frame(3, {}) });
    map.put('c', { offset: 4, frame: frame(4, {}) });
    map.put('b', { offset: 5, frame: frame(5, {}) });
    assert.equal(map.size, 3);
    assert.equal(map.top, 5);
    assert.equal(map.replaced, 2, 'two publications were replaced (never to be written)');
    assert.deepEqual(offsets(map.take()), [3, 4, 5]);
    assert.equal(map.size, 0);
  });

  it('holds at most maxKeys: a new key past it hands back the oldest pending publication', () => {
    const map = new LatestByKey(2);
    assert.equal(map.put('a', { offset: 1, frame: frame(1, {}) }), undefined);
    assert.equal(map.put('b', { offset: 2, frame: frame(2, {}) }), undefined);
    assert.equal(map.put('b', { offset: 3, frame: frame(3, {}) }), undefined, 'a replaced key does not count');
    assert.equal(map.put('c', { offset: 4, frame: frame(4, {}) })?.offset, 1);
    assert.equal(map.size, 2);
    assert.deepEqual(offsets(map.take()), [3, 4]);
  });

  it('stays bounded under many keys', () => {
    const map = new LatestByKey(16);
    let evicted = 0;
    for (let i = 1; i <= 10000; i++) if (map.put(`k${i % 1000}`, { offset: i, frame: frame(i, {}) }) !== undefined) evicted++;
    assert.equal(map.size, 16);
    assert.equal(evicted, 10000 - 16);
  });
});

describe('conflationKey', () => {
  it('is the JSON of the key field, so "1" and 1 differ; without a field, or data without it, the whole channel ("")', () => {
    assert.equal(conflationKey(frame(1, { sym: 'A' }), 'sym'), '"A"');
    assert.equal(conflationKey(frame(1, { sym: 1 }), 'sym'), '1');
    assert.equal(conflationKey(frame(1, { sym: '1' }), 'sym'), '"1"');
    assert.equal(conflationKey(frame(1, { sym: { x: 1 } }), 'sym'), '{"x":1}');
    assert.equal(conflationKey(frame(1, { other: 'A' }), 'sym'), '');
    assert.equal(conflationKey(frame(1, ['sym']), 'sym'), '');
    assert.equal(conflationKey(frame(1, 'sym'), 'sym'), '');
    assert.equal(conflationKey(frame(1, null), 'sym'), '');
    assert.equal(conflationKey(frame(1, { sym: 'A' }), undefined), '');
  });

  it('reads only own fields (no prototype keys)', () => {
    assert.equal(conflationKey(frame(1, {}), 'toString'), '');
    assert.equal(conflationKey(frame(1, {}), '__proto__'), '');
  });
});

describe('withPrev', () => {
  it('adds prev to a publication frame, which stays valid JSON', () => {
    const marked = withPrev(new EncodedFrame(encodePublicationPush('px:a', 9, '{"sym":"A"}', { client: 'c', user: 'u' })), 4);
    assert.deepEqual(JSON.parse(marked.text), { push: 'publication', channel: 'px:a', offset: 9, data: { sym: 'A' }, info: { client: 'c', user: 'u' }, prev: 4 });
  });
});

describe('latestValues', () => {
  const stored = (offset: number, data: unknown) => ({ offset, data: JSON.stringify(data), time: 0 });
  it('picks the newest publication of each key from history (newest first), oldest first, at most maxKeys', () => {
    const newestFirst = [stored(6, { sym: 'A' }), stored(5, { sym: 'B' }), stored(4, { sym: 'A' }), stored(3, { sym: 'C' }), stored(2, { sym: 'B' }), stored(1, {})];
    assert.deepEqual(offsets(latestValues(newestFirst, 'sym', 10)), [1, 3, 5, 6]);
    assert.deepEqual(offsets(latestValues(newestFirst, 'sym', 2)), [5, 6]);
    assert.deepEqual(offsets(latestValues(newestFirst, undefined, 10)), [6]);
    assert.deepEqual(latestValues([], 'sym', 10), []);
  });
});

describe('keyOfJson (the key scanner) against the data it was serialized from', () => {
  /**
   * What the key is by definition: the JSON of the field's value, or ''.
   * Taken from the value itself, not from JSON.parse of its text: V8's
   * JSON.parse (Node 24) can read an escaped key wrongly after parsing
   * another object with a similar one (nodejs/node#63785), which this
   * fuzzing meets. For the same reason the values checked hold no objects
   * with keys (the scanner normalizes a key value with JSON.parse).
   */
  const reference = (data: unknown, field: string): string => {
    if (typeof data !== 'object' || data === null || Array.isArray(data) || !Object.hasOwn(data, field)) return '';
    return JSON.stringify((data as Record<string, unknown>)[field]) ?? '';
  };
  const holdsObject = (value: unknown): boolean =>
    typeof value === 'object' && value !== null && (Array.isArray(value) ? value.some(holdsObject) : true);
  const tricky = fc.oneof(fc.constantFrom('"', '\\', '{', '}', '[', ']', ',', ':', '\\"', '"}', '\u2028', 'k'), fc.string());

  it('agrees on any JSON value, compact or indented, for fields present and absent', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string(), fc.boolean(), (value, field, indent) => {
        const json = JSON.stringify(value, null, indent ? 2 : undefined);
        const fields = typeof value === 'object' && value !== null && !Array.isArray(value) ? [field, ...Object.keys(value)] : [field];
        for (const name of fields) {
          const own = reference(value, name);
          if (own !== '' && holdsObject((value as Record<string, unknown>)[name])) continue;
          assert.equal(keyOfJson(json, name), own, `field ${JSON.stringify(name)} of ${json}`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('agrees on objects whose names and values hold quotes, escapes, braces and brackets', () => {
    const scalar = fc.oneof(tricky, fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null));
    fc.assert(
      fc.property(fc.dictionary(fc.oneof(tricky, fc.constant('k')), fc.oneof(scalar, fc.array(scalar))), (object) => {
        const json = JSON.stringify(object);
        for (const field of ['k', ...Object.keys(object)]) assert.equal(keyOfJson(json, field), reference(object, field), `field ${JSON.stringify(field)} of ${json}`);
      }),
      { numRuns: 2000 },
    );
  });

  it('normalizes the value: whitespace, number forms and escapes do not make another key', () => {
    assert.equal(keyOfJson('{ "k" : 1.0 , "x": 2 }', 'k'), '1');
    assert.equal(keyOfJson('{"k":"\\u0041"}', 'k'), '"A"');
    assert.equal(keyOfJson('{"\\u006b":"A"}', 'k'), '"A"', 'an escaped field name is the same name');
    assert.equal(keyOfJson('{"k": { "b": [1, 2] } }', 'k'), '{"b":[1,2]}');
    assert.equal(keyOfJson('  [1]', 'k'), '');
    assert.equal(keyOfJson('{}', 'k'), '');
  });

  it('in a publication frame reads only the data, whatever the channel name and info', () => {
    const text = encodePublicationPush('px:a,b:"c"', 3, '{"x":{"k":"inner"},"k":"outer"}', { client: 'c', user: 'k' });
    assert.equal(conflationKey(new EncodedFrame(text), 'k'), '"outer"');
  });
});
