/**
 * EncodedBatch (docs/protocol.md, "Batched frames"): frames joined by "\n"
 * in one WebSocket text message or one SSE event with a `data:` line per
 * frame, each frame kept on one line, and every split giving back the
 * frames' values in order.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { EncodedBatch, oneLine } from '../../src/core/encoded-batch.ts';
import { EncodedFrame } from '../../src/core/encoded-frame.ts';

const frame = (value: unknown): EncodedFrame => new EncodedFrame(JSON.stringify(value));

/** Reads a server text frame's payload (the three RFC 6455 length encodings). */
function wsPayload(bytes: Buffer): string {
  assert.equal(bytes[0], 0x81, 'FIN and opcode text');
  const short = bytes[1]!;
  assert.equal(short & 0x80, 0, 'a server frame is not masked');
  const [length, offset] = short < 126 ? [short, 2] : short === 126 ? [bytes.readUInt16BE(2), 4] : [Number(bytes.readBigUInt64BE(2)), 10];
  assert.equal(bytes.length, offset + length, 'one whole frame');
  return bytes.subarray(offset).toString('utf8');
}

/** Reads one SSE event's data lines as an EventSource does (joined by "\n"). */
function sseData(text: string): string {
  assert.ok(text.endsWith('\n\n'), 'the event ends with a blank line');
  const lines = text.slice(0, -2).split('\n');
  for (const line of lines) assert.ok(line.startsWith('data: '), `only data lines: ${line}`);
  return lines.map((line) => line.slice(6)).join('\n');
}

describe('EncodedBatch', () => {
  const frames = [frame({ push: 'publication', channel: 'a', offset: 1, data: { é: 'ü' } }), frame({ push: 'ping' }), frame({ id: 3, result: {} })];

  it('joins the frames by "\\n" in one WebSocket text message', () => {
    const batch = new EncodedBatch(frames);
    const payload = wsPayload(batch.wsFrame);
    assert.equal(payload, frames.map((f) => f.text).join('\n'));
    assert.deepEqual(payload.split('\n').map((line) => JSON.parse(line)), frames.map((f) => JSON.parse(f.text)));
    assert.equal(batch.wsFrame, batch.wsFrame, 'built once');
  });

  it('writes one SSE event with a data line per frame', () => {
    const batch = new EncodedBatch(frames);
    assert.equal(sseData(batch.sseText), batch.text);
    assert.equal(batch.sseBytes.toString('utf8'), batch.sseText);
  });

  it('uses the 16-bit and 64-bit WebSocket lengths for large batches', () => {
    for (const size of [200, 70000]) {
      const big = [frame({ p: 'x'.repeat(size) }), frame({ p: 'y' })];
      const batch = new EncodedBatch(big);
      assert.equal(wsPayload(batch.wsFrame), big.map((f) => f.text).join('\n'));
    }
  });

  it('keeps each frame on one line: line breaks between JSON tokens become spaces', () => {
    const pretty = new EncodedFrame('{\n  "push": "publication",\r\n  "data": {"text": "a\\nb"}\r}');
    assert.equal(oneLine('{"a":1}'), '{"a":1}');
    const batch = new EncodedBatch([pretty, frame({ push: 'ping' })]);
    const lines = batch.text.split('\n');
    assert.equal(lines.length, 2);
    assert.deepEqual(JSON.parse(lines[0]!), JSON.parse(pretty.text));
    assert.ok(!sseData(batch.sseText).includes('\r'));
  });

  it('holds() compares the frames by identity and order', () => {
    const batch = new EncodedBatch(frames);
    assert.ok(batch.holds([...frames]));
    assert.ok(!batch.holds(frames.slice(0, 2)));
    assert.ok(!batch.holds([frames[1]!, frames[0]!, frames[2]!]));
    assert.ok(!batch.holds([frame(JSON.parse(frames[0]!.text)), frames[1]!, frames[2]!]), 'an equal frame is another frame');
  });

  it('any JSON values, any layout: splitting a batch gives the values back in order', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.jsonValue(), fc.boolean()), { minLength: 1, maxLength: 8 }), (values) => {
        const encoded = values.map(([value, pretty]) => new EncodedFrame(JSON.stringify(value, null, pretty ? 2 : undefined) ?? 'null'));
        const batch = new EncodedBatch(encoded);
        const expected = encoded.map((f) => JSON.parse(f.text) as unknown);
        assert.deepEqual(wsPayload(batch.wsFrame).split('\n').map((line) => JSON.parse(line) as unknown), expected);
        assert.deepEqual(sseData(batch.sseText).split('\n').map((line) => JSON.parse(line) as unknown), expected);
      }),
    );
  });
});
