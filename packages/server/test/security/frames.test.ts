/**
 * SECURITY-TESTS.md section B, items 9–11: hostile WebSocket framing, sent
 * byte by byte over a raw socket after a hand-made upgrade.
 *
 * - protocol violations (unmasked, RSV bits, unknown opcode, fragmented or
 *   oversize control frame, stray continuation, bad close payload) → 1002;
 *   invalid UTF-8 → 1007;
 * - an oversize message, as one frame, as a lying header, or as 1000
 *   fragments → 1009, nothing allocated for what was announced;
 * - endless empty or tiny fragments → 1008 at `limits.maxFragments`.
 *
 * After each, the server still serves a normal client. Memory is measured
 * in this process (the server runs here) after a forced GC, with generous
 * bounds: they catch "buffers what the peer announces or sends", not noise.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import type { RawWebSocket } from '../helpers/rt-raw.ts';
import { closeCodeOf, fragmented, frame, Opcode, openRaw, retainedBytes } from '../helpers/ws-frames.ts';

const MiB = 1024 * 1024;
const text = (payload: Buffer | string, extra: { fin?: boolean; rsv?: number; masked?: boolean } = {}) => frame({ opcode: Opcode.text, payload, ...extra });
const continuation = (payload: Buffer | string = Buffer.alloc(0), fin = false) => frame({ opcode: Opcode.continuation, payload, fin });
const connectCommand = (id = 1, name = 'frames') => JSON.stringify({ id, method: 'connect', params: { name } });

const opened = new Set<RawWebSocket>();
async function raw(h: TestHerald): Promise<RawWebSocket> {
  const socket = await openRaw(h.server.port);
  opened.add(socket);
  return socket;
}

/** Sends the frames and returns the close code the server answers with. */
async function closeCodeFor(h: TestHerald, frames: readonly Buffer[]): Promise<number | string> {
  const socket = await raw(h);
  socket.socket.write(Buffer.concat(frames));
  return closeCodeOf(socket);
}

/** The server answers a normal client: connect and get the reply. */
async function assertServes(h: TestHerald): Promise<void> {
  const socket = await raw(h);
  const result = await socket.call('connect', {});
  assert.equal(typeof result['client'], 'string');
  socket.destroy();
}

/** What became of a message carrying command `id`: its reply, or the close code. */
async function outcomeOf(socket: RawWebSocket, id: number): Promise<{ reply: Record<string, unknown> } | { close: number | string }> {
  for (let i = 0; i < 2000; i++) {
    const reply = socket.parser.messages().find((m) => m['id'] === id);
    if (reply !== undefined) return { reply };
    const code = socket.parser.closeCode();
    if (code !== undefined) return { close: code };
    if (socket.closed) return { close: 'no close frame' };
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return { close: 'neither reply nor close' };
}

/** Waits for the reply to command `id`, or fails with what happened instead. */
async function replyTo(socket: RawWebSocket, id: number): Promise<Record<string, unknown>> {
  for (let i = 0; i < 2000; i++) {
    const reply = socket.parser.messages().find((m) => m['id'] === id);
    if (reply !== undefined) return reply;
    if (socket.parser.closeCode() !== undefined || socket.closed) break;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`no reply to ${id}: close=${socket.parser.closeCode()} closed=${socket.closed}`);
}

describe('WebSocket frames (SECURITY-TESTS B 9-11)', { timeout: 120000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald();
  });
  afterEach(() => {
    for (const socket of opened) socket.destroy();
    opened.clear();
  });
  after(async () => {
    await h?.close();
  });

  describe('protocol violations → 1002', () => {
    const cases: [string, Buffer[]][] = [
      ['unmasked text frame', [text(connectCommand(), { masked: false })]],
      ['unmasked ping', [frame({ opcode: Opcode.ping, masked: false })]],
      ['RSV1 without a negotiated extension', [text(connectCommand(), { rsv: 4 })]],
      ['RSV2', [text(connectCommand(), { rsv: 2 })]],
      ['RSV3', [text(connectCommand(), { rsv: 1 })]],
      ['RSV1 on a continuation', [text('{"id":1,', { fin: false }), frame({ opcode: Opcode.continuation, payload: '"method":"ping"}', rsv: 4 })]],
      ['RSV1 on a ping', [frame({ opcode: Opcode.ping, rsv: 4 })]],
      ...[0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf].map((opcode): [string, Buffer[]] => [`unknown opcode 0x${opcode.toString(16)}`, [frame({ opcode, payload: 'x' })]]),
      ['fragmented ping (FIN=0)', [frame({ opcode: Opcode.ping, fin: false })]],
      ['fragmented pong (FIN=0)', [frame({ opcode: Opcode.pong, fin: false })]],
      ['fragmented close (FIN=0)', [frame({ opcode: Opcode.close, payload: Buffer.from([0x03, 0xe8]), fin: false })]],
      ['ping with a 126-byte payload', [frame({ opcode: Opcode.ping, payload: Buffer.alloc(126) })]],
      ['continuation with no message started', [continuation('x', true)]],
      ['new text frame inside a fragmented message', [text('{"id":1,', { fin: false }), text(connectCommand())]],
      ['close frame with a 1-byte payload', [frame({ opcode: Opcode.close, payload: Buffer.from([0x03]) })]],
      ...[999, 1004, 1005, 1006, 1015, 2999, 5000].map((code): [string, Buffer[]] => {
        const payload = Buffer.alloc(2);
        payload.writeUInt16BE(code);
        return [`close code ${code} (not allowed on the wire)`, [frame({ opcode: Opcode.close, payload })]];
      }),
    ];
    for (const [name, frames] of cases) {
      test(name, async () => {
        assert.equal(await closeCodeFor(h, frames), 1002);
      });
    }
    test('the server still serves after all of them', () => assertServes(h));
  });

  describe('invalid UTF-8 → 1007', () => {
    const prefix = Buffer.from('{"id":1,"method":"connect","params":{"name":"');
    const suffix = Buffer.from('"}}');
    const cases: [string, Buffer][] = [
      ['0xff byte', Buffer.from([0xff])],
      ['overlong "/" (C0 AF)', Buffer.from([0xc0, 0xaf])],
      ['UTF-16 surrogate (ED A0 80)', Buffer.from([0xed, 0xa0, 0x80])],
      ['code point above U+10FFFF (F4 90 80 80)', Buffer.from([0xf4, 0x90, 0x80, 0x80])],
      ['truncated sequence (E2 82)', Buffer.from([0xe2, 0x82])],
      ['lone continuation byte (80)', Buffer.from([0x80])],
    ];
    for (const [name, bad] of cases) {
      test(`${name}, in one frame`, async () => {
        assert.equal(await closeCodeFor(h, [text(Buffer.concat([prefix, bad, suffix]))]), 1007);
      });
    }
    test('invalid sequence split across fragments', async () => {
      const frames = [text(Buffer.concat([prefix, Buffer.from([0xe2])]), { fin: false }), continuation(Buffer.concat([Buffer.from('A'), suffix]), true)];
      assert.equal(await closeCodeFor(h, frames), 1007);
    });
    test('invalid UTF-8 at the very end of a message', async () => {
      assert.equal(await closeCodeFor(h, [text(Buffer.concat([prefix, suffix, Buffer.from([0xe2, 0x82])]))]), 1007);
    });
    test('close frame with an invalid UTF-8 reason', async () => {
      assert.equal(await closeCodeFor(h, [frame({ opcode: Opcode.close, payload: Buffer.from([0x03, 0xe8, 0xff, 0xfe]) })]), 1007);
    });
    test('a valid character split across fragments is fine', async () => {
      const socket = await raw(h);
      const message = Buffer.from(connectCommand(1, 'caf€'));
      const cut = message.indexOf(Buffer.from('€')) + 1; // inside the 3-byte character
      socket.socket.write(Buffer.concat([text(message.subarray(0, cut), { fin: false }), continuation(message.subarray(cut), true)]));
      const reply = await replyTo(socket, 1);
      assert.equal(reply['error'], undefined, JSON.stringify(reply));
    });
    test('a binary frame is a Herald protocol error (3501), not a framing error', async () => {
      assert.equal(await closeCodeFor(h, [frame({ opcode: Opcode.binary, payload: connectCommand() })]), 3501);
    });
    test('the server still serves', () => assertServes(h));
  });

  describe('oversize messages → 1009, nothing allocated for them', () => {
    const limit = 65536;
    test('one frame of maxMessageBytes + 1', async () => {
      assert.equal(await closeCodeFor(h, [text(Buffer.alloc(limit + 1, 0x20))]), 1009);
    });

    test('headers announcing 1 GiB and 2^62 bytes: refused on the header, with no payload sent', async () => {
      assert.equal(await closeCodeFor(h, [frame({ opcode: Opcode.text, claimedLength: 2 ** 30 })]), 1009);
      assert.equal(await closeCodeFor(h, [frame({ opcode: Opcode.text, claimedLength: 2 ** 62 })]), 1009);
    });

    test('1000 fragments adding up to more than maxMessageBytes', async () => {
      const frames = fragmented(Buffer.alloc(1000 * 66, 0x20), 1000);
      assert.equal(frames.length, 1000);
      assert.equal(await closeCodeFor(h, frames), 1009);
    });

    test('1000 fragments adding up to exactly maxMessageBytes are one valid message', async () => {
      const head = '{"id":7,"method":"connect","params":{"name":"';
      const tail = '"}}';
      const message = head + 'x'.repeat(limit - head.length - tail.length) + tail;
      assert.equal(Buffer.byteLength(message), limit);
      const socket = await raw(h);
      socket.socket.write(Buffer.concat(fragmented(message, 1000)));
      const reply = await replyTo(socket, 7);
      // the name is longer than allowed: a reply error, which proves the message arrived whole
      assert.equal((reply['error'] as { code?: number } | undefined)?.code, 107, JSON.stringify(reply).slice(0, 200));
    });

    test('memory stays flat while 20 peers announce 1 GiB each and 20 send 1000-fragment oversize messages', async (t) => {
      const before = retainedBytes();
      const sockets = await Promise.all(Array.from({ length: 40 }, () => raw(h)));
      const oversize = Buffer.concat(fragmented(Buffer.alloc(1000 * 100, 0x20), 1000));
      sockets.forEach((socket, i) => {
        socket.socket.write(i % 2 === 0 ? Buffer.concat([frame({ opcode: Opcode.text, claimedLength: 2 ** 30 }), Buffer.alloc(256 * 1024)]) : oversize);
      });
      const codes = await Promise.all(sockets.map((socket) => closeCodeOf(socket)));
      assert.deepEqual(new Set(codes), new Set([1009]));
      for (const socket of sockets) socket.destroy();
      const grown = retainedBytes() - before;
      t.diagnostic(`retained memory grew by ${(grown / MiB).toFixed(1)} MiB`);
      assert.ok(grown < 32 * MiB, `retained memory grew by ${(grown / MiB).toFixed(1)} MiB (20 GiB announced, ${((20 * 256 * 1024 + 20 * oversize.length) / MiB).toFixed(1)} MiB sent)`);
      await assertServes(h);
    });
  });

  describe('fragment floods → 1008 at limits.maxFragments', () => {
    /** Sends empty (or 1-byte) continuations in batches until the server closes; returns the close code and frames sent. */
    async function flood(socket: RawWebSocket, payload: Buffer, maxFrames: number): Promise<{ code: number | string; sent: number }> {
      socket.socket.write(text('{', { fin: false }));
      const one = continuation(payload);
      const batch = Buffer.concat(Array.from({ length: 256 }, () => one));
      let sent = 1;
      while (sent < maxFrames && socket.parser.closeCode() === undefined && !socket.closed && !socket.ended) {
        if (!socket.socket.write(batch)) await new Promise((resolve) => setTimeout(resolve, 5));
        else await new Promise((resolve) => setImmediate(resolve));
        sent += 256;
      }
      return { code: await closeCodeOf(socket), sent };
    }

    test('endless empty continuation frames → 1008, memory bounded', async (t) => {
      const before = retainedBytes();
      const sockets = await Promise.all(Array.from({ length: 8 }, () => raw(h)));
      const results = await Promise.all(sockets.map((socket) => flood(socket, Buffer.alloc(0), 200000)));
      for (const { code, sent } of results) assert.equal(code, 1008, `closed with ${code} after ${sent} frames`);
      for (const socket of sockets) socket.destroy();
      const grown = retainedBytes() - before;
      t.diagnostic(`${results.reduce((n, r) => n + r.sent, 0)} frames sent; retained memory grew by ${(grown / MiB).toFixed(1)} MiB`);
      assert.ok(grown < 32 * MiB, `retained memory grew by ${(grown / MiB).toFixed(1)} MiB`);
      await assertServes(h);
    });

    test('endless 1-byte fragments → 1008 (the fragment cap comes before the size cap)', async () => {
      const socket = await raw(h);
      const { code } = await flood(socket, Buffer.from(' '), 200000);
      assert.equal(code, 1008);
    });

    test('pings between fragments are answered and do not count as fragments', async () => {
      const socket = await raw(h);
      const parts = fragmented(connectCommand(3), 4);
      socket.socket.write(Buffer.concat([parts[0]!, frame({ opcode: Opcode.ping, payload: 'a' }), parts[1]!, frame({ opcode: Opcode.ping, payload: 'b' }), parts[2]!, parts[3]!]));
      const reply = await replyTo(socket, 3);
      assert.equal(reply['error'], undefined);
      assert.deepEqual(
        socket.parser.frames.filter((f) => f.opcode === Opcode.pong).map((f) => f.payload.toString()),
        ['a', 'b'],
      );
    });

    test('the default cap is 1024 frames per message: 1024 pass, 1025 close with 1008', async () => {
      const atCap = await raw(h);
      atCap.socket.write(Buffer.concat(fragmented(connectCommand(5).padEnd(1024 * 2, ' '), 1024)));
      const reply = await replyTo(atCap, 5);
      assert.equal(reply['error'], undefined, JSON.stringify(reply));
      const overCap = await raw(h);
      overCap.socket.write(Buffer.concat(fragmented(connectCommand(6).padEnd(1025 * 2, ' '), 1025)));
      assert.deepEqual(await outcomeOf(overCap, 6), { close: 1008 });
    });

    test('limits.maxFragments is honoured', async () => {
      const small = await startHerald({ limits: { maxFragments: 8 } });
      try {
        const atCap = await raw(small);
        atCap.socket.write(Buffer.concat(fragmented(connectCommand(9), 8)));
        assert.equal((await replyTo(atCap, 9))['error'], undefined);
        const overCap = await raw(small);
        overCap.socket.write(Buffer.concat(fragmented(connectCommand(10), 9)));
        assert.deepEqual(await outcomeOf(overCap, 10), { close: 1008 });
        await assertServes(small);
      } finally {
        for (const socket of opened) socket.destroy();
        await small.close();
      }
    });
  });
});
