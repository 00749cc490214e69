/**
 * Every limit of docs/protocol.md, hit on purpose, gives its documented reply
 * error or disconnect code. Each test runs its own Herald with small limits.
 */
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, eventually, openWs, unique, type Json, type WsClient } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';

async function withHerald(overrides: Record<string, unknown>, body: (h: TestHerald) => Promise<void>): Promise<void> {
  const h = await startHerald(overrides);
  try {
    await body(h);
  } finally {
    closeAllClients();
    await h.close();
  }
}

const presenceCount = async (h: TestHerald, channel: string): Promise<number> => {
  const answer = await h.api('presence', { channel });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return Object.keys(answer.body.clients).length;
};

/** Sends `count` pings in one go; returns their ids. */
function burstOfPings(c: WsClient, count: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < count; i++) {
    const id = c.newId();
    ids.push(id);
    c.send({ id, method: 'ping' });
  }
  return ids;
}

describe('limits', { timeout: 30000 }, () => {
  afterEach(() => closeAllClients());

  test('channels per connection: the subscription above the limit gets 106', async () => {
    await withHerald({ limits: { maxChannelsPerConnection: 3 } }, async (h) => {
      const c = await connectWs(h, 'alice');
      const channels = [1, 2, 3].map(() => unique('chat:limit'));
      for (const channel of channels) await c.call('subscribe', { channel });
      assert.equal(await c.callError('subscribe', { channel: unique('chat:limit') }), 106);
      assert.equal(await c.callError('subscribe', { channel: unique('public:limit') }), 106);
      // a freed slot can be used again
      await c.call('unsubscribe', { channel: channels[0] });
      await c.call('subscribe', { channel: unique('chat:limit') });
      assert.equal(await c.callError('subscribe', { channel: unique('chat:limit') }), 106);
      // the limit is per connection
      const other = await connectWs(h, 'alice');
      for (const channel of channels) await other.call('subscribe', { channel });
      assert.ok(c.isOpen && other.isOpen);

      // the same limit over long polling
      const s = await LongPollSession.open(h.url, { token: await h.token('bob') });
      for (const channel of channels) await s.call('subscribe', { channel });
      const reply = await s.request('subscribe', { channel: unique('chat:limit') });
      assert.equal(reply.error?.code, 106, JSON.stringify(reply));
      await s.close();
    });
  });

  test('message above maxMessageBytes closes the WebSocket with 1009; at the limit it is accepted', async () => {
    await withHerald({ limits: { maxMessageBytes: 1024 } }, async (h) => {
      const channel = unique('chat:size');
      const c = await connectWs(h, 'alice');
      const id = c.newId();
      const prefix = `{"id":${id},"method":"publish","params":{"channel":"${channel}","data":"`;
      const suffix = '"}}';
      const exact = prefix + 'x'.repeat(1024 - prefix.length - suffix.length) + suffix;
      assert.equal(Buffer.byteLength(exact), 1024);
      c.sendRaw(exact);
      const reply = await c.reply(id);
      assert.equal(reply.error, undefined, `a 1024-byte command is within the limit: ${JSON.stringify(reply)}`);

      // one byte over
      const over = prefix + 'x'.repeat(1025 - prefix.length - suffix.length) + suffix;
      c.sendRaw(over);
      assert.equal((await c.waitClose()).code, 1009);

      // bytes, not characters: 600 × "é" is 1200 bytes
      const multi = await connectWs(h, 'alice');
      multi.send({ id: 1, method: 'publish', params: { channel, data: '\u00e9'.repeat(600) } });
      assert.equal((await multi.waitClose()).code, 1009);

      // before connect too
      const fresh = await openWs(h.wsUrl);
      fresh.sendRaw('{"id":1,"method":"connect","params":{"name":"' + 'n'.repeat(2000) + '"}}');
      assert.equal((await fresh.waitClose()).code, 1009);

      // the oversize publication was never delivered
      assert.equal((await h.api('history', { channel })).body.offset, 1);
    });
  });

  test('a connection without connect within staleMs is closed with 3502; connected ones stay', async () => {
    await withHerald({ limits: { staleMs: 300 } }, async (h) => {
      const idle = await openWs(h.wsUrl);
      const chatty = await openWs(h.wsUrl);
      assert.equal(await chatty.callError('ping'), 115, 'commands do not count as connect');
      const good = await connectWs(h, 'alice');
      assert.equal((await idle.waitClose()).code, 3502);
      assert.equal((await chatty.waitClose()).code, 3502);
      assert.ok(good.isOpen, 'a connected connection is not stale');
      assert.deepEqual(await good.call('ping'), {});
    });
  });

  test('inbound rate: commands beyond the burst get error 111, the connection stays', async () => {
    await withHerald(
      { limits: { inboundRatePerSecond: 1, inboundBurst: 5, inboundHardPerSecond: 1000 } },
      async (h) => {
        const c = await connectWs(h, 'alice');
        const ids = burstOfPings(c, 20);
        const replies: Json[] = [];
        for (const id of ids) replies.push(await c.reply(id));
        const ok = replies.filter((r) => r.error === undefined);
        const limited = replies.filter((r) => r.error !== undefined);
        assert.ok(ok.length >= 1, 'the burst allows some commands');
        // burst of 5 (connect may have used one) plus at most a token or two refilled at 1/s
        assert.ok(ok.length <= 7, `${ok.length} of 20 commands passed a burst of 5`);
        assert.ok(limited.length >= 13);
        for (const r of limited) assert.equal(r.error.code, 111, JSON.stringify(r));
        for (const r of ok) assert.deepEqual(r.result, {});
        assert.ok(c.isOpen, 'rate-limited, not disconnected');
        // other connections have their own bucket
        const other = await connectWs(h, 'bob');
        assert.deepEqual(await other.call('ping'), {});
      },
    );
  });

  test('inbound rate above the hard limit closes with 3009', async () => {
    await withHerald(
      { limits: { inboundRatePerSecond: 5, inboundBurst: 5, inboundHardPerSecond: 10 } },
      async (h) => {
        const c = await connectWs(h, 'alice');
        const bystander = await connectWs(h, 'bob');
        burstOfPings(c, 100);
        assert.equal((await c.waitClose()).code, 3009);
        const replies = c.frames.filter((f) => f.id !== undefined && f.result === undefined && f.error !== undefined);
        for (const r of replies) assert.equal(r.error.code, 111, JSON.stringify(r));
        assert.deepEqual(await bystander.call('ping'), {}, 'others are unaffected');
      },
    );
  });

  test('a half-open client (no pongs, no messages) is closed with 3008 and leaves presence', async () => {
    await withHerald({ ping: { intervalMs: 200, maxMissed: 2 } }, async (h) => {
      const channel = unique('chat:half-open');
      // well-behaved clients, opened first so they live longer than the half-open one
      const browserLike = await connectWs(h, 'bob'); // ws answers ping frames by itself
      const manualPong = await connectWs(h, 'carol', {}, { autoPong: false });
      manualPong.onFrame = (frame) => {
        if (frame.push === 'ping') manualPong.send({ method: 'pong' });
      };
      await browserLike.call('subscribe', { channel: unique('chat:observer') });

      const halfOpen = await connectWs(h, 'alice', {}, { autoPong: false });
      await halfOpen.call('subscribe', { channel });
      assert.equal(await presenceCount(h, channel), 1);
      // from now on halfOpen sends nothing and answers no ping

      const closed = await halfOpen.waitClose();
      assert.equal(closed.code, 3008);
      assert.ok(
        halfOpen.frames.some((f) => f.push === 'ping'),
        'the server sent {"push":"ping"} before giving up',
      );
      await eventually(async () => ((await presenceCount(h, channel)) === 0 ? true : undefined), 'presence to be empty');
      const channels = await h.api('channels', {});
      assert.equal(channels.body.channels[channel], undefined, 'the channel has no subscriber left');

      assert.ok(browserLike.isOpen, 'a client answering ping frames stays');
      assert.ok(manualPong.isOpen, 'a client answering with {"method":"pong"} stays');
      assert.deepEqual(await browserLike.call('ping'), {});
      assert.deepEqual(await manualPong.call('ping'), {});
    });
  });

  test('a subscriber that stops reading is cut at outboundQueueBytes (3004, or the socket cut)', async () => {
    await withHerald({ limits: { outboundQueueBytes: 64 * 1024 } }, async (h) => {
      const channel = unique('chat:slow');
      const slow = await connectWs(h, 'slow');
      await slow.call('subscribe', { channel });
      const healthy = await connectWs(h, 'fast');
      await healthy.call('subscribe', { channel });
      slow.ws.pause(); // stop reading: the kernel buffers fill, then Herald's queue

      const chunk = 'x'.repeat(32 * 1024);
      let published = 0;
      // at most 64 MiB; stop as soon as Herald has dropped the slow subscriber
      while (published < 2048) {
        for (let i = 0; i < 16; i++, published++) {
          const answer = await h.api('publish', { channel, data: chunk });
          assert.equal(answer.status, 200, JSON.stringify(answer.body));
        }
        if ((await presenceCount(h, channel)) === 1) break;
      }
      assert.equal(await presenceCount(h, channel), 1, `slow subscriber still present after ${published} publications`);
      slow.ws.resume();
      // docs/protocol.md: on WebSocket a close frame would queue behind the
      // backlog, so a slow consumer's socket is cut (abnormal closure 1006)
      const { code } = await slow.waitClose(15000);
      assert.equal(code, 1006, `slow consumer closed with ${code}`);
      // the healthy subscriber got everything, in order
      const pubs = await healthy.waitPublications(channel, published, 15000);
      assert.deepEqual(
        pubs.map((p) => p.offset),
        Array.from({ length: published }, (_, i) => i + 1),
      );
    });
  });

  test('a long-poll session whose queue exceeds outboundQueueBytes is closed with 3004', async () => {
    await withHerald({ limits: { outboundQueueBytes: 4096 } }, async (h) => {
      const channel = unique('chat:lp-slow');
      const s = await LongPollSession.open(h.url, { token: await h.token('alice'), channels: [channel] });
      assert.equal(await presenceCount(h, channel), 1);
      // never poll: 10 publications of 1 KiB overflow a 4 KiB queue
      for (let i = 0; i < 10; i++) {
        const answer = await h.api('publish', { channel, data: 'x'.repeat(1024) });
        assert.equal(answer.status, 200);
      }
      await eventually(async () => ((await presenceCount(h, channel)) === 0 ? true : undefined), 'the slow session to be dropped');
      let answer = await s.rawPoll(s.seq);
      if (answer.status === 200) {
        const last = answer.body.messages[answer.body.messages.length - 1];
        assert.equal(last?.push, 'disconnect', answer.text.slice(0, 300));
        assert.equal(last.code, 3004);
        assert.equal(last.reconnect, true);
        answer = await s.rawPoll(answer.body.seq);
      }
      assert.equal(answer.status, 404, answer.text.slice(0, 300));
    });
  });
});
