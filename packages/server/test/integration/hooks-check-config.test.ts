/**
 * `herald check-config` on proxy hooks in production mode: a plain
 * `http://` URL to a host that is not loopback is refused (the call would
 * cross the network in clear text), unless `hooks.allowPlainHttp`;
 * `https://` and loopback `http://` are accepted, and development mode
 * says nothing about it.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

/** `herald ARGS` as a user runs it: exit code and everything it printed. */
function cli(args: readonly string[]): Promise<{ code: number; text: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? 1), text: stdout + stderr });
    });
  });
}

describe('check-config: plain http hook URLs in production', { timeout: 120000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-hooks-check-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const secretFile = join(dir, 'hook-secret');
  writeFileSync(secretFile, randomBytes(32).toString('base64url'), { mode: 0o600 });
  const hmacSecretFile = join(dir, 'hmac-secret');
  writeFileSync(hmacSecretFile, randomBytes(32).toString('base64url'), { mode: 0o600 });

  async function check(mode: 'production' | 'development', hooks: Record<string, unknown>): Promise<{ code: number; text: string }> {
    const file = join(dir, `config-${randomBytes(4).toString('hex')}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        mode,
        stateDir: join(dir, 'state'),
        process: { allowRoot: true },
        auth: { hmacSecretFile },
        api: { keys: [{ name: 'k', sha256: createHash('sha256').update('key').digest('hex'), scopes: ['admin'] }] },
        hooks,
      }),
    );
    return cli(['check-config', '--config', file]);
  }

  it('refuses http:// to a host that is not loopback, naming the target, in production only', async () => {
    const hooks = { connect: { url: 'http://hooks.internal.example:8080/connect', secretFile }, namespaces: [{ name: 'chat', publish: { url: 'http://10.0.0.7/publish', secretFile } }] };
    const refused = await check('production', hooks);
    assert.equal(refused.code, 2, refused.text);
    assert.match(refused.text, /\/hooks\/connect\/url: production mode refuses a plain http:\/\/ hook URL to hooks\.internal\.example/);
    assert.match(refused.text, /\/hooks\/namespaces\/0\/publish\/url: production mode refuses a plain http:\/\/ hook URL to 10\.0\.0\.7/);
    const development = await check('development', hooks);
    assert.doesNotMatch(development.text, /plain http:\/\//, development.text);
    assert.equal(development.code, 0, development.text);
  });

  it('accepts https://, loopback http://, and http:// with hooks.allowPlainHttp', async () => {
    const accepted = [
      { connect: { url: 'https://hooks.internal.example/connect', secretFile } },
      { connect: { url: 'http://127.0.0.1:3000/connect', secretFile }, subscribe: { url: 'http://localhost:3000/s', secretFile }, rpc: { url: 'http://[::1]:3000/rpc', secretFile } },
      { connect: { url: 'http://hooks.internal.example/connect', secretFile }, allowPlainHttp: true },
    ];
    for (const hooks of accepted) {
      const answer = await check('production', hooks);
      assert.doesNotMatch(answer.text, /plain http:\/\//, JSON.stringify(hooks));
      assert.equal(answer.code, 0, `${JSON.stringify(hooks)}: ${answer.text}`);
    }
  });
});
