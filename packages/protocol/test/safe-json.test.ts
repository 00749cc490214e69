/**
 * packages/protocol/src/safe-json.ts: the depth scan agrees with the depth of the
 * parsed value for any JSON text (strings with brackets, escapes, unicode),
 * and reading never throws.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { findPoisonedKey, jsonDepthExceeds, readJson } from '../src/safe-json.ts';

/** Depth of a parsed value, by recursion (test inputs are shallow). */
function depthOf(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  return 1 + children.reduce((max: number, child) => Math.max(max, depthOf(child)), 0);
}

describe('safe JSON', () => {
  it('the depth scan matches the parsed depth, for any JSON text', () => {
    const tricky = fc.string({ unit: fc.constantFrom('[', ']', '{', '}', '"', '\\', 'a', '\u2028', '😀') });
    const value = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, tricky, fc.integer(), fc.constant(null), fc.array(tie('node'), { maxLength: 3 }), fc.dictionary(tricky, tie('node'), { maxKeys: 3 })),
    })).node;
    fc.assert(
      fc.property(value, fc.integer({ min: 0, max: 12 }), fc.boolean(), (v, max, pretty) => {
        const text = JSON.stringify(v, null, pretty ? 2 : undefined);
        assert.equal(jsonDepthExceeds(text, max), depthOf(v) > max, text);
        const read = readJson(text, max);
        assert.equal(read.ok, depthOf(v) <= max);
        if (!read.ok) assert.equal(read.error, 'too_deep');
      }),
      { numRuns: 2000 },
    );
  });

  it('reading never throws, whatever the text', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('[', ']', '{', '}', '"', '\\', ':', ',', '1', 'a', ' ') }), (text) => {
        const read = readJson(text, 4);
        if (read.ok) assert.equal(depthOf(read.value) <= 4, true);
      }),
      { numRuns: 2000 },
    );
  });

  it('deep input is refused without recursion, at any depth', () => {
    for (const depth of [65, 10000, 1000000]) {
      assert.deepEqual(readJson('['.repeat(depth) + ']'.repeat(depth), 64), { ok: false, error: 'too_deep' });
    }
    assert.equal(readJson('[[1]]', 64).ok, true);
  });

  it('one guard: secure-json-parse rules by default, the stricter rules name the path', () => {
    assert.deepEqual(readJson('{"a":{"__proto__":{"x":1}}}', 64), { ok: false, error: 'poisoned' });
    assert.deepEqual(readJson('{"a":{"constructor":{"prototype":{"x":1}}}}', 64), { ok: false, error: 'poisoned' });
    assert.deepEqual(readJson('{"a":{"\\u005f_proto__":{"x":1}}}', 64), { ok: false, error: 'poisoned' });
    assert.deepEqual(readJson('{"a":', 64), { ok: false, error: 'invalid_json' });
    assert.equal(readJson('{"constructor":"x","prototype":1}', 64).ok, true, 'plain keys with those names are data');
    const deep = JSON.parse('{"a":'.repeat(5000) + '{"__proto__":1}' + '}'.repeat(5000)) as unknown;
    assert.notEqual(findPoisonedKey(deep), undefined, 'found at any depth');
    assert.equal(findPoisonedKey({ constructor: 'x' }), undefined);
    assert.equal(findPoisonedKey({ a: [{ constructor: 'x' }] }, { strict: true }), '/a/0/constructor');
    assert.equal(findPoisonedKey({ a: { prototype: 1 } }, { strict: true }), '/a/prototype');
    assert.equal(findPoisonedKey({ a: [1, { b: 2 }] }, { strict: true }), undefined);
  });
});
