/**
 * OIDC sign-in in cluster mode (`--workers 2`, sqlite engine: the pending
 * sign-ins and the OIDC links live in the primary's state file, workers
 * reach them over IPC). The whole flow is driven over HTTP without a
 * browser (a small cookie jar per origin) against a real `oidc-provider`
 * over TLS: every request opens a fresh connection, so the kernel spreads
 * start, callback and session checks over both workers. The sign-in
 * completes whichever worker started it, the session is honoured by every
 * worker, and the same callback replayed is refused by every worker.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { Agent, fetch } from 'undici';
import { TestCluster } from './harness.ts';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider.ts';
import { missingService } from '../helpers/services.ts';

const SECRET = 'cluster-oidc-client-secret-0123456789';

/** Cookies by origin (paths and attributes ignored: enough for two servers on loopback). */
class Jar {
  readonly #cookies = new Map<string, Map<string, string>>();
  header(origin: string): string {
    return [...(this.#cookies.get(origin) ?? new Map<string, string>()).entries()].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  take(origin: string, setCookies: string[]): void {
    const cookies = this.#cookies.get(origin) ?? new Map<string, string>();
    for (const line of setCookies) {
      const [pair = ''] = line.split(';', 1);
      const at = pair.indexOf('=');
      const name = pair.slice(0, at).trim();
      const value = pair.slice(at + 1).trim();
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(line) || /max-age=0/i.test(line)) cookies.delete(name);
      else cookies.set(name, value);
    }
    this.#cookies.set(origin, cookies);
  }
}

describe('OIDC sign-in across two workers', { skip: missingService('openssl', existsSync('/usr/bin/openssl')), timeout: 180000 }, () => {
  let cluster: TestCluster;
  let op: TestOidcProvider;
  let ca: string;

  before(async () => {
    op = (await startOidcProvider())!;
    ca = readFileSync(op.caFile, 'utf8');
    cluster = await TestCluster.start({
      workers: 2,
      env: { HERALD_TEST_OIDC_SECRET: SECRET },
      config: {
        admin: {
          console: {
            enabled: true,
            oidc: {
              providers: [
                {
                  id: 'corp',
                  label: 'Corp',
                  issuer: op.issuer,
                  caFile: op.caFile,
                  clientId: 'herald-console',
                  clientSecretEnv: 'HERALD_TEST_OIDC_SECRET',
                  roles: [{ emailDomain: 'example.com', role: 'operator' }],
                },
              ],
            },
          },
        },
      },
    });
    await op.register({ clientId: 'herald-console', clientSecret: SECRET, redirectUris: [`http://127.0.0.1:${cluster.adminPort}/console/oidc/corp/callback`] });
    op.account('alice', { email: 'alice@example.com', email_verified: true });
  });

  after(async () => {
    await cluster?.stop();
    await op?.close();
  });

  /** One request on a fresh connection (so the kernel picks a worker), no redirect followed, cookies from and into the jar. */
  async function go(jar: Jar, url: string, init: { method?: string; body?: string; type?: string } = {}) {
    const origin = new URL(url).origin;
    const headers: Record<string, string> = { cookie: jar.header(origin) };
    if (init.type !== undefined) headers['content-type'] = init.type;
    const dispatcher = new Agent(url.startsWith('https:') ? { connect: { ca } } : {});
    try {
      const response = await fetch(url, { method: init.method ?? 'GET', body: init.body, headers, redirect: 'manual', dispatcher });
      jar.take(origin, response.headers.getSetCookie());
      const text = await response.text();
      return { status: response.status, location: response.headers.get('location'), text };
    } finally {
      await dispatcher.close();
    }
  }

  test('start on any worker, callback on any worker: signed in; the session works on both; the callback replayed is refused everywhere', async () => {
    const herald = `http://127.0.0.1:${cluster.adminPort}`;
    const jar = new Jar();
    const start = await go(jar, `${herald}/console/oidc/corp/start`);
    assert.equal(start.status, 303);
    // At the provider: follow its redirects to the sign-in form, sign in, follow back until Herald's callback.
    let url = new URL(start.location!);
    let callback: string | undefined;
    for (let hops = 0; hops < 10 && callback === undefined; hops++) {
      if (url.origin === herald) {
        callback = url.href;
        break;
      }
      const answer = url.pathname.startsWith('/interaction/')
        ? await go(jar, url.href, { method: 'POST', body: 'login=alice', type: 'application/x-www-form-urlencoded' })
        : await go(jar, url.href);
      assert.ok(answer.location !== null, `a redirect from ${url.pathname} (${answer.status}): ${answer.text.slice(0, 200)}`);
      url = new URL(answer.location!, url);
    }
    assert.ok(callback !== undefined && callback.includes('/console/oidc/corp/callback?'), `reached the callback (${url.href})`);
    const done = await go(jar, callback);
    assert.equal(done.status, 303);
    assert.equal(done.location, '/console/');

    for (let i = 0; i < 12; i++) {
      const session = await go(jar, `${herald}/console/api/session`);
      assert.equal(session.status, 200, session.text);
      const body = JSON.parse(session.text) as { admin: { name: string; role: string }; stage: string; methods: string[] };
      assert.deepEqual([body.admin.name, body.admin.role, body.stage, body.methods], ['alice@example.com', 'operator', 'full', ['oidc']]);
    }
    // The replayed callback (same browser: the same cookies) finds no flow, whichever worker answers.
    for (let i = 0; i < 6; i++) {
      const replay = await go(jar, callback);
      assert.equal(replay.status, 303);
      assert.equal(replay.location, '/console/#/signin-refused?reason=state&provider=corp');
    }
  });
});
