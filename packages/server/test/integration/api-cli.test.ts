/**
 * `herald publish | history | presence | disconnect | revoke`: the real CLI
 * as a child process against a running Herald, through @herald/server-sdk.
 *
 * - each command does what it says, and prints its result as JSON;
 * - the URL and key come from --url/--key or HERALD_URL/HERALD_KEY only
 *   (a key in the URL is refused), and the key is never printed;
 * - a refused call exits 1 with one line naming the API code; a usage
 *   error exits 2; each command has --help and refuses other commands' flags.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, unique } from '../helpers/herald-ws.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const sha256 = (key: string): string => createHash('sha256').update(key).digest('hex');
// A leading letter: one key in 64 would start with '-', which `--key KEY` reads as an option (parseArgs refuses it).
const ADMIN = `k${randomBytes(24).toString('base64url')}`;
const READER = `k${randomBytes(24).toString('base64url')}`;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** `herald ARGS` with only PATH and `env` in its environment; `input` on stdin. */
function herald(args: readonly string[], env: Record<string, string> = {}, input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { cwd: root, timeout: 30000, env: { PATH: process.env['PATH'] ?? '', ...env } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
    );
    child.stdin!.end(input);
  });
}

/** Runs the cases three at a time (the machine is shared). */
async function all<T>(cases: readonly T[], run: (c: T) => Promise<Run>): Promise<Run[]> {
  const answers: Run[] = [];
  for (let i = 0; i < cases.length; i += 3) answers.push(...(await Promise.all(cases.slice(i, i + 3).map(run))));
  return answers;
}

function assertNoKey(answer: Run, ...keys: string[]): void {
  for (const key of keys) assert.ok(!answer.stdout.includes(key) && !answer.stderr.includes(key), 'the key is never printed');
}

describe('herald publish, history, presence, disconnect, revoke', { timeout: 600000 }, () => {
  let h: TestHerald;
  let env: Record<string, string>;
  before(async () => {
    h = await startHerald({
      api: {
        keys: [
          { name: 'admin', sha256: sha256(ADMIN), scopes: ['admin'] },
          { name: 'reader', sha256: sha256(READER), scopes: ['read'] },
        ],
      },
    });
    env = { HERALD_URL: h.url, HERALD_KEY: ADMIN };
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await h.close();
  });

  test('publish: a JSON argument, stdin (-), a value after --; subscribers receive each', async () => {
    const channel = unique('chat:cli-pub');
    const c = await connectWs(h, 'alice');
    const sub = await c.call('subscribe', { channel });
    const first = await herald(['publish', channel, '{"text":"hello"}'], env);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(JSON.parse(first.stdout), { epoch: sub.epoch, offset: 1 });
    const piped = await herald(['publish', channel, '-'], env, '{"text":"from stdin"}\n');
    assert.equal(piped.code, 0, piped.stderr);
    const negative = await herald(['publish', '--url', h.url, '--key', ADMIN, channel, '--', '-1'], {});
    assert.equal(negative.code, 0, negative.stderr);
    assert.deepEqual(
      (await c.waitPublications(channel, 3)).map((p) => p.data),
      [{ text: 'hello' }, { text: 'from stdin' }, -1],
    );
    assertNoKey(negative, ADMIN);
  });

  test('publish --idempotency-key: a retry prints the first position and publishes nothing', async () => {
    const channel = unique('chat:cli-once');
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel });
    const first = await herald(['publish', channel, '"paid"', '--idempotency-key', 'order-1'], env);
    const retry = await herald(['publish', channel, '"paid"', '--idempotency-key', 'order-1'], env);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(retry.stdout, first.stdout);
    const bad = await herald(['publish', channel, '"no"', '--idempotency-key', 'has space'], env);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /bad_request/);
    assert.equal((await h.api('publish', { channel, data: 'marker' }, ADMIN)).status, 200);
    assert.deepEqual((await c.waitMarker(channel, 'marker')).map((p) => p.data), ['paid', 'marker']);
  });

  test('history (--limit, --reverse) and presence print the results', async () => {
    const channel = unique('chat:cli-hist');
    for (let i = 1; i <= 3; i++) assert.equal((await h.api('publish', { channel, data: { i } }, ADMIN)).status, 200);
    const watcher = await connectWs(h, 'bob', { info: { name: 'Bob' } });
    await watcher.call('subscribe', { channel });
    const [limited, reversed, presence] = await all(
      [['history', channel, '--limit', '2'], ['history', channel, '--reverse'], ['presence', channel]],
      (args) => herald(args, env),
    );
    for (const answer of [limited, reversed, presence]) assert.equal(answer!.code, 0, answer!.stderr);
    assert.deepEqual(JSON.parse(limited!.stdout).publications.map((p: any) => p.data), [{ i: 1 }, { i: 2 }]);
    assert.deepEqual(JSON.parse(reversed!.stdout).publications.map((p: any) => p.offset), [3, 2, 1]);
    assert.deepEqual(JSON.parse(presence!.stdout).clients[watcher.clientId], { client: watcher.clientId, user: 'bob', conn_info: { name: 'Bob' } });
  });

  test('disconnect (with and without --reconnect) and revoke (--user, --jti with --expires-at)', async () => {
    const user = unique('cli-user');
    const jti = unique('jti');
    const other = unique('cli-other');
    const a = await connectWs(h, user);
    const b = await connectWs(h, other);
    const c = await connectWs(h, unique('cli-third'), { jti });
    const [reconnect] = await all([['disconnect', user, '--reconnect']], (args) => herald(args, env));
    assert.equal(reconnect!.code, 0, reconnect!.stderr);
    assert.deepEqual(JSON.parse(reconnect!.stdout), { disconnected: 1 });
    assert.equal((await a.waitClose()).code, 3007);
    const d = await connectWs(h, user);
    const [plain, byUser, byJti] = await all(
      [['disconnect', user], ['revoke', '--user', other], ['revoke', '--jti', jti, '--expires-at', new Date(Date.now() + 3600000).toISOString()]],
      (args) => herald(args, env),
    );
    assert.equal(plain!.code, 0, plain!.stderr);
    assert.equal((await d.waitClose()).code, 3503);
    assert.equal(byUser!.code, 0, byUser!.stderr);
    assert.deepEqual(JSON.parse(byUser!.stdout), { disconnected: 1 });
    assert.equal((await b.waitClose()).code, 3507);
    assert.equal(byJti!.code, 0, byJti!.stderr);
    assert.deepEqual(JSON.parse(byJti!.stdout), { disconnected: 1 });
    assert.equal((await c.waitClose()).code, 3507);
  });

  test('refused calls: exit 1, one line with the API code and status, never the key', async () => {
    const wrong = randomBytes(24).toString('base64url');
    const [unauthorized, forbidden, badRequest, notAvailable] = await all(
      [
        { args: ['publish', 'chat:x', '1'], env: { HERALD_URL: h.url, HERALD_KEY: wrong } },
        { args: ['disconnect', 'alice', '--key', READER], env: { HERALD_URL: h.url } },
        { args: ['history', 'chat:x', '--limit', '20000'], env },
        { args: ['history', 'nohistory:x'], env },
      ],
      (c) => herald(c.args, c.env),
    );
    const line = (answer: Run | undefined, pattern: RegExp) => {
      assert.equal(answer!.code, 1, answer!.stderr);
      assert.equal(answer!.stdout, '');
      assert.match(answer!.stderr, pattern);
      assert.equal(answer!.stderr.split('\n').length, 2, 'one line');
      assertNoKey(answer!, wrong, READER, ADMIN);
    };
    line(unauthorized, /^herald publish: unauthorized \(HTTP 401\): missing or invalid credentials\n$/);
    line(forbidden, /^herald disconnect: forbidden \(HTTP 403\): /);
    line(badRequest, /^herald history: bad_request \(HTTP 400\): request body does not match the method schema: \/limit: /);
    line(notAvailable, /^herald history: not_available \(HTTP 400\): /);

    const closed = await startHerald();
    await closed.close();
    const [unreachable] = await all([closed.url], (url) => herald(['presence', 'chat:x'], { HERALD_URL: url, HERALD_KEY: ADMIN }));
    line(unreachable, /^herald presence: network_error: could not reach Herald: http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)\n$/);
  });

  test('the URL and key come from --url/--key or HERALD_URL/HERALD_KEY only', async () => {
    const hostUrl = new URL(h.url);
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['publish', 'chat:x', '1'], { HERALD_KEY: ADMIN }, /no server URL: give --url URL or set HERALD_URL/],
      [['publish', 'chat:x', '1'], { HERALD_URL: h.url }, /no API key: set HERALD_KEY or give --key KEY/],
      [['publish', 'chat:x', '1'], { HERALD_URL: h.url, HERALD_API_KEY: ADMIN }, /no API key/],
      [['publish', 'chat:x', '1', '--url', `http://herald:${ADMIN}@${hostUrl.host}`], { HERALD_KEY: ADMIN }, /URL carries credentials or a query/],
      [['publish', 'chat:x', '1', '--url', `${h.url}/?key=${ADMIN}`], {}, /URL carries credentials or a query/],
      [['publish', 'chat:x', '1', '--key', `${ADMIN}\u0001`], { HERALD_URL: h.url }, /apiKey must be a non-empty string of visible ASCII/],
      [['publish', 'chat:x', '1', '--url', 'ftp://example.com'], { HERALD_KEY: ADMIN }, /url must be http or https/],
    ];
    const answers = await all(cases, ([args, caseEnv]) => herald(args, caseEnv));
    answers.forEach((answer, i) => {
      assert.equal(answer.code, 2, `case ${i}: ${answer.stderr}`);
      assert.match(answer.stderr, cases[i]![2]);
      assertNoKey(answer, ADMIN);
    });
  });

  test('usage errors: exit 2, nothing sent', async () => {
    const channel = unique('chat:cli-usage');
    const cases: [string[], RegExp][] = [
      [['publish', channel, 'hello'], /^herald publish: the value is not JSON \(a string needs its quotes: '"hello"'\)/],
      [['publish', channel, '{"__proto__":{"x":1}}'], /__proto__/],
      [['publish', channel], /^herald publish: <json\|-> missing \(herald publish --help\)/],
      [['publish', channel, '1', '2'], /^herald publish: unexpected argument "2"/],
      [['history', channel, '--limit', 'ten'], /--limit must be a whole number/],
      [['revoke'], /give exactly one of --user USER and --jti JTI/],
      [['revoke', '--user', 'u', '--jti', 'j'], /give exactly one of/],
      [['revoke', '--user', 'u', '--expires-at', '1'], /--expires-at goes with --jti/],
      [['revoke', '--jti', 'j', '--expires-at', 'tomorrow'], /--expires-at must be unix seconds or an ISO 8601 time/],
    ];
    const answers = await all(cases, ([args]) => herald(args, env));
    answers.forEach((answer, i) => {
      assert.equal(answer.code, 2, `${cases[i]![0].join(' ')}: ${answer.stderr}`);
      assert.match(answer.stderr, cases[i]![1]);
      assert.equal(answer.stdout, '');
    });
    assert.deepEqual((await h.api('history', { channel }, ADMIN)).body.offset, 0, 'nothing was published');
  });

  test('--help for each command, and flags of other commands refused', async () => {
    const names = ['publish', 'history', 'presence', 'disconnect', 'revoke'];
    const helps = await all(names, (name) => herald([name, '--help']));
    helps.forEach((answer, i) => {
      assert.equal(answer.code, 0, answer.stderr);
      assert.match(answer.stdout, /^Usage:/);
      assert.ok(answer.stdout.includes(`herald ${names[i]}`));
      assert.match(answer.stdout, /HERALD_URL/);
      assert.match(answer.stdout, /HERALD_KEY/);
    });
    const overview = await herald(['--help']);
    for (const name of names) assert.match(overview.stdout, new RegExp(`^  ${name} `, 'm'));
    const cases: [string[], string, string][] = [
      [['publish', 'chat:x', '1', '--limit', '3'], 'publish', '--limit'],
      [['history', 'chat:x', '--reconnect'], 'history', '--reconnect'],
      [['presence', 'chat:x', '--jti', 'j'], 'presence', '--jti'],
      [['disconnect', 'u', '--user', 'u'], 'disconnect', '--user'],
      [['revoke', '--user', 'u', '--config', 'x.json'], 'revoke', '--config'],
      [['token', '--sub', 'u', '--url', 'http://x'], 'token', '--url'],
    ];
    const answers = await all(cases, ([args]) => herald(args, env));
    answers.forEach((answer, i) => {
      const [args, name, foreign] = cases[i]!;
      assert.equal(answer.code, 2, `${args.join(' ')}: ${answer.stderr}`);
      assert.match(answer.stderr, new RegExp(`^herald ${name}: unknown option ${foreign}; .*\\(herald ${name} --help\\)`));
    });
  });
});
