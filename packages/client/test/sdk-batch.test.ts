/**
 * Batched frames and the SDK (docs/protocol.md, "Batched frames"): on every
 * transport the SDK announces them with `batch=1` in the URL and splits what
 * the server batches, and it still works with a server that does not know
 * them (here: the real server behind a proxy that drops the query parameter,
 * as an older Herald ignores it; the SDK must then not announce anywhere
 * else, since older servers refuse an unknown `connect` param or open key).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startHerald, type TestHerald } from '../../server/test/helpers/herald.ts';
import { startProxy, type TestProxy } from '../../server/test/helpers/proxy.ts';
import { recordedClient, recordSubscription, type RecordedClient } from './sdk-helpers.ts';
import type { TransportName } from '../src/index.ts';

const unique = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

describe('SDK and batched frames', { timeout: 60000 }, () => {
  let h: TestHerald;
  let proxy: TestProxy;
  const clients: RecordedClient[] = [];

  before(async () => {
    h = await startHerald({
      channels: {
        // Publications of `delayed:` wait 300 ms for others: three publishes in a row arrive as one batch.
        namespaces: [{ name: 'delayed', allowAnonymous: true, writeDelayMs: 300 }],
      },
    });
    proxy = await startProxy(h.url);
    proxy.stripParams = ['batch'];
  });
  after(async () => {
    for (const { client } of clients) client.disconnect();
    await proxy.close();
    await h.close();
  });

  /** The server's side of the connection the SDK reports as `client`. */
  function serverClient(id: string) {
    const found = [...h.server.node.connectedClients()].find((c) => c.id === id);
    assert.ok(found, `no connection ${id} on the server`);
    return found;
  }

  async function receiveThree(url: string, transport: TransportName): Promise<{ batching: boolean }> {
    const recorded = recordedClient({ url, transports: [transport] });
    clients.push(recorded);
    const channel = unique('delayed:sdk');
    const room = recordSubscription<{ n: number; text: string }>(recorded.client.subscribe(channel));
    recorded.client.connect();
    const connected = await recorded.waitFor('connected');
    await room.waitForSubscribed();
    for (let n = 1; n <= 3; n++) {
      const answer = await h.api('publish', { channel, data: { n, text: `line ${n}\nwith a break` } });
      assert.equal(answer.status, 200);
    }
    await room.waitForPublications(3);
    assert.deepEqual(
      room.publications.map((p) => [p.offset, p.data.n, p.data.text]),
      [1, 2, 3].map((n) => [n, n, `line ${n}\nwith a break`]),
    );
    assert.deepEqual(room.errors, []);
    const batching = serverClient(connected.client as string).batching;
    recorded.client.disconnect();
    return { batching };
  }

  for (const transport of ['websocket', 'sse', 'long-poll'] as const satisfies readonly TransportName[]) {
    test(`${transport}: the SDK announces batches and reads them`, async () => {
      const { batching } = await receiveThree(h.url, transport);
      assert.equal(batching, true, 'the server batches for the SDK');
    });

    test(`${transport}: against a server that ignores the announcement, one frame per message as before`, async () => {
      const { batching } = await receiveThree(proxy.url, transport);
      assert.equal(batching, false, 'announced only in the URL, which this server did not see');
      assert.ok(proxy.seen.some((line) => line.includes('batch=1')), 'the SDK did announce in the URL');
    });
  }
});
