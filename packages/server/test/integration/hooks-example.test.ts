/**
 * docs/hooks.md, "A worked example": the backend's code and Herald's
 * config are read from the page and run as they are (the port moved to a
 * free one): a connection without a token is authenticated by its cookie,
 * a team channel is allowed for a member and refused otherwise, a
 * publication is moderated, the rpc answers, and the backend logs the
 * webhooks it verified. So the example cannot rot.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startHerald } from '../helpers/herald.ts';
import { eventually, openWs } from '../helpers/herald-ws.ts';

const HOOKS_MD = fileURLToPath(new URL('../../../../docs/hooks.md', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'herald-hooks-example-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The first fenced block of `lang` after `heading` in docs/hooks.md. */
function block(heading: string, lang: string, skip = 0): string {
  const text = readFileSync(HOOKS_MD, 'utf8');
  let at = text.indexOf(heading);
  assert.ok(at >= 0, `docs/hooks.md has "${heading}"`);
  for (let i = 0; i <= skip; i++) at = text.indexOf('```' + lang + '\n', at + 1);
  const start = at + lang.length + 4;
  return text.slice(start, text.indexOf('\n```', start));
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

describe('docs/hooks.md worked example', () => {
  it('the documented backend runs against Herald with the documented config: cookie sign-in, team authorisation, moderation, rpc, verified webhooks', async () => {
    const code = block('### A worked example', 'js');
    const port = await freePort();
    const config = JSON.parse(block('### A worked example', 'json').replaceAll('127.0.0.1:3001', `127.0.0.1:${port}`)) as Record<string, unknown>;
    writeFileSync(join(dir, 'backend.mjs'), code);
    const hookSecret = randomBytes(32).toString('base64url');
    const webhookSecret = randomBytes(32).toString('base64url');
    const backend = spawn(process.execPath, [join(dir, 'backend.mjs')], {
      env: { PATH: process.env['PATH'] ?? '', HOOK_SECRET: hookSecret, WEBHOOK_SECRET: webhookSecret, PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const logged: string[] = [];
    createInterface({ input: backend.stdout! }).on('line', (line) => logged.push(line));
    createInterface({ input: backend.stderr! }).on('line', (line) => logged.push(line));
    // The composition root reads secretEnv from the environment: the test process's, here.
    process.env['HOOK_SECRET'] = hookSecret;
    process.env['WEBHOOK_SECRET'] = webhookSecret;
    const webhooks = config['webhooks'] as Record<string, unknown>;
    const h = await startHerald({ ...config, webhooks: { ...webhooks, batchWindowMs: 20 }, channels: { namespaces: [{ name: 'team', clientPublish: true }, { name: 'chat', clientPublish: true }] } });
    try {
      // The backend listens once it answers; a connection signed in by its cookie alone.
      const client = await eventually(async () => {
        const c = await openWs(h.wsUrl, { headers: { cookie: 'session=s3cr3t' } });
        try {
          await c.connect();
          return c;
        } catch {
          await c.close().catch(() => undefined);
          return undefined;
        }
      }, 'the backend up and the cookie sign-in', 15000);
      await client.call('subscribe', { channel: 'team:red' });
      assert.equal(await client.callError('subscribe', { channel: 'team:blue' }), 1403, 'not in this team');
      await client.call('subscribe', { channel: 'chat:lobby' });
      await client.call('publish', { channel: 'chat:lobby', data: { text: 'oh darn' } });
      const [publication] = await client.waitPublications('chat:lobby', 1);
      assert.deepEqual(publication.data, { text: 'oh ****' }, 'moderated by the publish hook');
      const time = await client.call('rpc', { method: 'time' });
      assert.equal(typeof time.data.now, 'number');
      const stranger = await openWs(h.wsUrl);
      stranger.send({ id: 1, method: 'connect', params: {} });
      assert.deepEqual(await stranger.waitClose(10000), { code: 4501, reason: 'sign in first' });
      await client.close();
      // The backend verified the webhooks and logged each event once.
      const seen = await eventually(async () => {
        const lines = logged.filter((line) => line.startsWith('webhook '));
        return lines.includes('webhook channel_vacated team:red ') ? lines : undefined;
      }, 'the backend logging the webhooks', 15000);
      assert.ok(seen.includes('webhook channel_occupied team:red '), seen.join('\n'));
      assert.ok(seen.includes('webhook member_added team:red alice'), seen.join('\n'));
      assert.equal(new Set(seen).size, seen.length, 'each event once');
    } finally {
      await h.close();
      backend.kill('SIGKILL');
      delete process.env['HOOK_SECRET'];
      delete process.env['WEBHOOK_SECRET'];
    }
  });
});
