/**
 * The native protocol per app in cluster mode (`herald serve --workers 2`):
 * WebSocket clients of app X on both workers, a long-poll session of
 * X whose polls and commands reach either worker on X's prefixed paths; a
 * trigger of the `pusher` SDK reaches all of them, and a long-poll publish
 * reaches the WebSocket clients on both workers.
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeAllClients, eventually, openWs, signToken, unique, type WsClient } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { serverSdk, testApp } from '../helpers/pusher-socket.ts';
import { startHeraldWorkers } from './harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-native-apps-cluster-'));
after(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => closeAllClients());

describe('native protocol per app in cluster mode', () => {
  it('two workers: X\'s WebSocket clients on both and a long-poll session get X\'s trigger; the session\'s publish reaches both', async () => {
    const main = testApp('main');
    const x = testApp('x');
    for (const app of [main, x]) writeFileSync(join(dir, `${app.id}.secret`), app.secret, { mode: 0o600 });
    const herald = await startHeraldWorkers(dir, {
      channels: { defaults: { clientPublish: true } },
      apps: { default: main.id, list: [main, x].map((app) => ({ id: app.id, key: app.key, secretFile: join(dir, `${app.id}.secret`) })) },
    });
    try {
      const { port } = herald;
      const sdk = serverSdk(port, x);
      const token = (sub: string): Promise<string> => signToken(x.secret, { sub, exp: Math.floor(Date.now() / 1000) + 600 });
      const channelsByNode = async (): Promise<number[]> => [...(await herald.channelsByNode()).values()];
      const channel = unique('room');
      // The primary hands connections to the workers, not strictly in turn: sockets are added until both workers hold the channel.
      const sockets: WsClient[] = [];
      const openOne = async (): Promise<void> => {
        const ws = await openWs(`ws://127.0.0.1:${port}/apps/${x.id}/connection/websocket`);
        await ws.connect(await token(`u${sockets.length}`));
        await ws.call('subscribe', { channel });
        sockets.push(ws);
      };
      for (let i = 0; i < 4; i++) await openOne();
      // Each worker is a node; info shows a worker's channels from its snapshots.
      await eventually(
        async () => {
          if ((await channelsByNode()).every((n) => n > 0)) return true;
          if (sockets.length < 16) await openOne();
          return undefined;
        },
        "X's channel on both workers",
        30000,
      );
      const base = `http://127.0.0.1:${port}/apps/${x.id}`;
      const session = await LongPollSession.open(base, { token: await token('lp'), channels: [channel] });
      await sdk.trigger(channel, 'hello', { n: 1 });
      for (const ws of sockets) {
        const pushed = await ws.push('publication', channel);
        assert.deepEqual(pushed.data, { event: 'hello', data: JSON.stringify({ n: 1 }) });
      }
      const got = await session.pollUntil((all) => all.find((m) => m.push === 'publication'), 'the trigger on long polling', 10000);
      assert.equal(got.channel, channel);
      // Commands on X's prefixed path, sent a few times: whichever worker takes them, the session's does the work.
      for (let i = 0; i < 3; i++) {
        const answer = await fetch(`${base}/connection/command`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'herald-session': session.session },
          body: JSON.stringify({ id: i + 1, method: 'publish', params: { channel, data: { i } } }),
        });
        assert.equal(answer.status, 200, await answer.text());
      }
      for (const ws of sockets) {
        const list = await ws.waitPublications(channel, 4, 10000);
        assert.deepEqual(list.slice(1).map((p) => p.data), [{ i: 0 }, { i: 1 }, { i: 2 }]);
        assert.ok(list.every((p) => p.channel === channel));
      }
    } finally {
      await herald.stop();
    }
  });
});
