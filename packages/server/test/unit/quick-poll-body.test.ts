/**
 * The long-poll route reads a body of the exact form `{"seq":N}` from its
 * bytes (transports/long-poll.ts `quickPollBody`) instead of the full JSON
 * reading: whatever it takes must be what JSON.parse gives, and everything
 * else must be left to the full reading (undefined).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quickPollBody } from '../../src/transports/long-poll.ts';

const taken = ['{"seq":0}', '{"seq":7}', '{"seq":10}', '{"seq":123456}', '{"seq":999999999999999}'];
const left = [
  '',
  '{}',
  '{"seq":}',
  '{"seq":-1}',
  '{"seq":01}',
  '{"seq":00}',
  '{"seq":1.5}',
  '{"seq":1e3}',
  '{"seq":1000000000000000}',
  '{"seq":9007199254740993}',
  '{ "seq":1}',
  '{"seq": 1}',
  '{"seq":1 }',
  '{"seq":1}\n',
  '{"seq":"1"}',
  '{"SEQ":1}',
  '{"seq":1,"x":2}',
  '{"seq":1}}',
  '{"seq":1]',
  '["seq",1]',
  '{"seq":１}',
  '{"se\\u0071":1}',
];

test('the exact compact form is read as JSON.parse reads it', () => {
  for (const text of taken) assert.deepEqual(quickPollBody(Buffer.from(text)), JSON.parse(text), text);
});

test('every other form is left to the full JSON reading', () => {
  for (const text of left) assert.equal(quickPollBody(Buffer.from(text)), undefined, text);
});

test('random bodies: either left alone or read as JSON.parse reads them', () => {
  const alphabet = '{}"seq:0123456789 -.,e';
  let seed = 13;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let read = 0;
  for (let i = 0; i < 20000; i++) {
    // Half of them start as the real prefix, so that the digit handling is exercised.
    let text = random(2) === 0 ? '{"seq":' : '';
    const length = random(12);
    for (let j = 0; j < length; j++) text += alphabet[random(alphabet.length)];
    if (random(2) === 0) text += '}';
    const quick = quickPollBody(Buffer.from(text));
    if (quick === undefined) continue;
    read++;
    assert.deepEqual(quick, JSON.parse(text), text);
  }
  assert.ok(read > 100, `only ${read} random bodies were in the exact form`);
});
