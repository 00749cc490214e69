/**
 * Server text frames built once per publication (RFC 6455 §5.2): the three
 * length encodings, checked byte by byte and by the `ws` library's own
 * receiver over a real socket.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { encodeServerTextFrame, encodeServerTextFrameOf, encodeServerTextFrames } from '../../src/util/websocket-frame.ts';

describe('encodeServerTextFrame', () => {
  it('uses 7-bit, 16-bit and 64-bit lengths at the RFC boundaries', () => {
    for (const [length, header] of [
      [0, [0x81, 0]],
      [125, [0x81, 125]],
      [126, [0x81, 126, 0, 126]],
      [65535, [0x81, 126, 0xff, 0xff]],
      [65536, [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]],
    ] as const) {
      const payload = Buffer.alloc(length, 0x61);
      const frame = encodeServerTextFrame(payload);
      assert.deepEqual([...frame.subarray(0, header.length)], [...header], `length ${length}`);
      assert.equal(frame.length, header.length + length);
      assert.ok(frame.subarray(header.length).equals(payload));
    }
  });

  it('encodes a string into the same bytes as its UTF-8 buffer, multi-byte characters included', () => {
    for (const length of [0, 1, 62, 63, 64, 125, 126, 40000, 65535, 65536, 70000]) {
      const text = 'é'.repeat(Math.floor(length / 2)) + 'x'.repeat(length % 2) + '€😀';
      assert.ok(encodeServerTextFrameOf(text).equals(encodeServerTextFrame(Buffer.from(text, 'utf8'))), `length ${length}`);
    }
  });

  it('frames several messages into one buffer: the concatenation of each one framed alone, in order', () => {
    const texts = ['', '{"id":1,"result":{}}', 'é'.repeat(70), 'x'.repeat(126), '€'.repeat(30000), 'y'.repeat(70000)];
    const framed = encodeServerTextFrame(Buffer.from('{"push":"publication"}'));
    const parts = [texts[0]!, texts[1]!, framed, texts[2]!, texts[3]!, framed, texts[4]!, texts[5]!];
    const expected = Buffer.concat(parts.map((part) => (typeof part === 'string' ? encodeServerTextFrameOf(part) : part)));
    assert.ok(encodeServerTextFrames(parts).equals(expected));
    // With a prefix (the 101 answer), the prefix's bytes come first, unframed; with none, just the frames.
    const head = 'HTTP/1.1 101 Switching Protocols\r\n\r\n';
    assert.ok(encodeServerTextFrames(parts, head).equals(Buffer.concat([Buffer.from(head, 'latin1'), expected])));
    assert.ok(encodeServerTextFrames([], head).equals(Buffer.from(head, 'latin1')));
  });

  it('is read back by a real ws client, whatever the size', async () => {
    const sizes = [0, 1, 125, 126, 127, 1000, 65535, 65536, 200000];
    const server = createServer((socket) => {
      socket.once('data', (request) => {
        const key = /Sec-WebSocket-Key: (.*)\r\n/i.exec(request.toString())![1]!;
        const accept = acceptFor(key);
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
        for (const size of sizes) socket.write(encodeServerTextFrame(Buffer.from('é'.repeat(Math.floor(size / 2)) + 'x'.repeat(size % 2))));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    const received: number[] = [];
    await new Promise<void>((resolve, reject) => {
      client.on('message', (data: Buffer, isBinary: boolean) => {
        assert.equal(isBinary, false);
        received.push(data.length);
        if (received.length === sizes.length) resolve();
      });
      client.on('error', reject);
    });
    assert.deepEqual(received, sizes);
    client.terminate();
    server.close();
  });
});

function acceptFor(key: string): string {
  // RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
  const { createHash } = process.getBuiltinModule('node:crypto');
  return createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
}
