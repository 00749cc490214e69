/**
 * Retained JS heap per idle WebSocket connection: Herald vs the raw `ws`
 * baseline (bench/raw-ws-server.ts), in one run. Complements the ΔRSS
 * figure of bench/fanout.ts, which includes garbage and the young
 * generation's size: this one counts only what a connection keeps alive.
 *
 *   node bench/connection-memory.ts [--connections=2000] [--top=15] [--json=FILE]
 *
 * Per target: start the server as a child process with
 * `--heapsnapshot-signal=SIGUSR2`; open and close 1000 connections (warm-up:
 * JIT, lazily built tables); take a heap snapshot (V8 runs a full GC first);
 * open N connections (Herald: `connect`, then `subscribe` to `bench:fanout`;
 * raw: just open) and let them settle 2 s; take a second snapshot. Retained
 * bytes per connection = (heap B − heap A) / N, and per object kind from
 * the snapshots' node types and names. Everything runs on loopback and stops
 * by itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { CHANNEL, childProcessRegistry, benchSecrets, heraldBenchConfig } from './lib.ts';
import { SOURCE_NODE_ARGS } from '../packages/server/test/helpers/source.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { children } = childProcessRegistry();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

type Target = 'raw-ws' | 'websocket';

/** Opened and closed before the first snapshot, so that JIT code and lazily built tables are in both snapshots. */
const WARM_UP_CONNECTIONS = 1000;

interface HeapTotals {
  readonly bytes: number;
  /** Self bytes and object count per kind ("type:name"; strings and numbers by type only). */
  readonly kinds: Map<string, { bytes: number; count: number }>;
}

interface TargetResult {
  readonly target: Target;
  readonly connections: number;
  readonly bytesPerConnection: number;
  /** Per kind: bytes and objects per connection. */
  readonly kinds: Map<string, { bytes: number; count: number }>;
}

function options(): { connections: number; top: number; json: string | undefined } {
  const { values } = parseArgs({
    options: {
      connections: { type: 'string', default: '2000' },
      top: { type: 'string', default: '15' },
      json: { type: 'string' },
    },
    strict: true,
  });
  const connections = Number(values.connections);
  const top = Number(values.top);
  if (!Number.isInteger(connections) || connections < 100 || connections > 15000) throw new Error('--connections must be an integer in 100..15000');
  if (!Number.isInteger(top) || top < 0) throw new Error('--top must be an integer ≥ 0');
  return { connections, top, json: values.json };
}

/** Starts a server in `dir` (where its heap snapshots land); resolves with its port. */
async function startServer(target: Target, dir: string): Promise<{ child: ChildProcess; port: number }> {
  const nodeArgs = ['--heapsnapshot-signal=SIGUSR2'];
  let child: ChildProcess;
  if (target === 'raw-ws') {
    child = spawn(process.execPath, [...nodeArgs, join(ROOT, 'bench/raw-ws-server.ts')], { cwd: dir, stdio: ['pipe', 'pipe', 'inherit'] });
  } else {
    const configFile = join(dir, 'herald.json');
    writeFileSync(configFile, JSON.stringify(heraldBenchConfig()), { mode: 0o600 });
    child = spawn(process.execPath, [...SOURCE_NODE_ARGS, ...nodeArgs, join(ROOT, 'packages/server/src/cli/main.ts'), 'serve', '--config', configFile], {
      cwd: dir,
      env: { ...process.env, ...benchSecrets(randomBytes(24).toString('base64url')) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
  }
  children.add(child);
  const stdout = child.stdout;
  if (stdout === null) throw new Error('no stdout pipe');
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${target}: no "listening" line within 30 s`)), 30000);
    child.once('exit', (code) => reject(new Error(`${target}: exited (${code}) before listening`)));
    createInterface({ input: stdout }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: unknown; port?: unknown };
        if (entry.msg === 'listening' && typeof entry.port === 'number') {
          clearTimeout(timer);
          resolve(entry.port);
        }
      } catch {
        // not JSON
      }
    });
  });
  return { child, port };
}

/** One idle connection: Herald connects and subscribes; the baseline just opens. */
function openConnection(target: Target, port: number): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/connection/websocket`, { perMessageDeflate: false });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error('connection timeout'));
    }, 30000);
    const done = (): void => {
      clearTimeout(timer);
      resolve(ws);
    };
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    if (target === 'raw-ws') {
      ws.on('open', done);
      return;
    }
    ws.on('open', () => ws.send(JSON.stringify({ id: 1, method: 'connect', params: {} })));
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { id?: number; error?: unknown };
      if (frame.error !== undefined) {
        ws.terminate();
        reject(new Error(`reply error ${JSON.stringify(frame.error)}`));
      } else if (frame.id === 1) ws.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel: CHANNEL } }));
      else if (frame.id === 2) done();
    });
  });
}

async function openMany(target: Target, port: number, count: number): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  const inFlight = 50;
  for (let i = 0; i < count; i += inFlight) {
    const batch = Math.min(inFlight, count - i);
    sockets.push(...(await Promise.all(Array.from({ length: batch }, () => openConnection(target, port)))));
  }
  return sockets;
}

/** Asks the server for a heap snapshot and waits until the file is complete. */
async function snapshot(child: ChildProcess, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  child.kill('SIGUSR2');
  const deadline = Date.now() + 120000;
  let file: string | undefined;
  let lastSize = -1;
  while (Date.now() < deadline) {
    await sleep(250);
    file ??= readdirSync(dir).find((name) => name.endsWith('.heapsnapshot') && !before.has(name));
    if (file === undefined) continue;
    // complete when its size holds still and the JSON is closed
    const size = statSync(join(dir, file)).size;
    if (size > 0 && size === lastSize && readFileSync(join(dir, file), 'utf8').trimEnd().endsWith('}')) return join(dir, file);
    lastSize = size;
  }
  throw new Error('heap snapshot did not complete within 120 s');
}

interface RawSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
  nodes: number[];
  strings: string[];
}

function readHeap(file: string): HeapTotals {
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as RawSnapshot;
  const fields = parsed.snapshot.meta.node_fields;
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const types = parsed.snapshot.meta.node_types[0];
  const kinds = new Map<string, { bytes: number; count: number }>();
  let bytes = 0;
  for (let i = 0; i < parsed.nodes.length; i += width) {
    const type = types[parsed.nodes[i + typeAt]!] ?? '?';
    const size = parsed.nodes[i + sizeAt]!;
    const byTypeOnly = type === 'string' || type === 'concatenated string' || type === 'sliced string' || type === 'number' || type === 'code';
    const kind = byTypeOnly ? type : `${type}:${String(parsed.strings[parsed.nodes[i + nameAt]!]).slice(0, 48)}`;
    const entry = kinds.get(kind) ?? { bytes: 0, count: 0 };
    entry.bytes += size;
    entry.count += 1;
    kinds.set(kind, entry);
    bytes += size;
  }
  return { bytes, kinds };
}

async function measure(target: Target, connections: number): Promise<TargetResult> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-heap-'));
  const { child, port } = await startServer(target, dir);
  try {
    const warm = await openMany(target, port, WARM_UP_CONNECTIONS);
    for (const ws of warm) ws.terminate();
    await sleep(1500);
    const before = readHeap(await snapshot(child, dir));
    const began = Date.now();
    const sockets = await openMany(target, port, connections);
    process.stderr.write(`  ${target}: ${connections} connections open in ${((Date.now() - began) / 1000).toFixed(1)} s\n`);
    await sleep(2000);
    const after = readHeap(await snapshot(child, dir));
    for (const ws of sockets) ws.terminate();
    const kinds = new Map<string, { bytes: number; count: number }>();
    for (const [kind, entry] of after.kinds) {
      const old = before.kinds.get(kind) ?? { bytes: 0, count: 0 };
      kinds.set(kind, { bytes: (entry.bytes - old.bytes) / connections, count: (entry.count - old.count) / connections });
    }
    return { target, connections, bytesPerConnection: (after.bytes - before.bytes) / connections, kinds };
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const opts = options();
  process.stderr.write(`retained JS heap per idle WebSocket, ${opts.connections} connections; node ${process.version}\n`);
  const raw = await measure('raw-ws', opts.connections);
  const herald = await measure('websocket', opts.connections);
  const ratio = herald.bytesPerConnection / raw.bytesPerConnection;
  const lines = [
    `| target | connections | retained bytes per connection | vs raw ws |`,
    `|---|---:|---:|---:|`,
    `| raw-ws | ${raw.connections} | ${raw.bytesPerConnection.toFixed(0)} | 1.00× |`,
    `| websocket (Herald) | ${herald.connections} | ${herald.bytesPerConnection.toFixed(0)} | ${ratio.toFixed(2)}× |`,
  ];
  if (opts.top > 0) {
    const rows = [...herald.kinds]
      .filter(([, entry]) => Math.abs(entry.bytes) >= 1)
      .sort((a, b) => b[1].bytes - a[1].bytes)
      .slice(0, opts.top);
    lines.push('', `| kind (Herald's largest) | Herald bytes | objects | raw ws bytes | objects |`, `|---|---:|---:|---:|---:|`);
    for (const [kind, entry] of rows) {
      const base = raw.kinds.get(kind) ?? { bytes: 0, count: 0 };
      lines.push(`| \`${kind}\` | ${entry.bytes.toFixed(0)} | ${entry.count.toFixed(2)} | ${base.bytes.toFixed(0)} | ${base.count.toFixed(2)} |`);
    }
  }
  console.log(lines.join('\n'));
  if (opts.json !== undefined) {
    const plain = (r: TargetResult) => ({ ...r, kinds: Object.fromEntries(r.kinds) });
    writeFileSync(opts.json, JSON.stringify({ raw: plain(raw), herald: plain(herald), ratio }, null, 2));
  }
}

await main();
process.exit(0);
