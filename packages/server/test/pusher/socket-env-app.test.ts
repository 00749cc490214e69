/**
 * The promise of the issue, as a user runs it: `HERALD_APP_ID=1
 * HERALD_APP_KEY=k HERALD_APP_SECRET=s herald serve` with nothing else
 * configured serves pusher-js on the public port (private channels signed
 * with that secret), and SIGTERM closes its sockets with 4200.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Pusher from 'pusher';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { connected, disconnectAll, nextEvent, pusherClientOnPort, RawPusher, startAuthServer, subscribed } from '../helpers/pusher-socket.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-env-app-'));
after(() => {
  disconnectAll();
  rmSync(dir, { recursive: true, force: true });
});

test('an app from HERALD_APP_ID/KEY/SECRET alone serves pusher-js', { timeout: 60000 }, async () => {
  const secret = 'env-app-secret-0123456789';
  const herald = new HeraldProcess(['--port', '0', '--admin-port', '0'], dir, { HERALD_APP_ID: '1', HERALD_APP_KEY: 'k', HERALD_APP_SECRET: secret });
  const port = await herald.listeningPort();
  const sdk = new Pusher({ appId: '1', key: 'k', secret, host: '127.0.0.1', port: String(port), useTLS: false });
  const auth = await startAuthServer(sdk, () => ({ user_id: 'u' }));
  try {
    const client = pusherClientOnPort(port, 'k', { channelAuthorization: { endpoint: auth.channelUrl, transport: 'ajax' } });
    await connected(client);
    await subscribed(client, 'private-env');
    const arriving = nextEvent(client, 'private-env', 'hello');
    assert.equal((await sdk.trigger('private-env', 'hello', { from: 'env' })).status, 200);
    assert.deepEqual(await arriving, { from: 'env' });
    const raw = new RawPusher(`ws://127.0.0.1:${port}/app/k?protocol=7&client=test&version=1`);
    await raw.established();
    await herald.stop('SIGTERM');
    assert.equal((await raw.closed).code, 4200);
    assert.equal(raw.frames.find((f) => f.event === 'pusher:error')?.data.code, 4200);
  } finally {
    await auth.close();
    await herald.stop('SIGKILL');
  }
});
