/**
 * The config file's JSON syntax errors (packages/server/src/config/json-syntax.ts): the
 * scanner agrees with JSON.parse on what is valid, on generated documents
 * and on the same documents with a character inserted or removed, and
 * points at the right line and column.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { findJsonSyntaxError } from '../../src/config/json-syntax.ts';

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

describe('findJsonSyntaxError', () => {
  it('agrees with JSON.parse on valid documents and on broken ones', () => {
    const documents = fc.jsonValue().map((value) => JSON.stringify(value, null, 2));
    const broken = fc.tuple(documents, fc.nat(), fc.constantFrom('', ',', '}', ']', '"', ':', 'x', ' ', '\n', '0', '-', '.', 'e', '\\', '\u0001'), fc.boolean()).map(
      ([text, at, insert, remove]) => {
        const i = text.length === 0 ? 0 : at % text.length;
        return text.slice(0, i) + insert + text.slice(remove ? i + 1 : i);
      },
    );
    fc.assert(
      fc.property(fc.oneof(documents, broken), (text) => {
        assert.equal(findJsonSyntaxError(text) === undefined, parses(text), JSON.stringify(text));
      }),
      { numRuns: 3000 },
    );
  });

  it('points at the line and column where the text goes wrong', () => {
    assert.deepEqual(findJsonSyntaxError('{\n  "a": 1\n  "b": 2\n}'), { line: 3, column: 3, expected: 'expected "," or "}"' });
    assert.deepEqual(findJsonSyntaxError('[1, 2,]'), { line: 1, column: 7, expected: 'a comma before "]" (trailing commas are not JSON)' });
    assert.equal(findJsonSyntaxError('{"a": tru}')?.column, 7);
    assert.equal(findJsonSyntaxError('{"a": 1} x')?.expected, 'unexpected text after the end of the JSON value');
    assert.equal(findJsonSyntaxError('')?.expected, 'expected a value, found the end of the file');
  });
});
