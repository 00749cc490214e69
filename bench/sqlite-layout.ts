/**
 * The sqlite engine's publish cost by layout of the publications, in one
 * process (no HTTP, no Herald): what a commit of the engine writes, on the
 * engine's pragmas (WAL, `synchronous=NORMAL`, 4 KiB pages, incremental auto
 * vacuum, the automatic checkpoint every 1000 WAL pages), publications to
 * `--channels` channels in turn, `--per-commit` publications per commit (the
 * publish benchmark's load gives the engine 4–5 per turn of the event loop),
 * 100-byte data. Per layout and round: CPU (user + system) per publication
 * over `--publications` after `--warmup`, and the WAL pages (frames) a
 * commit writes, counted in a separate pass without checkpoints (the WAL
 * file's growth divided by the frame size).
 *
 * Layouts:
 * - `channel-key`: the engine's layout up to schema 14: `publications`
 *   keyed by (channel, offset) WITHOUT ROWID with the rows inline, and an
 *   index on time: a publication to a channel of its own dirties a leaf of
 *   its own, and the time index's last leaf;
 * - `channel-key-no-time`: the same without the time index;
 * - `log`: an append-only rowid table (rowid order = commit order), no
 *   other index: a commit's rows share the last leaf (the per-channel index
 *   would be in memory);
 * - `log-indexed`: the log with an index on (channel, offset) (small
 *   entries, still one leaf per channel);
 * - `channel-key-big`: `channel-key` with 4 × `--per-commit` per commit.
 *
 * `--brokers=label=ROOT,…` measures the engine itself instead (the
 * `SqliteBroker` and state file of each checkout ROOT, e.g. this one and a
 * worktree of main: `--brokers=after=.,before=../main`), the same way:
 * `--per-commit` publishes per turn of the event loop (one commit each),
 * history size `--size` (0: 300, the bench namespace's).
 *
 *   node bench/sqlite-layout.ts [--layouts=a,b] [--rounds=3] [--channels=10000]
 *     [--per-commit=5] [--publications=100000] [--warmup=20000] [--size=0] [--cpu=0]
 *   node bench/sqlite-layout.ts --brokers=after=.,before=../main [--rounds=3] …
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    layouts: { type: 'string', default: 'channel-key,channel-key-no-time,log,log-indexed,channel-key-big' },
    rounds: { type: 'string', default: '3' },
    channels: { type: 'string', default: '10000' },
    'per-commit': { type: 'string', default: '5' },
    publications: { type: 'string', default: '100000' },
    warmup: { type: 'string', default: '20000' },
    cpu: { type: 'string', default: '0' },
    size: { type: 'string', default: '0' },
    brokers: { type: 'string' },
  },
});
const channels = Number(values.channels);
const perCommit = Number(values['per-commit']);
const publications = Number(values.publications);
const warmup = Number(values.warmup);
const layouts = values.layouts.split(',');
/** History size: past it, each commit trims its channels' oldest publications as the engine does (0: never). */
const size = Number(values.size);

if (cpus().length >= 2) {
  try {
    execFileSync('taskset', ['-pc', values.cpu, String(process.pid)], { stdio: 'ignore' });
  } catch {
    // Not pinned: numbers noisier.
  }
}

interface Layout {
  readonly schema: string;
  readonly insert: string;
  readonly trim: string;
  readonly perCommit: number;
}

const CHANNEL_KEY = `CREATE TABLE publications (channel TEXT NOT NULL, offset INTEGER NOT NULL, time INTEGER NOT NULL, data TEXT NOT NULL, info TEXT,
  PRIMARY KEY (channel, offset)) WITHOUT ROWID;`;
const LOG = 'CREATE TABLE log (seq INTEGER PRIMARY KEY, channel TEXT NOT NULL, offset INTEGER NOT NULL, time INTEGER NOT NULL, data TEXT NOT NULL, info TEXT);';
const INSERT_CHANNEL_KEY = 'INSERT INTO publications (channel, offset, time, data, info) VALUES (?, ?, ?, ?, ?)';
const INSERT_LOG = 'INSERT INTO log (channel, offset, time, data, info) VALUES (?, ?, ?, ?, ?)';
const TRIM_CHANNEL_KEY = 'DELETE FROM publications WHERE channel = ? AND offset <= ?';
/** Without an index by channel the log's rows of a channel are found by rowid (an index kept in memory): here the rowid is known. */
const TRIM_LOG = 'DELETE FROM log WHERE rowid = ?';
const TRIM_LOG_INDEXED = 'DELETE FROM log WHERE channel = ? AND offset <= ?';

const LAYOUTS: Record<string, Layout> = {
  'channel-key': { schema: `${CHANNEL_KEY} CREATE INDEX publications_time ON publications (time);`, insert: INSERT_CHANNEL_KEY, trim: TRIM_CHANNEL_KEY, perCommit },
  'channel-key-no-time': { schema: CHANNEL_KEY, insert: INSERT_CHANNEL_KEY, trim: TRIM_CHANNEL_KEY, perCommit },
  log: { schema: LOG, insert: INSERT_LOG, trim: TRIM_LOG, perCommit },
  'log-indexed': { schema: `${LOG} CREATE INDEX log_channel ON log (channel, offset);`, insert: INSERT_LOG, trim: TRIM_LOG_INDEXED, perCommit },
  'channel-key-big': {
    schema: `${CHANNEL_KEY} CREATE INDEX publications_time ON publications (time);`,
    insert: INSERT_CHANNEL_KEY,
    trim: TRIM_CHANNEL_KEY,
    perCommit: perCommit * 4,
  },
};

const data = 'x'.repeat(100);
const names = Array.from({ length: channels }, (_, i) => `bench:channel-${i}`);

interface Db {
  readonly db: DatabaseSync;
  readonly insert: StatementSync;
  readonly trim: StatementSync;
  readonly log: boolean;
  /** The rowids of each channel's publications, oldest first (the log's index in memory). */
  readonly rowids: number[][];
}

function open(dir: string, layout: Layout, autocheckpoint: number): Db {
  const db = new DatabaseSync(join(dir, 'herald.db'));
  db.exec('PRAGMA auto_vacuum = INCREMENTAL');
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = NORMAL');
  db.exec(`PRAGMA wal_autocheckpoint = ${autocheckpoint}`);
  db.exec(layout.schema);
  return { db, insert: db.prepare(layout.insert), trim: db.prepare(layout.trim), log: layout.trim === TRIM_LOG, rowids: Array.from({ length: channels }, () => []) };
}

/** Publishes `count` publications from `from` on, `per` per commit; the channel's offset is its count so far. */
function publish(d: Db, from: number, count: number, per: number, offsets: Int32Array): void {
  for (let i = from; i < from + count; i += per) {
    d.db.exec('BEGIN IMMEDIATE');
    for (let j = i; j < Math.min(i + per, from + count); j++) {
      const c = j % channels;
      offsets[c]! += 1;
      const result = d.insert.run(names[c]!, offsets[c]!, Date.now(), data, null);
      if (size > 0 && offsets[c]! > size) {
        if (d.log) {
          d.rowids[c]!.push(Number(result.lastInsertRowid));
          d.trim.run(d.rowids[c]!.shift()!);
        } else {
          d.trim.run(names[c]!, offsets[c]! - size);
        }
      } else if (d.log) d.rowids[c]!.push(Number(result.lastInsertRowid));
    }
    d.db.exec('COMMIT');
  }
}

function measure(name: string): { cpuUs: number; framesPerCommit: number } {
  const layout = LAYOUTS[name];
  if (layout === undefined) throw new Error(`unknown layout ${name}`);
  // CPU, with the engine's checkpoints.
  let dir = mkdtempSync(join(tmpdir(), 'herald-layout-'));
  let cpuUs: number;
  try {
    const d = open(dir, layout, 1000);
    const offsets = new Int32Array(channels);
    publish(d, 0, warmup, layout.perCommit, offsets);
    const before = process.cpuUsage();
    publish(d, warmup, publications, layout.perCommit, offsets);
    const used = process.cpuUsage(before);
    cpuUs = (used.user + used.system) / publications;
    d.db.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // Frames per commit: the WAL's growth without checkpoints over 2000 commits after the warm-up.
  dir = mkdtempSync(join(tmpdir(), 'herald-layout-'));
  let framesPerCommit: number;
  try {
    const d = open(dir, layout, 1000);
    const offsets = new Int32Array(channels);
    publish(d, 0, warmup, layout.perCommit, offsets);
    d.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    d.db.exec('PRAGMA wal_autocheckpoint = 0');
    const commits = 2000;
    publish(d, warmup, commits * layout.perCommit, layout.perCommit, offsets);
    framesPerCommit = (statSync(join(dir, 'herald.db-wal')).size - 32) / (4096 + 24) / commits;
    d.db.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { cpuUs, framesPerCommit };
}

interface BrokerModule {
  SqliteBroker: new (store: unknown, options: { sweepIntervalMs: number }) => {
    publish(channel: string, data: string, options: { stream: { size: number; ttlMs: number } }): Promise<unknown>;
    close(): Promise<void>;
  };
}
interface StoreModule {
  openSqliteStore(options: { stateDir: string }): { db: DatabaseSync; close(): void };
}

/** The engine of checkout `root`: CPU per publication, and WAL pages per commit (a second pass without checkpoints). */
async function measureBroker(root: string): Promise<{ cpuUs: number; framesPerCommit: number }> {
  const { SqliteBroker } = (await import(join(root, 'packages/server/src/broker/sqlite-broker.ts'))) as BrokerModule;
  const { openSqliteStore } = (await import(join(root, 'packages/server/src/store/sqlite-store.ts'))) as StoreModule;
  const options = { stream: { size: size || 300, ttlMs: 300_000 } };
  const run = async (broker: InstanceType<BrokerModule['SqliteBroker']>, from: number, count: number) => {
    for (let i = from; i < from + count; i += perCommit) {
      const turn: Promise<unknown>[] = [];
      for (let j = i; j < Math.min(i + perCommit, from + count); j++) turn.push(broker.publish(names[j % channels]!, data, options));
      await Promise.all(turn);
    }
  };
  const pass = async (frames: boolean) => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-layout-'));
    const store = openSqliteStore({ stateDir: dir });
    const broker = new SqliteBroker(store, { sweepIntervalMs: 3_600_000 });
    try {
      await run(broker, 0, warmup);
      if (frames) {
        store.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
        store.db.exec('PRAGMA wal_autocheckpoint = 0');
        const commits = 2000;
        await run(broker, warmup, commits * perCommit);
        return (statSync(join(dir, 'herald.db-wal')).size - 32) / (4096 + 24) / commits;
      }
      const before = process.cpuUsage();
      await run(broker, warmup, publications);
      const used = process.cpuUsage(before);
      return (used.user + used.system) / publications;
    } finally {
      await broker.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };
  return { cpuUs: await pass(false), framesPerCommit: await pass(true) };
}

const brokers = new Map((values.brokers?.split(',') ?? []).map((entry) => entry.split('=') as [string, string]));
const targets = brokers.size > 0 ? [...brokers.keys()] : layouts;
const results = new Map<string, Array<{ cpuUs: number; framesPerCommit: number }>>();
for (let round = 0; round < Number(values.rounds); round++) {
  const order = round % 2 === 0 ? targets : [...targets].reverse();
  for (const name of order) {
    const root = brokers.get(name);
    const r = root === undefined ? measure(name) : await measureBroker(root.startsWith('/') ? root : join(process.cwd(), root));
    (results.get(name) ?? results.set(name, []).get(name)!).push(r);
    console.log(`round ${round + 1} ${name}: ${r.cpuUs.toFixed(2)} µs CPU/pub, ${r.framesPerCommit.toFixed(2)} WAL pages/commit`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  brokers.size > 0
    ? `\nSqliteBroker, ${channels} channels in turn, ${perCommit} publishes per turn, ${publications} after ${warmup}, history size ${size || 300}; medians:`
    : `\n${channels} channels in turn, ${perCommit} publications per commit (channel-key-big: ${perCommit * 4}), ${publications} after ${warmup}, history size ${size || 'unbounded'}; medians:`,
);
console.log(`| ${brokers.size > 0 ? 'engine' : 'layout'} | CPU µs/pub | rounds | WAL pages/commit | WAL pages/pub |`);
console.log('|---|---:|---|---:|---:|');
for (const name of targets) {
  const rs = results.get(name)!;
  const per = LAYOUTS[name]?.perCommit ?? perCommit;
  const frames = median(rs.map((r) => r.framesPerCommit));
  console.log(`| ${name} | ${median(rs.map((r) => r.cpuUs)).toFixed(2)} | ${rs.map((r) => r.cpuUs.toFixed(2)).join(', ')} | ${frames.toFixed(2)} | ${(frames / per).toFixed(2)} |`);
}
