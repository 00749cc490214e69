/**
 * Channel-name grammar (docs/protocol.md, "Channels"):
 *
 *   channel   = [ namespace ":" ] name
 *   namespace = 1*64 ( a-z / 0-9 / "_" / "-" )
 *   name      = 1*( A-Z / a-z / 0-9 / "_" / "-" / "." / ":" / "@" / "/" / "=" / "," / ";" )
 *
 * At most maxNameBytes (255) bytes; only the first ":" splits.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_MAX_CHANNEL_BYTES, isChannelNameError, parseChannel, type ChannelNameError } from '../src/channel-name.ts';

const errors: readonly ChannelNameError[] = ['empty', 'too_long', 'bad_character', 'bad_namespace'];
const nameChars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:@/=,;';
const namespaceChars = 'abcdefghijklmnopqrstuvwxyz0123456789_-';

function accepts(channel: string, namespace: string, name: string, maxBytes?: number): void {
  const parsed = parseChannel(channel, maxBytes);
  assert.ok(!isChannelNameError(parsed), `${JSON.stringify(channel)} should be accepted, got ${String(parsed)}`);
  assert.deepEqual({ ...parsed }, { channel, namespace, name });
}

function rejects(channel: unknown, maxBytes?: number, expected?: ChannelNameError): void {
  const parsed = parseChannel(channel, maxBytes);
  assert.ok(isChannelNameError(parsed), `${JSON.stringify(channel)} should be rejected, got ${JSON.stringify(parsed)}`);
  if (expected !== undefined) assert.equal(parsed, expected, `${JSON.stringify(channel)}`);
}

describe('accepted names', () => {
  const table: [string, string, string][] = [
    ['news', '', 'news'],
    ['a', '', 'a'],
    ['A', '', 'A'],
    ['0', '', '0'],
    ['chat:room-1', 'chat', 'room-1'],
    ['chat:room:1', 'chat', 'room:1'],
    ['chat::1', 'chat', ':1'],
    ['chat:1:', 'chat', '1:'],
    ['a:b:c:d', 'a', 'b:c:d'],
    ['user_1-x:Room.A@b/c=d,e', 'user_1-x', 'Room.A@b/c=d,e'],
    ['_:x', '_', 'x'],
    ['-:x', '-', 'x'],
    ['0:x', '0', 'x'],
    ['.', '', '.'],
    ['@', '', '@'],
    ['/', '', '/'],
    ['=', '', '='],
    [',', '', ','],
    ['-', '', '-'],
    ['_', '', '_'],
    ['personal:user@example.com', 'personal', 'user@example.com'],
    ['files:/a/b/c', 'files', '/a/b/c'],
    ['q:a=1,b=2', 'q', 'a=1,b=2'],
    [nameChars.replace(':', ''), '', nameChars.replace(':', '')],
    ['ns:' + nameChars, 'ns', nameChars],
    [namespaceChars + ':x', namespaceChars, 'x'],
    ['n'.repeat(64) + ':x', 'n'.repeat(64), 'x'],
    ['x'.repeat(255), '', 'x'.repeat(255)],
    ['ns:' + 'x'.repeat(252), 'ns', 'x'.repeat(252)],
  ];
  for (const [channel, namespace, name] of table) {
    it(`${JSON.stringify(channel.length > 40 ? channel.slice(0, 40) + '…' : channel)} → namespace ${JSON.stringify(namespace)}, name ${JSON.stringify(name.length > 20 ? name.slice(0, 20) + '…' : name)}`, () => {
      accepts(channel, namespace, name);
    });
  }

  it('the default limit is 255 bytes', () => {
    assert.equal(DEFAULT_MAX_CHANNEL_BYTES, 255);
  });
});

describe('rejected names', () => {
  const table: [string, unknown, ChannelNameError | undefined][] = [
    ['empty', '', 'empty'],
    ['not a string (number)', 42, undefined],
    ['not a string (null)', null, undefined],
    ['not a string (undefined)', undefined, undefined],
    ['not a string (array)', ['news'], undefined],
    ['not a string (object)', { toString: () => 'news' }, undefined],
    ['NUL', 'news\u0000', 'bad_character'],
    ['NUL alone', '\u0000', 'bad_character'],
    ['NUL in namespace', 'ch\u0000at:x', 'bad_character'],
    ['space', 'chat room', 'bad_character'],
    ['leading space', ' news', 'bad_character'],
    ['trailing space', 'news ', 'bad_character'],
    ['tab', 'news\t', 'bad_character'],
    ['newline at end', 'news\n', 'bad_character'],
    ['CRLF', 'news\r\nX-Injected: 1', 'bad_character'],
    ['DEL', 'news\u007f', 'bad_character'],
    ['pipe (vector separator)', 'a|b', 'bad_character'],
    ['percent-encoded colon', 'chat%3Aroom', 'bad_character'],
    ['percent-encoded space', 'chat:room%20one', 'bad_character'],
    ['question mark', 'news?x=1', 'bad_character'],
    ['hash', 'news#1', 'bad_character'],
    ['asterisk', 'news*', 'bad_character'],
    ['backslash', 'a\\b', 'bad_character'],
    ['quote', 'a"b', 'bad_character'],
    ['plus', 'a+b', 'bad_character'],
    ['tilde', 'a~b', 'bad_character'],
    ['angle brackets', '<script>', 'bad_character'],
    ['Cyrillic а look-alike', 'chаt:room', 'bad_character'],
    ['Cyrillic о in name', 'news:rоom', 'bad_character'],
    ['Greek ο look-alike', 'chat:rοom', 'bad_character'],
    ['fullwidth colon', 'chat：room', 'bad_character'],
    ['fullwidth letters', 'ｎｅｗｓ', 'bad_character'],
    ['ratio sign look-alike of colon', 'chat∶room', 'bad_character'],
    ['non-breaking space', 'chat\u00a0room', 'bad_character'],
    ['zero-width space', 'news\u200b', 'bad_character'],
    ['zero-width joiner', 'ne\u200dws', 'bad_character'],
    ['BOM', '\ufeffnews', 'bad_character'],
    ['right-to-left override', 'news\u202e', 'bad_character'],
    ['combining acute', 'ne\u0301ws', 'bad_character'],
    ['accented letter', 'café', 'bad_character'],
    ['emoji', 'chat:😀', 'bad_character'],
    ['lone surrogate', 'chat:\ud800', 'bad_character'],
    ['Turkish dotless i', 'chat:ıd', 'bad_character'],
    ['Kelvin sign (case-folds to k)', 'chat:\u212a', 'bad_character'],
    ['uppercase namespace', 'Chat:room', 'bad_namespace'],
    ['namespace with a dot', 'chat.v2:room', 'bad_namespace'],
    ['namespace with @', 'a@b:room', 'bad_namespace'],
    ['namespace with /', 'a/b:room', 'bad_namespace'],
    ['empty namespace', ':room', 'bad_namespace'],
    ['only a colon', ':', undefined],
    ['two colons', '::', undefined],
    ['namespace of 65 characters', 'n'.repeat(65) + ':x', 'bad_namespace'],
    ['empty name after the namespace', 'chat:', 'empty'],
    ['over-long by one byte', 'x'.repeat(256), 'too_long'],
    ['over-long by one byte with a namespace', 'ns:' + 'x'.repeat(253), 'too_long'],
    ['far over-long', 'x'.repeat(100000), 'too_long'],
  ];
  for (const [name, channel, expected] of table) {
    it(`${name}${expected ? ` → ${expected}` : ''}`, () => rejects(channel, undefined, expected));
  }

  it('over-long non-ASCII is rejected even when its UTF-16 length fits', () => {
    // 200 UTF-16 units, 400 bytes.
    rejects('é'.repeat(200));
    // 128 UTF-16 units, 256 bytes: one byte over.
    rejects('é'.repeat(128));
  });
});

describe('custom byte limit', () => {
  it('exactly maxBytes is accepted, one more is too_long', () => {
    for (const max of [16, 64, 255, 1024]) {
      accepts('x'.repeat(max), '', 'x'.repeat(max), max);
      rejects('x'.repeat(max + 1), max, 'too_long');
      accepts('ns:' + 'x'.repeat(max - 3), 'ns', 'x'.repeat(max - 3), max);
      rejects('ns:' + 'x'.repeat(max - 2), max, 'too_long');
    }
  });
});

describe('properties', () => {
  const runs = { numRuns: 2000 };
  const from = (chars: string, min: number, max: number) =>
    fc.array(fc.constantFrom(...chars), { minLength: min, maxLength: max }).map((a) => a.join(''));

  it('never throws on arbitrary strings and returns a parse or a known error', () => {
    const anyUnits = fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 300 }).map((u) => String.fromCharCode(...u));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary', maxLength: 300 }), anyUnits, from(nameChars + ' |%\u0000é', 0, 300)), fc.integer({ min: 1, max: 300 }), (text, max) => {
        const parsed = parseChannel(text, max);
        if (isChannelNameError(parsed)) {
          assert.ok(errors.includes(parsed));
          return;
        }
        assert.equal(parsed.channel, text);
        assert.ok(new TextEncoder().encode(text).length <= max, 'accepted names fit the byte limit');
        assert.match(text, /^[A-Za-z0-9_\-.:@/=,;]+$/);
        assert.equal(parsed.namespace === '' ? parsed.name : `${parsed.namespace}:${parsed.name}`, text);
      }),
      runs,
    );
  });

  it('never throws on arbitrary values', () => {
    fc.assert(
      fc.property(fc.anything(), (value) => {
        const parsed = parseChannel(value);
        if (typeof value !== 'string') assert.ok(isChannelNameError(parsed));
      }),
      runs,
    );
  });

  it('every grammatical name is accepted and split at the first colon', () => {
    fc.assert(
      fc.property(fc.option(from(namespaceChars, 1, 64), { nil: undefined }), from(nameChars, 1, 180), (namespace, name) => {
        const hasColon = name.includes(':');
        // Without a namespace, a name with ":" would be split by its first colon.
        fc.pre(namespace !== undefined || !hasColon);
        const channel = namespace === undefined ? name : `${namespace}:${name}`;
        accepts(channel, namespace ?? '', name);
      }),
      runs,
    );
  });
});
