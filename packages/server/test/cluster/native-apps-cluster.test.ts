/**
 * The native protocol per app in cluster mode (`herald serve --workers 2`):
 * WebSocket clients of app X on both workers, a long-poll session of
 * X whose polls and commands reach either worker on X's prefixed paths; a
 * trigger of the `pusher` SDK reaches all of them, and a long-poll publish
 * reaches the WebSocket clients on both workers.
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Pusher from 'pusher';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { closeAllClients, eventually, openWs, signToken, unique, type WsClient } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { testApp } from '../helpers/pusher-socket.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-native-apps-cluster-'));
after(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => closeAllClients());

describe('native protocol per app in cluster mode', () => {
  it('two workers: X\'s WebSocket clients on both and a long-poll session get X\'s trigger; the session\'s publish reaches both', async () => {
    const main = testApp('main');
    const x = testApp('x');
    for (const app of [main, x]) writeFileSync(join(dir, `${app.id}.secret`), app.secret, { mode: 0o600 });
    writeFileSync(join(dir, 'hmac'), randomBytes(32).toString('base64url'), { mode: 0o600 });
    const config = join(dir, 'herald.json');
    writeFileSync(
      config,
      JSON.stringify({
        auth: { hmacSecretFile: join(dir, 'hmac') },
        listen: { host: '127.0.0.1', port: 0 },
        admin: { port: 0 },
        stateDir: join(dir, 'state'),
        process: { allowRoot: true },
        limits: { newConnectionsPerIpPerSecond: 100000 },
        api: { rateLimitPerIp: 100000, rateLimitPerKey: 100000 },
        channels: { defaults: { clientPublish: true } },
        apps: { default: main.id, list: [main, x].map((app) => ({ id: app.id, key: app.key, secretFile: join(dir, `${app.id}.secret`) })) },
      }),
    );
    const apiKey = randomBytes(24).toString('base64url');
    const herald = new HeraldProcess(['--config', config, '--workers', '2'], dir, { HERALD_API_KEY: apiKey });
    try {
      const port = await herald.listeningPort();
      const sdk = new Pusher({ appId: x.id, key: x.key, secret: x.secret, host: '127.0.0.1', port: String(port), useTLS: false });
      const token = (sub: string): Promise<string> => signToken(x.secret, { sub, exp: Math.floor(Date.now() / 1000) + 600 });
      const channelsByNode = async (): Promise<number[]> => {
        const response = await fetch(`http://127.0.0.1:${port}/api/info`, { method: 'POST', headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }, body: '{}' });
        const info = (await response.json()) as { nodes: { channels: number }[] };
        return info.nodes.map((n) => n.channels);
      };
      await eventually(async () => ((await channelsByNode()).length === 2 ? true : undefined), 'info listing both workers', 20000);
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
