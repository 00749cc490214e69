/**
 * The first minutes with the `herald` command, end to end: the real binary
 * runs as a child process in a temporary directory.
 *
 * - `check-config` runs the checks `serve` runs and reports every problem
 *   at once, each with its fix, never quoting a secret;
 * - a `serve` refused after the development secrets were made keeps the
 *   development API key and shows it at the first start that succeeds;
 *   later starts say how to get a key; `keys list` shows the development
 *   key by name and prefix;
 * - a port conflict names the listener and how to move it, in one line;
 * - every command has `--help`, and an option of another command is refused;
 * - `packages/server/bin/herald.js` on an older Node says which Node it needs, in one line.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HERALD_MAIN, HeraldProcess } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = HERALD_MAIN;
const bin = join(root, 'bin/herald.js');
const asRoot = process.getuid?.() === 0;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'herald-cli-'));
  dirs.push(dir);
  return dir;
}

function run(args: readonly string[], options: { cwd?: string; env?: Record<string, string>; node?: string; entry?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      options.node ?? process.execPath,
      [...SOURCE_NODE_ARGS, options.entry ?? main, ...args],
      { cwd: options.cwd ?? root, timeout: 30000, env: { PATH: process.env['PATH'] ?? '', ...options.env } },
      (error, stdout, stderr) => resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
    );
  });
}

/** The `  - problem` lines of a refusal. */
function problemLines(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith('  - '))
    .map((line) => line.slice(4));
}

function assertNoStackTrace(text: string): void {
  assert.doesNotMatch(text, /^\s+at /m, `a stack trace:\n${text}`);
}

function occupyPort(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port }));
  });
}

describe('herald check-config runs the checks herald serve runs', { timeout: 60000 }, () => {
  test('every problem at once, each with its fix, the same for both, and never a secret', async () => {
    const dir = tempDir();
    const secret = 'Written-In-The-File-' + randomBytes(12).toString('hex');
    const file = join(dir, 'herald.json');
    writeFileSync(
      file,
      JSON.stringify({
        lisen: { port: 8000 },
        log: { level: 'loud' },
        auth: { hmacSecret: secret },
        tls: { certFile: join(dir, 'missing-cert.pem'), keyFile: join(dir, 'missing-key.pem') },
      }),
    );
    const env = { HERALD_API_KEY: 'Zq9' };
    const [check, serve] = await Promise.all([run(['check-config', '--config', file], { cwd: dir, env }), run(['serve', '--config', file], { cwd: dir, env })]);
    for (const answer of [check, serve]) {
      assert.equal(answer.code, 2, answer.stderr);
      const problems = problemLines(answer.stderr);
      const expected = [
        /^\/lisen: unknown option; did you mean "listen"\?/,
        /^\/log\/level: must be one of: "fatal", "error", "warn", "info", "debug", "trace", "silent" \(got loud\)/,
        /^\/auth\/hmacSecret: production mode does not take a secret written in the config file .*auth\.hmacSecretFile.*HERALD_AUTH_HMAC_SECRET/,
        /^HERALD_API_KEY: too short; .*at least 32 .*openssl rand -base64 32/,
        /^\/tls\/certFile: cannot read .*missing-cert\.pem: no such file/,
        /^\/tls\/keyFile: cannot read .*missing-key\.pem: no such file/,
      ];
      for (const pattern of expected) assert.ok(problems.some((p) => pattern.test(p)), `no problem matches ${pattern} in:\n${answer.stderr}`);
      for (const text of [answer.stdout, answer.stderr]) {
        assert.ok(!text.includes(secret), 'the secret is not echoed');
        assert.ok(!text.includes('Zq9'), 'the short API key is not echoed');
      }
      assertNoStackTrace(answer.stderr);
    }
    // The same checks: serve refuses root where check-config warns.
    const rootProblem = /^\/process\/allowRoot: /;
    assert.deepEqual(
      problemLines(serve.stderr).filter((p) => !rootProblem.test(p)),
      problemLines(check.stderr),
    );
    assert.equal(problemLines(serve.stderr).some((p) => rootProblem.test(p)), asRoot);
    assert.equal(/^warning: running as root: .*process\.allowRoot/m.test(check.stderr), asRoot);
  });

  test('a good production config passes; the root warning honours process.allowRoot; secret files and API keys are checked', async () => {
    const dir = tempDir();
    const secretFile = join(dir, 'hmac');
    writeFileSync(secretFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    const config = { auth: { hmacSecretFile: secretFile }, listen: { port: 0 }, admin: { port: 0 } };
    const file = join(dir, 'herald.json');
    const allowed = join(dir, 'allowed.json');
    writeFileSync(file, JSON.stringify(config));
    writeFileSync(allowed, JSON.stringify({ ...config, process: { allowRoot: true } }));
    const env = { HERALD_API_KEY: randomBytes(24).toString('base64url') };
    const [plain, allowRoot] = await Promise.all([run(['check-config', '--config', file], { cwd: dir, env }), run(['check-config', '--config', allowed], { cwd: dir, env })]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /herald\.json: ok \(production mode\)/);
    assert.equal(/^warning: running as root/m.test(plain.stderr), asRoot);
    assert.equal(allowRoot.code, 0, allowRoot.stderr);
    assert.equal(allowRoot.stderr, '', 'no warning with process.allowRoot');

    // a short secret in its file, and no API key at all
    const shortSecret = 'short-Kw4';
    writeFileSync(secretFile, shortSecret + '\n');
    const refused = await run(['check-config', '--config', allowed], { cwd: dir });
    assert.equal(refused.code, 2);
    const problems = problemLines(refused.stderr);
    assert.ok(problems.some((p) => /^\/auth\/hmacSecretFile: the secret in .*hmac is shorter than 32 characters \(generate one: `openssl rand -base64 32 > .*hmac`\)/.test(p)), refused.stderr);
    assert.ok(
      problems.some((p) => /^\/api\/keys: production mode needs at least one API key: set HERALD_API_KEY .*herald keys create --config .*allowed\.json/.test(p)),
      refused.stderr,
    );
    assert.ok(!refused.stderr.includes(shortSecret), 'the short secret is not echoed');
  });

  test('a JSON syntax error gives the line and column', async () => {
    const dir = tempDir();
    const file = join(dir, 'herald.json');
    writeFileSync(file, '{\n  "listen": { "port": 8000 },\n  "log": { "level": "info" }\n  "mode": "production"\n}\n');
    const answer = await run(['check-config', '--config', file], { cwd: dir });
    assert.equal(answer.code, 2);
    assert.match(answer.stderr, /herald\.json:4:3: not valid JSON: expected "," or "}"/);
    assertNoStackTrace(answer.stderr);
  });
});

describe('the development API key is never lost', { timeout: 90000 }, () => {
  test('a refused start keeps it; the first start that succeeds shows it; later starts say how to get one; keys list shows it by name and prefix', async () => {
    const dir = tempDir();
    const blocker = await occupyPort();
    let refused: Run;
    try {
      refused = await run(['serve', '--port', String(blocker.port), '--admin-port', '0'], { cwd: dir });
    } finally {
      blocker.server.close();
    }
    assert.notEqual(refused.code, 0);
    assert.match(
      refused.stderr,
      new RegExp(`^herald: the public listener cannot listen on 127\\.0\\.0\\.1:${blocker.port}: the port is in use .*--port PORT, HERALD_PORT=PORT or listen\\.port`, 'm'),
    );
    assert.match(refused.stderr, /development API key has not been shown yet/);
    assert.doesNotMatch(refused.stderr, /hk_/, 'not shown by a start that failed');
    assertNoStackTrace(refused.stderr);
    const storedBefore = readFileSync(join(dir, '.herald', 'dev-secrets.json'), 'utf8');

    const listed = await run(['keys', 'list', '--json'], { cwd: dir });
    assert.equal(listed.code, 0, listed.stderr);
    const development = (JSON.parse(listed.stdout) as { name: string; source: string; scopes: string[]; keyPrefix?: string; sha256Prefix: string }[]).find(
      (k) => k.name === 'development',
    );
    assert.ok(development !== undefined, listed.stdout);
    assert.equal(development.source, 'development');
    assert.deepEqual(development.scopes, ['admin']);
    assert.match(development.keyPrefix ?? '', /^hk_[A-Za-z0-9_-]{6}$/);
    const table = await run(['keys', 'list'], { cwd: dir });
    assert.match(table.stdout, /^development\s+admin\s+.*\s+development\s+hk_[A-Za-z0-9_-]{6}…$/m);

    const first = new HeraldProcess(['--port', '0', '--admin-port', '0'], dir);
    const key = await first.until(() => /^ {4}(hk_[A-Za-z0-9_-]{32})$/m.exec(first.stderr)?.[1], 'the development key');
    const port = await first.listeningPort();
    assert.equal(key.slice(0, 9), development.keyPrefix);
    assert.equal(createHash('sha256').update(key).digest('hex').slice(0, 12), development.sha256Prefix);
    assert.ok(storedBefore.includes(key), 'it was kept while it had not been shown');
    const info = await fetch(`http://127.0.0.1:${port}/api/info`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(info.status, 200, 'the key works');
    await first.stop();
    assert.ok(!readFileSync(join(dir, '.herald', 'dev-secrets.json'), 'utf8').includes(key), 'forgotten once shown, only its hash is kept');
    for (const listing of [listed.stdout, table.stdout]) assert.ok(!listing.includes(key.slice(3)), 'keys list never shows the key');

    const again = new HeraldProcess(['--port', '0', '--admin-port', '0'], dir);
    await again.listeningPort();
    await again.until(() => (/was shown at the first start/.test(again.stderr) ? true : undefined), 'the note about the key');
    assert.match(again.stderr, /Development API key "development" \(hk_[A-Za-z0-9_-]{6}…\)/);
    assert.match(again.stderr, /keys create --name \S+ --scopes admin/);
    assert.ok(!again.stderr.includes(key), 'not shown twice');
    await again.stop();
  });
});

describe('a port conflict names the listener and how to move it', { timeout: 60000 }, () => {
  test('the internal listener: --admin-port and HERALD_ADMIN_PORT move it', async () => {
    // Two starts at once: each in a directory of its own, since one Herald owns a state directory.
    const [flagDir, envDir] = [tempDir(), tempDir()];
    const blocker = await occupyPort();
    try {
      const [byFlag, byEnv] = await Promise.all([
        run(['serve', '--port', '0', '--admin-port', String(blocker.port)], { cwd: flagDir }),
        run(['serve', '--port', '0'], { cwd: envDir, env: { HERALD_ADMIN_PORT: String(blocker.port) } }),
      ]);
      for (const answer of [byFlag, byEnv]) {
        assert.notEqual(answer.code, 0);
        const lines = answer.stderr.split('\n').filter((line) => line.startsWith('herald:'));
        assert.equal(lines.length, 1, answer.stderr);
        assert.match(
          lines[0]!,
          new RegExp(`^herald: the internal listener \\(metrics, health\\) cannot listen on 127\\.0\\.0\\.1:${blocker.port}: the port is in use .*--admin-port PORT, HERALD_ADMIN_PORT=PORT or admin\\.port`),
        );
        assertNoStackTrace(answer.stderr);
      }
    } finally {
      blocker.server.close();
    }
  });
});

describe('every command has --help, and takes only its own options', { timeout: 60000 }, () => {
  test('--help', async () => {
    const names = ['serve', 'reload', 'token', 'keys', 'keys create', 'keys list', 'keys revoke', 'backup', 'restore', 'check-config', 'config-docs', 'webhooks', 'webhooks endpoints', 'webhooks list-dead', 'webhooks replay'];
    const answers: Run[] = [];
    for (let i = 0; i < names.length; i += 3) answers.push(...(await Promise.all(names.slice(i, i + 3).map((name) => run([...name.split(' '), '--help'])))));
    answers.forEach((answer, i) => {
      assert.equal(answer.code, 0, `${names[i]} --help: ${answer.stderr}`);
      assert.match(answer.stdout, /^Usage:/, names[i]);
      assert.ok(answer.stdout.includes(`herald ${names[i]}`), `${names[i]} --help names the command`);
    });
    const overview = await run(['--help']);
    for (const name of ['serve', 'reload', 'token', 'keys', 'backup', 'restore', 'check-config', 'config-docs', 'webhooks']) assert.match(overview.stdout, new RegExp(`^  ${name} `, 'm'));
    assert.match(answers[0]!.stdout, /--admin-port PORT/);
  });

  test('an option that belongs to another command is refused, not ignored', async () => {
    const cases: [string[], string, string][] = [
      [['token', '--sub', 'alice', '--workers', '3'], 'token', '--workers'],
      [['check-config', '--config', 'x.json', '--port', '1'], 'check-config', '--port'],
      [['config-docs', '--sub', 'alice'], 'config-docs', '--sub'],
      [['serve', '--sub', 'alice'], 'serve', '--sub'],
      [['reload', '--json'], 'reload', '--json'],
      [['keys', 'list', '--name', 'x'], 'keys list', '--name'],
      [['keys', 'create', '--grace', '1h', '--name', 'x', '--scopes', 'read'], 'keys create', '--grace'],
      [['backup', 'copy.db', '--name', 'x'], 'backup', '--name'],
      [['restore', 'copy.db', '--grace', '1h'], 'restore', '--grace'],
    ];
    const dir = tempDir();
    const answers: Run[] = [];
    for (let i = 0; i < cases.length; i += 3) answers.push(...(await Promise.all(cases.slice(i, i + 3).map(([args]) => run(args, { cwd: dir })))));
    answers.forEach((answer, i) => {
      const [args, name, foreign] = cases[i]!;
      assert.equal(answer.code, 2, `${args.join(' ')}: ${answer.stderr}`);
      assert.match(answer.stderr, new RegExp(`^herald ${name}: unknown option ${foreign}; .*\\(herald ${name} --help\\)`));
      assert.equal(answer.stdout, '');
    });
    assert.ok(!existsSync(join(dir, '.herald')), 'nothing was started or written');
  });
});

describe('packages/server/bin/herald.js', { timeout: 30000 }, () => {
  const oldNode = '/usr/bin/node';
  const oldMajor = existsSync(oldNode) ? Number(/^v(\d+)/.exec(execFileSync(oldNode, ['--version'], { encoding: 'utf8' }))?.[1]) : undefined;
  const skip = oldMajor === undefined ? `${oldNode} not found` : oldMajor >= 24 ? `${oldNode} is Node ${oldMajor}, not an older one` : false;
  if (skip !== false) console.warn(`\n!!! SKIPPING the older-Node test of packages/server/bin/herald.js: ${skip}\n`);

  test('an older Node prints one clear line, no stack trace', { skip }, async () => {
    const answer = await run(['--help'], { node: oldNode, entry: bin });
    assert.equal(answer.code, 1);
    assert.equal(answer.stdout, '');
    assert.match(answer.stderr, /^Herald needs Node 24; run it through npm scripts or install Node 24 \(this is Node v\d+\.\d+\.\d+\)\n$/);
  });

  test('Node 24 runs the command', async () => {
    const answer = await run(['--help'], { entry: bin });
    assert.equal(answer.code, 0, answer.stderr);
    assert.match(answer.stdout, /^herald \d+\.\d+\.\d+/);
  });
});
