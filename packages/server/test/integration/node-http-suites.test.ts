/**
 * The suites that cover the long-poll routes, the SSE stream, the server
 * API's publish routes, WebSocket upgrades and hostile HTTP input, run again
 * with `http.leanLongPoll`, `http.leanPublish`, `http.leanWebSocket` and
 * `http.leanSse` off (HERALD_TEST_NODE_HTTP=1, which test/helpers/herald.ts
 * reads): the lean layer (src/edge/lean-http.ts, lean-upgrade.ts) serves
 * those by default, node:http serves them with TLS or the switches off, and
 * CI checks both against the same tests. One child
 * `node --test` runs them; this test fails with the names of the child's
 * failing tests. The child inherits the environment (HERALD_REQUIRE_SERVICES
 * included). Skipped when the whole run already has the layer off.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Relative to packages/server/test. lean-http*.test.ts compare the layer with node:http in every run. */
const SUITES = [
  'integration/long-poll.test.ts',
  'integration/sse.test.ts',
  'integration/slow-consumer.test.ts',
  'integration/batched-frames.test.ts',
  'integration/recovery-stress.test.ts',
  'integration/fast-routes.test.ts',
  'integration/api-lean-path.test.ts',
  'integration/api.test.ts',
  'integration/api-batch.test.ts',
  'integration/api-idempotency.test.ts',
  'integration/limits.test.ts',
  'integration/front-drain.test.ts',
  'integration/shutdown.test.ts',
  'integration/native-apps.test.ts',
  'integration/error-details.test.ts',
  'integration/websocket.test.ts',
  'integration/websocket-open.test.ts',
  'security/smuggling.test.ts',
  'security/slowloris.test.ts',
  'security/http-bodies.test.ts',
  'security/headers.test.ts',
  'security/limits.test.ts',
  'security/origin.test.ts',
  'security/fuzz.test.ts',
  'security/json-depth.test.ts',
  'security/prototype-pollution.test.ts',
  'security/handshake.test.ts',
  'security/frames.test.ts',
  'security/websocket-open.test.ts',
];

/** As test/helpers/herald.ts `nodeHttpRun` (not imported: that module loads the server). */
const NODE_HTTP_RUN = process.env['HERALD_TEST_NODE_HTTP'] === '1';

const TEST_ROOT = fileURLToPath(new URL('../', import.meta.url));

interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  tap: string;
  stderr: string;
}

function runChild(signal: AbortSignal): Promise<ChildRun> {
  // NODE_TEST_CONTEXT would make the child report to this runner instead of running on its own.
  const { NODE_TEST_CONTEXT: _context, ...env } = process.env;
  const conditions = process.execArgv.filter((arg) => arg.startsWith('--conditions') || arg === '-C');
  const args = [...conditions, '--test', '--test-concurrency=1', '--test-timeout=180000', '--test-reporter=tap', ...SUITES];
  const child = spawn(process.execPath, args, {
    cwd: TEST_ROOT,
    env: { ...env, HERALD_TEST_NODE_HTTP: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
    signal,
  });
  let tap = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (tap += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, exitSignal) => resolve({ code, signal: exitSignal, tap, stderr }));
  });
}

/** Each `not ok` line of the TAP output (indented by depth) with its file and the first line of its error. */
function failures(tap: string): string[] {
  const lines = tap.split('\n');
  const out: string[] = [];
  for (const [index, line] of lines.entries()) {
    const failed = /^(\s*)not ok \d+ - (.*)$/.exec(line);
    if (failed === null) continue;
    const yaml = lines.slice(index + 1, lines.findIndex((next, at) => at > index && /^\s*\.\.\.$/.test(next)));
    const location = /^\s*location: '(?:.*\/test\/)?([^:']+)/.exec(yaml.find((next) => /^\s*location: /.test(next)) ?? '')?.[1];
    const errorAt = yaml.findIndex((next) => /^\s*error: /.test(next));
    let error = errorAt === -1 ? '' : yaml[errorAt]!.trim().slice('error: '.length);
    if (error === '|-' || error === '|') error = yaml[errorAt + 1]?.trim() ?? '';
    out.push(`${failed[1]}${failed[2]}${location === undefined ? '' : ` [${location}]`}${error === '' ? '' : `: ${error}`}`);
  }
  return out;
}

test(
  `the long-poll, SSE, publish and hostile-input suites pass on node:http, the lean HTTP layer off (${SUITES.length} files)`,
  { skip: NODE_HTTP_RUN ? 'the whole run has the lean HTTP layer off (HERALD_TEST_NODE_HTTP=1)' : false, timeout: 15 * 60_000 },
  async (t) => {
    const run = await runChild(t.signal);
    const passed = /^# pass (\d+)$/m.exec(run.tap)?.[1];
    const failedNames = failures(run.tap);
    assert.ok(
      run.code === 0 && failedNames.length === 0,
      `with HERALD_TEST_NODE_HTTP=1 the child node --test exited ${run.code ?? run.signal}; failing:\n` +
        `${failedNames.join('\n') || '(no failing test in its output)'}\n--- stderr ---\n${run.stderr.slice(-4000)}`,
    );
    // A run that found no test files or no tests passes nothing: count them.
    assert.ok(Number(passed) > 0, `no test passed in the child run:\n${run.tap.slice(-2000)}`);
    t.diagnostic(`${passed} tests passed on node:http`);
  },
);
