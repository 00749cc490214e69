/**
 * `herald admin` on its own (the running-server cases are in
 * test/cluster/console-sessions.test.ts): the password typed on a terminal
 * is not echoed (a real pseudo-terminal through util-linux `script`; the
 * test skips loudly without it), two different entries are refused, bad
 * names and roles are refused with the rule, the memory engine is refused
 * with the reason, and every change is in the audit log as `cli:<user>`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { missingService } from '../helpers/services.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';

function hasScript(): boolean {
  try {
    execFileSync('script', ['--version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

const command = (args: readonly string[], config: string) => [...SOURCE_NODE_ARGS, HERALD_MAIN, 'admin', ...args, '--config', config];

/**
 * Runs FILE ARGS; each `input` entry is written once the output holds its
 * prompt (a terminal echoes what is typed before the program turns echo off:
 * type only when asked, as a person does).
 */
function run(file: string, args: readonly string[], input: readonly { prompt: string; text: string }[], cwd: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd, env: { PATH: process.env['PATH'] ?? '' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let next = 0;
    const feed = () => {
      while (next < input.length && out.split(input[next]!.prompt).length - 1 >= countBefore(next)) {
        child.stdin.write(input[next]!.text);
        next++;
      }
    };
    // The n-th input waits for as many of its prompt as inputs up to it with that prompt.
    const countBefore = (n: number) => input.slice(0, n + 1).filter((i) => i.prompt === input[n]!.prompt).length;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      feed();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
      feed();
    });
    child.on('error', reject);
    // stdin stays open while typing: its end would reach the terminal as end-of-file.
    child.on('exit', (code) => {
      child.stdin.destroy();
      resolve({ code, out });
    });
    if (input.length === 0) child.stdin.end();
  });
}

describe('herald admin', { timeout: 60000 }, () => {
  let dir: string;
  let config: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'herald-admin-cli-'));
    config = join(dir, 'herald.json');
    writeFileSync(config, JSON.stringify({ mode: 'development', stateDir: join(dir, 'state') }));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a password typed on a terminal is not echoed, asked twice, and stored as argon2id', async (t) => {
    const skip = missingService('util-linux `script` (a terminal for the no-echo prompt)', hasScript());
    if (skip !== false) return t.skip(skip);
    const password = 'typed-on-a-tty-1234';
    const line = [process.execPath, ...command(['create', 'tina', '--role', 'viewer'], config)].map((a) => `'${a}'`).join(' ');
    const typed = await run('script', ['-qec', line, '/dev/null'], [
      { prompt: 'not shown): ', text: password + '\r' },
      { prompt: 'Again: ', text: password + '\r' },
    ], dir);
    assert.equal(typed.code, 0, typed.out);
    assert.match(typed.out, /Password \(12-256 characters, not shown\): /);
    assert.match(typed.out, /Again: /);
    assert.match(typed.out, /Created admin "tina" with role owner/);
    assert.ok(!typed.out.includes(password), 'the password was echoed: ' + JSON.stringify(typed.out));
    const file = openSqliteStore({ stateDir: join(dir, 'state'), claim: false });
    try {
      const admin = await new SqliteAdminStore(file.db).getAdmin('tina');
      assert.match(admin!.passwordHash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
      assert.equal((await new PasswordHasher().verify(password, admin!.passwordHash)).ok, true);
    } finally {
      file.close();
    }
    const differ = await run('script', ['-qec', line.replace("'tina'", "'tom'"), '/dev/null'], [
      { prompt: 'not shown): ', text: password + '\r' },
      { prompt: 'Again: ', text: password + 'x\r' },
    ], dir);
    assert.notEqual(differ.code, 0);
    assert.match(differ.out, /the two passwords differ/);
  });

  test('bad names, roles and engines are refused with the rule; changes are audited as cli:<user>', async () => {
    const node = process.execPath;
    const badName = await run(node, command(['create', "x' OR 1=1", '--role', 'viewer', '--generate'], config), [], dir);
    assert.equal(badName.code, 2);
    assert.match(badName.out, /the name must be 1-64 characters/);
    const badRole = await run(node, command(['create', 'ok', '--role', 'root', '--generate'], config), [], dir);
    assert.equal(badRole.code, 2);
    assert.match(badRole.out, /--role must be one of owner, operator, viewer/);
    const created = await run(node, command(['create', 'gen', '--role', 'operator', '--generate'], config), [], dir);
    assert.equal(created.code, 0, created.out);
    const memory = join(dir, 'memory.json');
    writeFileSync(memory, JSON.stringify({ mode: 'development', stateDir: join(dir, 'state'), engine: { type: 'memory' } }));
    const refused = await run(node, command(['list'], memory), [], dir);
    assert.equal(refused.code, 2);
    assert.match(refused.out, /memory.*no other process can reach them/);
    const file = openSqliteStore({ stateDir: join(dir, 'state'), claim: false });
    try {
      const entries = await new SqliteAdminStore(file.db).queryAudit({ action: 'admin.create' });
      assert.ok(entries.some((e) => e.target === 'gen' && e.actor.startsWith('cli') && e.address === 'local'));
    } finally {
      file.close();
    }
  });
});
