/**
 * `herald backup` (issue 14, part 5) with real processes: a copy of the
 * state file taken while a publisher keeps publishing is one consistent
 * snapshot; a second Herald started on a state directory holding the copy
 * (while the first still runs) serves the same streams: same epoch,
 * contiguous offsets, the same data, and a client recovers from a position
 * in it with recovered:true. The copy is 0600; an existing file is not
 * replaced without --force; the memory engine has nothing to back up.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HERALD_MAIN, HeraldProcess } from '../helpers/herald-process.ts';
import { closeAllClients, openWs } from '../helpers/herald-ws.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { callApi, Tokens, type Target } from '../redis/harness.ts';

const dirs: string[] = [];
after(() => {
  closeAllClients();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function herald(args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { timeout: 60000, env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'herald-backup-'));
dirs.push(dir);
const tokens = new Tokens();
const apiKey = randomBytes(24).toString('base64url');
writeFileSync(join(dir, 'hmac'), tokens.secret + '\n', { mode: 0o600 });

/** A config on the sqlite engine with its own state directory. */
function config(name: string, stateDir: string, engine = 'sqlite'): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      auth: { hmacSecretFile: join(dir, 'hmac') },
      listen: { host: '127.0.0.1', port: 0 },
      admin: { port: 0 },
      stateDir,
      engine: { type: engine },
      log: { level: 'warn' },
      process: { allowRoot: true },
      channels: { namespaces: [{ name: 'kept', historySize: 100000, historyTtlMs: 3600000 }] },
    }),
  );
  return file;
}

async function start(configFile: string): Promise<{ process: HeraldProcess; target: Target }> {
  const child = new HeraldProcess(['--config', configFile, '--log-level', 'info'], dir, { HERALD_API_KEY: apiKey });
  const port = await child.listeningPort();
  return { process: child, target: { name: configFile, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/connection/websocket`, apiKey } };
}

interface Acked {
  readonly n: number;
  readonly epoch: string;
  readonly offset: number;
}

describe('herald backup', { timeout: 120000 }, () => {
  test('a copy taken while publishing starts as a Herald state with the same streams; clients recover from it', async (t) => {
    const original = config('original', join(dir, 'state'));
    const first = await start(original);
    const channel = 'kept:orders';
    const acked: Acked[] = [];
    let n = 0;
    const publishOne = async (): Promise<void> => {
      const mine = ++n;
      const answer = await callApi(first.target, 'publish', { channel, data: { n: mine } });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      acked.push({ n: mine, epoch: answer.body.epoch as string, offset: answer.body.offset as number });
    };
    let second: Awaited<ReturnType<typeof start>> | undefined;
    try {
      for (let i = 0; i < 50; i++) await publishOne();
      const beforeBackup = acked.length;
      // The publisher keeps going while the backup runs.
      let publishing = true;
      const publisher = (async () => {
        while (publishing) await publishOne();
      })();
      const copy = join(dir, 'copy.db');
      const run = await herald(['backup', copy, '--config', original]);
      const duringBackup = acked.length;
      publishing = false;
      await publisher;
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), copy);
      assert.match(run.stderr, /Backed up the state file \(schema version \d+/);
      assert.ok(acked.length > beforeBackup, 'publications went on while the backup ran');
      assert.equal(statSync(copy).mode & 0o777, 0o600);

      // Not replaced without --force; replaced with it.
      const bytes = readFileSync(copy);
      const again = await herald(['backup', copy, '--config', original]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /exists; give --force/);
      assert.deepEqual(readFileSync(copy), bytes);
      const forcedCopy = join(dir, 'forced.db');
      writeFileSync(forcedCopy, 'old');
      const forced = await herald(['backup', forcedCopy, '--force', '--config', original]);
      assert.equal(forced.code, 0, forced.stderr);
      assert.notEqual(readFileSync(forcedCopy, 'latin1'), 'old');

      // Restore beside the running original: a state directory holding the copy.
      const restoredDir = join(dir, 'restored');
      mkdirSync(restoredDir, { mode: 0o700 });
      copyFileSync(copy, join(restoredDir, 'herald.db'));
      second = await start(config('restored', restoredDir));
      const epoch = acked[0]!.epoch;
      const history = await callApi(second.target, 'history', { channel, limit: 10000 });
      assert.equal(history.status, 200);
      assert.equal(history.body.epoch, epoch, 'the same epoch');
      const publications = history.body.publications as { offset: number; data: { n: number } }[];
      const top = history.body.offset as number;
      // One snapshot: everything acknowledged before the backup began, a prefix of the stream, nothing after it ended.
      assert.ok(top >= beforeBackup && top <= duringBackup, `the copy ends at ${top}: between ${beforeBackup} and ${duringBackup}`);
      assert.deepEqual(
        publications.map((p) => p.offset),
        Array.from({ length: top }, (_, i) => i + 1),
        'contiguous offsets from 1',
      );
      const byOffset = new Map(acked.map((a) => [a.offset, a.n]));
      for (const p of publications) assert.equal(p.data.n, byOffset.get(p.offset), `offset ${p.offset} holds what the original acknowledged there`);

      t.diagnostic(`acknowledged before the backup: ${beforeBackup}; the copy ends at ${top}; acknowledged when it returned: ${duringBackup}; the backup took ${/in (\d+) ms/.exec(run.stderr)?.[1]} ms`);
      // A client that was at offset 20 on the original recovers the rest from the restored server.
      const client = await openWs(second.target.wsUrl);
      await client.connect(await tokens.sign('alice'));
      const reply = await client.call('subscribe', { channel, recover: true, epoch, offset: 20 });
      assert.equal(reply.recovered, true, JSON.stringify(reply));
      assert.equal(reply.epoch, epoch);
      assert.equal(reply.offset, top);
      const recovered = (await client.waitPublications(channel, top - 20)) as { offset: number; data: { n: number } }[];
      assert.deepEqual(
        recovered.map((p) => p.offset),
        Array.from({ length: top - 20 }, (_, i) => i + 21),
      );
      // The restored server continues the stream.
      const next = await callApi(second.target, 'publish', { channel, data: { n: 'next' } });
      assert.deepEqual([next.body.epoch, next.body.offset], [epoch, top + 1]);
    } finally {
      await second?.process.stop();
      await first.process.stop();
    }
  });

  test('herald restore: refused while Herald runs and over a state file without --force; new epochs by default (clients ahead of the copy reload), --keep-epochs for a move', async () => {
    const stateDir = join(dir, 'restore-state');
    const file = config('restore', stateDir);
    const channel = 'kept:restore';
    const copy = join(dir, 'restore-copy.db');
    let server = await start(file);
    let oldEpoch: string;
    try {
      for (let i = 1; i <= 3; i++) assert.equal((await callApi(server.target, 'publish', { channel, data: { n: i } })).status, 200);
      const run = await herald(['backup', copy, '--config', file]);
      assert.equal(run.code, 0, run.stderr);
      // Published after the copy: a client may have seen these.
      let last = await callApi(server.target, 'publish', { channel, data: { n: 4 } });
      last = await callApi(server.target, 'publish', { channel, data: { n: 5 } });
      oldEpoch = last.body.epoch as string;
      assert.equal(last.body.offset, 5);
      const running = await herald(['restore', copy, '--force', '--config', file]);
      assert.equal(running.code, 1);
      assert.match(running.stderr, /in use by a running Herald \(pid \d+\); stop it/);
    } finally {
      await server.process.stop();
    }
    const live = readFileSync(join(stateDir, 'herald.db'));
    const refused = await herald(['restore', copy, '--config', file]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /exists; give --force/);
    const foreign = join(dir, 'foreign.db');
    writeFileSync(foreign, 'not a database at all, but long enough to have a header of a hundred bytes or so: '.repeat(3));
    const bad = await herald(['restore', foreign, '--force', '--config', file]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /not a SQLite database/);
    assert.deepEqual(readFileSync(join(stateDir, 'herald.db')), live, 'a refused restore changes nothing');

    const restored = await herald(['restore', copy, '--force', '--config', file]);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(restored.stderr, /Restored 1 streams, each with a new epoch\. The previous state file is .*herald\.db\.before-restore-/);
    const previous = /The previous state file is (\S+)\.\n/.exec(restored.stderr)![1]!;
    assert.deepEqual(readFileSync(previous), live, 'the previous state file is kept');
    assert.equal(statSync(join(stateDir, 'herald.db')).mode & 0o777, 0o600);
    server = await start(file);
    try {
      const history = await callApi(server.target, 'history', { channel, limit: 100 });
      assert.notEqual(history.body.epoch, oldEpoch, 'a new epoch');
      assert.equal(history.body.offset, 3, 'the copy’s position');
      // New publications pass the position of a client that had seen offset 5
      // (published after the copy): in the old epoch it would resume at 6 and
      // never get the new 4 and 5. It is told to reload instead.
      for (let i = 1; i <= 3; i++) assert.equal((await callApi(server.target, 'publish', { channel, data: { after: i } })).status, 200);
      const client = await openWs(server.target.wsUrl);
      await client.connect(await tokens.sign('bob'));
      const reply = await client.call('subscribe', { channel, recover: true, epoch: oldEpoch, offset: 5 });
      assert.equal(reply.recovered, false, JSON.stringify(reply));
    } finally {
      await server.process.stop();
    }

    // A move keeps the epochs: a current copy of a stopped Herald.
    const moveDir = join(dir, 'moved-state');
    const moved = await herald(['restore', join(stateDir, 'herald.db'), '--keep-epochs', '--state-dir', moveDir]);
    assert.equal(moved.code, 0, moved.stderr);
    assert.match(moved.stderr, /epochs kept/);
    server = await start(config('moved', moveDir));
    try {
      const restoredHistory = await callApi(server.target, 'history', { channel, limit: 100 });
      assert.notEqual(restoredHistory.body.epoch, oldEpoch);
      const client = await openWs(server.target.wsUrl);
      await client.connect(await tokens.sign('carol'));
      const reply = await client.call('subscribe', { channel, recover: true, epoch: restoredHistory.body.epoch as string, offset: 1 });
      assert.equal(reply.recovered, true, JSON.stringify(reply));
    } finally {
      await server.process.stop();
    }
  });

  test('the memory engine has nothing to back up; no state file is no backup', async () => {
    const memory = await herald(['backup', join(dir, 'none.db'), '--config', config('memory', join(dir, 'memory-state'), 'memory')]);
    assert.equal(memory.code, 2);
    assert.match(memory.stderr, /memory engine keeps nothing on disk/);
    const empty = await herald(['backup', join(dir, 'none.db'), '--state-dir', join(dir, 'nothing-here')]);
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /no state file to back up/);
    assert.equal(existsSync(join(dir, 'none.db')), false);
  });
});
