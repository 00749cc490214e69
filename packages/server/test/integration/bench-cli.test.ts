/**
 * `herald bench` end to end: the real binary as a child process against a
 * real server on an ephemeral port, with a small N. The numbers are checked
 * for consistency (every publication reached every subscriber once, counts
 * add up, percentiles in order), never for speed. Also: tokens minted from
 * the server's config file, refusals explained before the run, Ctrl-C stops
 * cleanly and the server sees every subscriber go.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

let h: TestHerald;
let dir: string;
before(async () => {
  h = await startHerald();
  dir = mkdtempSync(join(tmpdir(), 'herald-bench-'));
});
after(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

/** `herald bench ARGS` in an empty directory (no ./.herald), with only PATH in the environment. */
function bench(args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, 'bench', ...args], { cwd: dir, timeout: 120000, env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
    );
  });
}

interface Report {
  ok: boolean;
  stopped: string | null;
  transport: string;
  auth: string;
  subscribers: { requested: number; subscribed: number; failed: number; throttledAttempts: number };
  connect: { seconds: number; p50Ms: number; p99Ms: number; maxMs: number };
  publish: { messages: number; sent: number; accepted: number; failed: number; payloadBytes: number };
  deliveries: { expected: number; delivered: number; ratio: number; perSecond: number; duplicates: number; outOfOrder: number; completeSubscribers: number; foreign: number };
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  lostConnections: number;
  errors: { phase: string; what: string; count: number; hint?: string }[];
}

function assertConsistent(report: Report, subscribers: number, messages: number): void {
  assert.equal(report.ok, true, JSON.stringify(report));
  assert.equal(report.stopped, null);
  assert.deepEqual(report.subscribers, { requested: subscribers, subscribed: subscribers, failed: 0, throttledAttempts: 0 });
  const p = report.publish;
  assert.deepEqual([p.messages, p.sent, p.accepted, p.failed], [messages, messages, messages, 0]);
  const d = report.deliveries;
  assert.equal(d.expected, subscribers * messages);
  assert.equal(d.delivered, d.expected);
  assert.equal(d.ratio, 1);
  assert.equal(d.duplicates, 0);
  assert.equal(d.outOfOrder, 0);
  assert.equal(d.completeSubscribers, subscribers);
  assert.equal(d.foreign, 0);
  assert.ok(d.perSecond > 0);
  const l = report.latencyMs;
  assert.ok(l.p50 > 0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max, JSON.stringify(l));
  assert.ok(report.connect.seconds > 0 && report.connect.p50Ms <= report.connect.p99Ms && report.connect.p99Ms <= report.connect.maxMs);
  assert.equal(report.lostConnections, 0);
  assert.deepEqual(report.errors, []);
}

describe('herald bench', { timeout: 180000 }, () => {
  test('every transport: every publication reaches every subscriber, and the numbers add up', async () => {
    for (const transport of ['websocket', 'sse', 'long-poll']) {
      const run = await bench(['--url', h.url, '--key', h.apiKey, '--channel', 'public:bench', '--subscribers', '12', '--messages', '8', '--rate', '40', '--transport', transport, '--payload-bytes', '300', '--json']);
      assert.equal(run.code, 0, `${transport}: ${run.stderr}`);
      const report = JSON.parse(run.stdout) as Report;
      assert.equal(report.transport, transport);
      assert.equal(report.auth, 'anonymous');
      assert.equal(report.publish.payloadBytes, 300);
      assertConsistent(report, 12, 8);
    }
  });

  test('--config: one token per subscriber, signed with the secret the config names; the text report', async () => {
    const secretFile = join(dir, 'hmac-secret');
    writeFileSync(secretFile, h.hmacSecret + '\n', { mode: 0o600 });
    const configFile = join(dir, 'server.json');
    writeFileSync(configFile, JSON.stringify({ listen: { port: 0 }, auth: { hmacSecretFile: secretFile } }));
    // A channel of the default namespace: no anonymous access there.
    const json = await bench(['--config', configFile, '--url', h.url, '--key', h.apiKey, '--subscribers', '10', '--messages', '5', '--rate', '50', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout) as Report;
    assert.match(report.auth, /^one token per subscriber, signed with the HS256 secret of .*server\.json$/);
    assertConsistent(report, 10, 5);

    const text = await bench(['--config', configFile, '--url', h.url, '--key', h.apiKey, '--subscribers', '10', '--messages', '5', '--rate', '50', '--transport', 'sse']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^ {2}connect +10 of 10 subscribed in /m);
    assert.match(text.stdout, /^ {2}delivered +50 of 50, ratio 1\.0000 \(10 of 10 subscribers got every publication\)$/m);
    assert.match(text.stdout, /^ {2}latency +p50 [0-9.]+ ms {3}p90 [0-9.]+ ms {3}p99 [0-9.]+ ms {3}max [0-9.]+ ms$/m);
    assert.match(text.stdout, /^ {2}errors +none$/m);
    assert.match(text.stdout, /^OK: every publication reached every subscriber, once and in order\.$/m);
    assert.match(text.stderr, /publishing 5 × 100 B at 50\/s/);

    const portZero = await bench(['--config', configFile, '--key', h.apiKey]);
    assert.equal(portZero.code, 2);
    assert.match(portZero.stderr, /listen\.port 0 .*give --url/);
  });

  test('refusals are explained before the run: a wrong key, a channel that needs a token', async () => {
    const [wrongKey, anonymous] = await Promise.all([
      bench(['--url', h.url, '--key', 'not-a-key-of-this-server-0123456789', '--channel', 'public:bench']),
      bench(['--url', h.url, '--key', h.apiKey, '--channel', 'lobby']),
    ]);
    assert.equal(wrongKey.code, 2);
    assert.equal(wrongKey.stdout, '');
    assert.match(wrongKey.stderr, /a first publish to public:bench at .* failed: HTTP 401 unauthorized\n {2}the server does not know this API key/);
    assert.ok(!wrongKey.stderr.includes('not-a-key-of-this-server'), 'the key is not echoed');
    assert.equal(anonymous.code, 2);
    assert.match(anonymous.stderr, /the first subscriber could not subscribe to lobby: reply 118 anonymous_not_allowed\n {2}the namespace of lobby takes no anonymous connections: give --config/);
  });

  test('Ctrl-C stops it: the report so far, exit code 130, and every subscriber gone from the server', async () => {
    const channel = 'public:bench-interrupted';
    const child = spawn(
      process.execPath,
      [...SOURCE_NODE_ARGS, HERALD_MAIN, 'bench', '--url', h.url, '--key', h.apiKey, '--channel', channel, '--subscribers', '6', '--messages', '1000', '--rate', '5', '--json'],
      { cwd: dir, env: { PATH: process.env['PATH'] ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const clients = async () => ((await h.api('presence_stats', { channel })).body as { num_clients?: number }).num_clients;
    // Publishing starts once every subscriber is subscribed: offset 1 is the bench's first check, 2 its first publication.
    const offset = async () => ((await h.api('history', { channel })).body as { offset?: number }).offset ?? 0;
    await eventually(async () => ((await offset()) >= 2 ? true : undefined), 'the first publication', 30000);
    assert.equal(await clients(), 6);
    child.kill('SIGINT');
    assert.equal(await exited, 130);
    const report = JSON.parse(stdout) as Report;
    assert.equal(report.stopped, 'interrupted');
    assert.equal(report.ok, false);
    assert.equal(report.subscribers.subscribed, 6);
    assert.ok(report.publish.accepted < 1000);
    assert.ok(report.publish.accepted >= 1 && report.deliveries.delivered <= report.deliveries.expected);
    assert.equal(report.deliveries.duplicates, 0);
    await eventually(async () => ((await clients()) === 0 ? true : undefined), 'the subscribers to leave', 10000);
  });

  test('--help, per-command options, bounds', async () => {
    const [help, foreign, tooMany, transport, noKey] = await Promise.all([
      bench(['--help']),
      bench(['--sub', 'alice']),
      bench(['--key', 'k', '--subscribers', '10001']),
      bench(['--key', 'k', '--transport', 'carrier-pigeon']),
      bench([]),
    ]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: herald bench /);
    for (const option of ['--url', '--key', '--subscribers', '--messages', '--rate', '--transport', '--payload-bytes', '--channel', '--config', '--token', '--timeout', '--json', 'HERALD_URL', 'HERALD_KEY']) {
      assert.ok(help.stdout.includes(option), option);
    }
    assert.equal(foreign.code, 2);
    assert.match(foreign.stderr, /^herald bench: unknown option --sub; .*\(herald bench --help\)/);
    assert.equal(tooMany.code, 2);
    assert.match(tooMany.stderr, /--subscribers must be an integer from 1 to 10000/);
    assert.equal(transport.code, 2);
    assert.match(transport.stderr, /--transport must be one of websocket, sse, long-poll/);
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /--key KEY \(or HERALD_KEY\) is required/);
    const overview = await new Promise<string>((resolve) =>
      execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, '--help'], { cwd: dir }, (_error, stdout) => resolve(stdout)),
    );
    assert.match(overview, /^ {2}bench +measure fan-out against a running server/m, 'the command list names bench');
  });
});
