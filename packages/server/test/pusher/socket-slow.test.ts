/**
 * A Pusher socket that never reads (limits.outboundQueueBytes): the server
 * cuts it instead of buffering without bound, and a normal Pusher
 * subscriber of the same channel keeps receiving every event, in order.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { RawWebSocket } from '../helpers/rt-raw.ts';
import { waitUntil } from '../helpers/rt-util.ts';
import { RawPusher, startPusherHerald, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import { encodePusherData } from '../../src/pusher/pusher-publication.ts';

const QUEUE_BYTES = 262144;
const PAYLOAD = 'x'.repeat(30 * 1024);
/** ~30 MiB in all: far more than the queue limit and the loopback socket buffers. */
const FLOOD = 1000;

let h: PusherHerald;
const app = testApp('main');
before(async () => {
  h = await startPusherHerald([app], { limits: { outboundQueueBytes: QUEUE_BYTES } });
});
after(async () => {
  await h.close();
});

test('a Pusher socket that never reads is cut; the other subscriber gets every event in order', { timeout: 120000 }, async () => {
  const channel = 'slow-feed';
  const normal = new RawPusher(h.appUrl(app.key));
  await normal.established();
  normal.send({ event: 'pusher:subscribe', data: { channel } });
  await normal.event('pusher_internal:subscription_succeeded');
  const slow = await RawWebSocket.connect(h.server.port, `/app/${app.key}?protocol=7&client=test&version=1`);
  try {
    slow.sendText(JSON.stringify({ event: 'pusher:subscribe', data: { channel } }));
    await waitUntil(() => slow.parser.messages().find((m) => m['event'] === 'pusher_internal:subscription_succeeded'), { timeoutMs: 5000, label: 'slow subscribed' });
    const node = h.server.node;
    assert.equal(node.hub.subscriberCount(channel), 2);
    slow.stopReading();
    const resolved = { channel, namespace: '', options: node.rules.namespaceOptions('')! };
    let cutAt: number | undefined;
    for (let i = 0; i < FLOOD; i++) {
      await node.publish(resolved, encodePusherData({ event: 'tick', data: `${i} ${PAYLOAD}` }), undefined, 'api');
      if (cutAt === undefined && node.hub.subscriberCount(channel) === 1) cutAt = i;
    }
    assert.ok(cutAt !== undefined && cutAt < FLOOD, 'the slow socket must be cut while the flood runs');
    const ticks = () => normal.frames.filter((f) => f.event === 'tick');
    await waitUntil(() => (ticks().length >= FLOOD ? true : undefined), { timeoutMs: 60000, label: `normal subscriber to receive ${FLOOD} events` });
    assert.deepEqual(
      ticks().map((f) => Number(String(f.data).split(' ', 1)[0])),
      Array.from({ length: FLOOD }, (_, i) => i),
    );
    slow.resumeReading();
    await slow.waitClosed();
    const received = slow.parser.messages().filter((m) => m['event'] === 'tick').length;
    assert.ok(received < FLOOD, `the slow socket received ${received} of ${FLOOD}`);
  } finally {
    slow.destroy();
    normal.close();
  }
});
