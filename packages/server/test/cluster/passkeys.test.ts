/**
 * Passkeys in cluster mode (`--workers 2`, sqlite engine: the primary owns
 * the state file, workers reach the console store over IPC). Every request
 * opens a fresh connection, so the kernel spreads the steps of one ceremony
 * over both workers: a challenge issued by one is taken by the other, once;
 * a passkey registered through one signs in through either; the same answer
 * sent ten times at once signs in once.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TestCluster } from './harness.ts';
import { createAdmin } from '../helpers/console.ts';
import { freePort, LocalhostConsole, SoftCredential } from '../helpers/passkeys.ts';

const RP = 'localhost';

describe('passkeys across two workers', { timeout: 120000 }, () => {
  let cluster: TestCluster;
  let port: number;
  const credential = new SoftCredential();

  before(async () => {
    port = await freePort();
    cluster = await TestCluster.start({
      workers: 2,
      config: { admin: { port, console: { enabled: true, passkeys: { rpId: RP, origins: [`http://localhost:${port}`] } } } },
    });
    await createAdmin(join(cluster.dir, 'state'), 'ada', 'owner');
  });
  after(() => cluster?.stop());

  test('registered through one worker, signed in through either, the challenge used once', async () => {
    const c = new LocalhostConsole(port);
    assert.equal((await c.login('ada')).status, 200);
    const registered = await c.register(credential, RP, 'key');
    assert.equal(registered.status, 201, registered.text);
    for (let i = 0; i < 6; i++) {
      const s = new LocalhostConsole(port);
      const options = await s.post('/api/login/passkey/options');
      assert.equal(options.status, 200);
      const response = credential.assertion({ challenge: options.body.options.challenge, origin: s.origin, rpId: RP });
      const cookie = s.cookies.get('__Host-herald_passkey')!;
      const ok = await s.post('/api/login/passkey/verify', { response });
      assert.equal(ok.status, 200, ok.text);
      assert.equal((await s.get('/api/passkeys')).body.passkeys[0].name, 'key');
      const replay = new LocalhostConsole(port);
      replay.cookies.set('__Host-herald_passkey', cookie);
      const again = await replay.post('/api/login/passkey/verify', { response });
      assert.equal(again.status, 401);
      assert.match(again.body.error.detail, /no challenge/);
    }
  });

  test('one answer sent ten times at once over both workers signs in once', async () => {
    const s = new LocalhostConsole(port);
    const options = await s.post('/api/login/passkey/options');
    const response = credential.assertion({ challenge: options.body.options.challenge, origin: s.origin, rpId: RP });
    const cookie = s.cookies.get('__Host-herald_passkey')!;
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => {
        const copy = new LocalhostConsole(port);
        copy.cookies.set('__Host-herald_passkey', cookie);
        return copy.post('/api/login/passkey/verify', { response });
      }),
    );
    assert.deepEqual(
      answers.map((a) => a.status).sort(),
      [200, 401, 401, 401, 401, 401, 401, 401, 401, 401],
    );
  });
});
