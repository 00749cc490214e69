/**
 * What `herald serve` loads when its configuration does not use it
 * (docs/performance.md, footprint): a production config on the default
 * engine, with the console on the internal listener and no hooks, Redis
 * or cluster, must listen without loading the Redis client, the hook
 * sandbox, the proxy hooks' HTTP client, the server SDK, the chat demo,
 * the lean HTTP layer (on, but loaded at the first connection), or the libraries of the console's
 * sign-in methods (passkeys:
 * @simplewebauthn/server, tldts; OIDC: openid-client, undici; TOTP:
 * otplib, uqr), which load at their first use; nor prom-client's index
 * (@opentelemetry/api), @fastify/rate-limit's index (ip-address, loaded at
 * the first IPv6 peer) or the CLI's other commands. Each of them costs the
 * idle process heap. The module list comes from a `module.registerHooks`
 * load hook in the child (`--import`).
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { waitUntil } from '../helpers/rt-util.ts';

/** Packages (node_modules) and Herald modules that an idle server of this config must not have loaded. */
const NOT_LOADED = [
  '/node_modules/ioredis/',
  '/node_modules/quickjs-emscripten',
  '/node_modules/@jitl/',
  '/server-sdk/',
  '/src/app/demo.ts',
  '/src/cluster/primary.ts',
  '/src/hooks/proxy-',
  '/node_modules/@simplewebauthn/',
  '/node_modules/@peculiar/',
  '/node_modules/tldts',
  '/node_modules/openid-client/',
  '/node_modules/oauth4webapi/',
  '/node_modules/undici/',
  '/node_modules/otplib/',
  '/node_modules/@otplib/',
  '/node_modules/uqr/',
  // The lean HTTP layer (http.leanLongPoll, http.leanPublish: on) loads at the first connection: 4.4 MiB of the idle
  // process's RSS with its WASM parser (edge/first-connection.ts).
  '/src/edge/lean-http.ts',
  '/src/edge/llhttp.ts',
  // prom-client's index (its Pushgateway client, the cluster aggregator, and @opentelemetry/api through its process CPU
  // metric): 0.75 MiB of heap; observability/prometheus.ts takes its metric classes and default metrics by path.
  '/node_modules/@opentelemetry/',
  '/node_modules/prom-client/index.js',
  // @fastify/rate-limit's index and ip-address: its normalizeIP is needed for IPv6 peers only (edge/client-address.ts).
  '/node_modules/@fastify/rate-limit/index.js',
  '/node_modules/ip-address/',
  // The CLI's other commands load when one of them runs (cli/main.ts commandTable).
  '/src/cli/admin-command.ts',
  '/src/cli/api-commands.ts',
  '/src/cli/apps-command.ts',
  '/src/cli/bench-command.ts',
  '/src/cli/init.ts',
  '/src/cli/webhooks-command.ts',
];

it('an idle production server on the default engine does not load what its config does not use', { timeout: 120000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-startup-modules-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const hook = join(dir, 'record-loads.mjs');
  const list = join(dir, 'loaded.txt');
  writeFileSync(
    hook,
    `import { registerHooks } from 'node:module';
import { appendFileSync } from 'node:fs';
registerHooks({ load(url, context, next) { appendFileSync(${JSON.stringify(list)}, url + '\\n'); return next(url, context); } });
`,
  );
  const config = {
    mode: 'production',
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    process: { allowRoot: true },
    stateDir: join(dir, 'state'),
    channels: { namespaces: [{ name: 'chat', allowAnonymous: true }] },
  };
  const configPath = join(dir, 'herald.json');
  writeFileSync(configPath, JSON.stringify(config), { mode: 0o600 });
  const herald = new HeraldProcess(['--config', configPath], dir, {
    NODE_OPTIONS: `--import=${hook}`,
    HERALD_AUTH_HMAC_SECRET: randomBytes(32).toString('base64url'),
    HERALD_API_KEY: randomBytes(32).toString('base64url'),
  });
  t.after(() => herald.stop('SIGKILL'));
  await herald.listeningPort();
  // The console's line is the last one of start-up.
  await waitUntil(() => herald.logs.find((l) => l['msg'] === 'admin console'), { label: 'admin console line' });
  const loaded = readFileSync(list, 'utf8').split('\n');
  assert.ok(loaded.some((url) => url.includes('/src/app/app.ts')), 'the hook saw the server load');
  const found = NOT_LOADED.map((part) => [part, loaded.find((url) => url.includes(part))]).filter(([, url]) => url !== undefined);
  assert.deepEqual(found, [], 'loaded at start although the config does not use them');
});
