/**
 * Memory per idle connection, per transport: Herald vs a raw Node server of
 * the same transport and Nchan, in one run.
 *
 *   node bench/connection-memory.ts [--transport=ws|sse|long-poll] [--connections=N]
 *     [--targets=raw,herald,nchan] [--in-flight=200] [--settle=3] [--top=15]
 *     [--server-cpu=0] [--client-cpu=1] [--keep-snapshot=DIR] [--json=FILE]
 *     [--node-args="--flag …"] [--before-root=DIR]
 *
 * Defaults: 10 000 connections for `ws` and `sse`, 2000 for `long-poll`.
 * Targets per transport:
 * - `ws`: bench/raw-ws-server.ts (open only), Herald `/connection/websocket`
 *   (`connect`, `subscribe` to `bench:fanout`), Nchan WebSocket subscriber;
 * - `sse`: bench/raw-sse-server.ts (its first event), Herald
 *   `GET /connection/sse?channel=bench:fanout` (until `subscribed`), Nchan
 *   EventSource subscriber;
 * - `long-poll`: Herald `POST /connection/poll/open` then a held
 *   `POST /connection/poll`; bench/raw-long-poll-server.ts (a held
 *   `POST /poll`, no session); Nchan long-poll `GET` (held).
 *
 * The server runs pinned to `--server-cpu`, this process (the clients, lean
 * ones over node:net: bench/raw-clients.ts) to `--client-cpu`. Per target:
 * start the server (Node ones with `--heapsnapshot-signal=SIGUSR2`), open
 * and close 1000 connections (warm-up: JIT, lazily built tables), settle,
 * read RSS (median of three samples) and take a heap snapshot (V8 runs a
 * full GC first); open N connections, settle, read RSS and take a second
 * snapshot. Per connection: retained heap = Δheap / N (what a connection
 * keeps alive: no garbage, not the young generation's size; per object kind
 * from the snapshots' node types and names) and ΔRSS / N (what the process
 * really holds, garbage and buffers included). Nchan has no JS heap: RSS
 * of its worker only. Everything runs on loopback and stops by itself.
 *
 * Target `herald-lean` is Herald with the long-poll routes and the SSE
 * opening on the lean HTTP layer (`http.leanLongPoll`, `http.leanSse`), the
 * default (so the same server as `herald`); `herald-node-http` the same with them off
 * (node:http, the default before). Target `herald-before` is Herald from another checkout (`--before-root`,
 * e.g. a `git archive` of the code before a change beside this checkout,
 * sharing its node_modules), measured like `herald` in the same run.
 *
 * `--node-args` adds Node flags (space-separated) to every Node server of
 * the run, raw and Herald alike: for diagnosis (e.g.
 * `--max-semi-space-size=1` to see how much of the RSS is V8's young
 * generation), not a product setting.
 *
 * `--keep-snapshot=DIR` copies each Node server's second snapshot (N idle
 * connections) to DIR as `<transport>-<target>.heapsnapshot`, for
 * `node bench/heap-retainers.ts FILE N`: which objects each connection
 * holds, grouped by what holds them.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CHANNEL, heraldBenchConfig } from './lib.ts';
import { nchanChannelId, nchanUnavailable, startNchan } from './nchan.ts';
import { HttpConnection, openSse, openWebSocket } from './raw-clients.ts';
import { medianRss, pinSelf, sleep, startServerProcess, type ServerProcess } from './server-process.ts';

type Transport = 'ws' | 'sse' | 'long-poll';
type Flavor = 'raw' | 'herald' | 'herald-before' | 'herald-lean' | 'herald-node-http' | 'nchan';

/** Opened and closed before the first measurement, so that JIT code and lazily built tables are in both. */
const WARM_UP_CONNECTIONS = 1000;

interface Kinds {
  bytes: number;
  kinds: Map<string, { bytes: number; count: number }>;
}

interface TargetResult {
  readonly flavor: Flavor;
  readonly connections: number;
  readonly opened: number;
  readonly openSeconds: number;
  /** Retained heap bytes per connection (undefined for Nchan). */
  readonly heapPerConnection: number | undefined;
  readonly rssPerConnection: number;
  readonly kinds: Map<string, { bytes: number; count: number }>;
}

function options() {
  const { values } = parseArgs({
    options: {
      transport: { type: 'string', default: 'ws' },
      connections: { type: 'string' },
      targets: { type: 'string' },
      'in-flight': { type: 'string', default: '200' },
      settle: { type: 'string', default: '3' },
      top: { type: 'string', default: '15' },
      'server-cpu': { type: 'string', default: '0' },
      'client-cpu': { type: 'string', default: '1' },
      'keep-snapshot': { type: 'string' },
      json: { type: 'string' },
      'node-args': { type: 'string' },
      'before-root': { type: 'string' },
    },
    strict: true,
  });
  const transport = values.transport as Transport;
  if (!['ws', 'sse', 'long-poll'].includes(transport)) throw new Error('--transport must be ws, sse or long-poll');
  const connections = Number(values.connections ?? (transport === 'long-poll' ? 2000 : 10000));
  if (!Number.isInteger(connections) || connections < 100 || connections > 15000) throw new Error('--connections must be an integer in 100..15000');
  const defaults: Flavor[] = ['raw', 'herald', 'nchan'];
  const targets = (values.targets?.split(',') ?? defaults) as Flavor[];
  if (targets.includes('nchan') && nchanUnavailable() !== undefined) {
    process.stderr.write(`Nchan skipped: ${nchanUnavailable()}\n`);
    targets.splice(targets.indexOf('nchan'), 1);
  }
  if (targets.includes('herald-before') && values['before-root'] === undefined) throw new Error('herald-before needs --before-root');
  return {
    transport,
    connections,
    targets,
    inFlight: Number(values['in-flight']),
    settleMs: Number(values.settle) * 1000,
    top: Number(values.top),
    serverCpu: values['server-cpu'],
    clientCpu: values['client-cpu'],
    keepSnapshot: values['keep-snapshot'],
    json: values.json,
    beforeRoot: values['before-root'],
    nodeArgs: values['node-args']?.split(' ').filter((arg) => arg !== '') ?? [],
  };
}

const opts = options();
pinSelf(opts.clientCpu);

type Closer = () => void;

/** Opens one idle connection; resolves with its closer once it is in (subscribed, or its poll sent). */
function openOne(target: Flavor, transport: Transport, port: number): Promise<Closer> {
  const flavor = target === 'herald-before' || target === 'herald-lean' || target === 'herald-node-http' ? 'herald' : target;
  return new Promise((resolve, reject) => {
    let done = false;
    let close: Closer = () => {};
    const timer = setTimeout(() => fail('timeout'), 30000);
    const ready = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(close);
    };
    const fail = (reason: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      close();
      reject(new Error(reason));
    };
    const nchanPath = '/sub/' + nchanChannelId(CHANNEL);
    if (transport === 'ws') {
      const path = flavor === 'herald' ? '/connection/websocket' : flavor === 'nchan' ? nchanPath : '/';
      const ws = openWebSocket(port, path, {
        onOpen() {
          if (flavor === 'herald') ws.send('{"id":1,"method":"connect","params":{}}');
          else ready();
        },
        onMessage(text) {
          if (flavor !== 'herald' || done) return;
          const frame = JSON.parse(text) as { id?: number; error?: unknown };
          if (frame.error !== undefined) fail(`reply error ${JSON.stringify(frame.error)}`);
          else if (frame.id === 1) ws.send(`{"id":2,"method":"subscribe","params":{"channel":"${CHANNEL}"}}`);
          else if (frame.id === 2) ready();
        },
        onEnd: fail,
      });
      close = () => ws.close();
      return;
    }
    if (transport === 'sse') {
      const path = flavor === 'herald' ? `/connection/sse?channel=${encodeURIComponent(CHANNEL)}` : flavor === 'nchan' ? nchanPath : '/';
      const socket = openSse(port, path, {}, {
        onOpen() {
          if (flavor === 'nchan') ready();
        },
        onEvent(data) {
          if (flavor === 'raw') ready();
          else if (flavor === 'herald' && data.includes('"push":"subscribed"')) ready();
        },
        onEnd: fail,
      });
      close = () => socket.destroy();
      return;
    }
    // long polling: a session (Herald) and one held poll, re-sent when answered
    const connection = new HttpConnection(port);
    let stopped = false;
    close = () => {
      stopped = true;
      connection.close();
    };
    if (flavor === 'raw') {
      const loop = async (): Promise<void> => {
        let seq = 0;
        while (!stopped) {
          const answer = await connection.request('POST', '/poll', { 'content-type': 'application/json' }, `{"seq":${seq}}`);
          if (answer.status !== 200) throw new Error(`poll ${answer.status}: ${answer.body.slice(0, 160)}`);
          seq = Math.max(seq, (JSON.parse(answer.body) as { seq: number }).seq);
        }
      };
      loop().catch((error: unknown) => {
        if (!stopped) fail(String(error));
      });
      setTimeout(ready, 0);
      return;
    }
    if (flavor === 'nchan') {
      const loop = async (headers: Record<string, string>): Promise<void> => {
        while (!stopped) {
          const answer = await connection.request('GET', nchanPath, headers);
          const etag = answer.headers.get('etag');
          const modified = answer.headers.get('last-modified');
          headers = etag !== undefined && modified !== undefined ? { 'if-none-match': etag, 'if-modified-since': modified } : {};
        }
      };
      loop({}).catch((error: unknown) => fail(String(error)));
      setTimeout(ready, 0);
      return;
    }
    const json = { 'content-type': 'application/json' };
    connection
      .request('POST', '/connection/poll/open', json, JSON.stringify({ channels: [CHANNEL] }))
      .then(async (opened) => {
        if (opened.status !== 200) throw new Error(`poll/open ${opened.status}: ${opened.body.slice(0, 160)}`);
        const first = JSON.parse(opened.body) as { session: string; seq: number };
        let seq = first.seq;
        const headers = { ...json, 'herald-session': first.session };
        setTimeout(ready, 0);
        while (!stopped) {
          const answer = await connection.request('POST', '/connection/poll', headers, `{"seq":${seq}}`);
          if (answer.status !== 200) throw new Error(`poll ${answer.status}: ${answer.body.slice(0, 160)}`);
          seq = Math.max(seq, (JSON.parse(answer.body) as { seq: number }).seq);
        }
      })
      .catch((error: unknown) => {
        if (!stopped) fail(String(error));
      });
  });
}

async function openMany(flavor: Flavor, port: number, count: number): Promise<{ closers: Closer[]; failures: string[] }> {
  const closers: Closer[] = [];
  const failures: string[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < count) {
      next++;
      try {
        closers.push(await openOne(flavor, opts.transport, port));
      } catch (error) {
        failures.push(error instanceof Error ? error.message : String(error));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.inFlight, count) }, lane));
  return { closers, failures };
}

/** Asks the server for a heap snapshot and waits until the file is complete. */
async function snapshot(server: ServerProcess): Promise<string> {
  const dir = server.cwd;
  const before = new Set(readdirSync(dir));
  server.child.kill('SIGUSR2');
  const deadline = Date.now() + 180000;
  let file: string | undefined;
  let lastSize = -1;
  while (Date.now() < deadline) {
    await sleep(250);
    file ??= readdirSync(dir).find((name) => name.endsWith('.heapsnapshot') && !before.has(name));
    if (file === undefined) continue;
    const size = statSync(join(dir, file)).size;
    if (size > 0 && size === lastSize && readFileSync(join(dir, file), 'utf8').trimEnd().endsWith('}')) return join(dir, file);
    lastSize = size;
  }
  throw new Error('heap snapshot did not complete within 180 s');
}

interface RawSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
  nodes: number[];
  strings: string[];
}

function readHeap(file: string): Kinds {
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

async function measure(flavor: Flavor): Promise<TargetResult> {
  const n = opts.connections;
  let port: number;
  let pid: number;
  let server: ServerProcess | undefined;
  let stop: () => Promise<void>;
  if (flavor === 'nchan') {
    const nchan = await startNchan({ cpus: opts.serverCpu });
    port = nchan.port;
    pid = nchan.workerPid;
    stop = () => nchan.stop();
  } else {
    const kind = flavor === 'herald' || flavor === 'herald-before' || flavor === 'herald-lean' || flavor === 'herald-node-http' ? 'herald' : opts.transport === 'sse' ? 'raw-sse' : opts.transport === 'long-poll' ? 'raw-long-poll' : 'raw-ws';
    // `herald-lean`: the long-poll routes and the SSE opening on the lean HTTP layer (http.leanLongPoll, http.leanSse,
    // packages/server/src/edge/lean-http.ts); `herald-node-http`: both off.
    const config =
      flavor === 'herald-lean' || flavor === 'herald-node-http'
        ? { ...heraldBenchConfig(), http: { ...(heraldBenchConfig()['http'] as object | undefined), leanLongPoll: flavor === 'herald-lean', leanSse: flavor === 'herald-lean' } }
        : undefined;
    server = await startServerProcess({ kind, cpus: opts.serverCpu, nodeArgs: ['--heapsnapshot-signal=SIGUSR2', ...opts.nodeArgs], root: flavor === 'herald-before' ? opts.beforeRoot : undefined, config });
    port = server.port;
    pid = server.pid;
    stop = () => server!.stop();
  }
  try {
    const warm = await openMany(flavor, port, Math.min(WARM_UP_CONNECTIONS, n));
    for (const close of warm.closers) close();
    await sleep(opts.settleMs);
    const heapBefore = server === undefined ? undefined : readHeap(await snapshot(server));
    const rssBefore = await medianRss(pid);
    const began = Date.now();
    const { closers, failures } = await openMany(flavor, port, n);
    const openSeconds = (Date.now() - began) / 1000;
    process.stderr.write(`  ${opts.transport} ${flavor}: ${closers.length}/${n} open in ${openSeconds.toFixed(1)} s${failures.length > 0 ? `; failures: ${failures.slice(0, 3).join('; ')}` : ''}\n`);
    await sleep(opts.settleMs);
    const rssAfter = await medianRss(pid);
    const afterFile = server === undefined ? undefined : await snapshot(server);
    const heapAfter = afterFile === undefined ? undefined : readHeap(afterFile);
    if (afterFile !== undefined && opts.keepSnapshot !== undefined) {
      mkdirSync(opts.keepSnapshot, { recursive: true });
      copyFileSync(afterFile, join(opts.keepSnapshot, `${opts.transport}-${flavor}.heapsnapshot`));
    }
    for (const close of closers) close();
    const kinds = new Map<string, { bytes: number; count: number }>();
    if (heapBefore !== undefined && heapAfter !== undefined) {
      for (const [kind, entry] of heapAfter.kinds) {
        const old = heapBefore.kinds.get(kind) ?? { bytes: 0, count: 0 };
        kinds.set(kind, { bytes: (entry.bytes - old.bytes) / closers.length, count: (entry.count - old.count) / closers.length });
      }
    }
    return {
      flavor,
      connections: n,
      opened: closers.length,
      openSeconds,
      heapPerConnection: heapBefore === undefined || heapAfter === undefined ? undefined : (heapAfter.bytes - heapBefore.bytes) / closers.length,
      rssPerConnection: (rssAfter - rssBefore) / closers.length,
      kinds,
    };
  } finally {
    await stop();
  }
}

const names: Record<Flavor, string> = {
  raw: opts.transport === 'sse' ? 'raw SSE server' : opts.transport === 'long-poll' ? 'raw long-poll server' : 'raw ws server',
  herald: 'Herald',
  'herald-before': 'Herald before',
  'herald-lean': 'Herald, lean HTTP layer',
  'herald-node-http': 'Herald, lean HTTP layer off (node:http)',
  nchan: 'Nchan',
};

process.stderr.write(`memory per idle ${opts.transport} connection, ${opts.connections} connections; node ${process.version}${opts.nodeArgs.length > 0 ? `; node flags: ${opts.nodeArgs.join(' ')}` : ''}\n`);
const results: TargetResult[] = [];
for (const flavor of opts.targets) results.push(await measure(flavor));
const base = results.find((r) => r.flavor === (opts.transport === 'long-poll' ? 'nchan' : 'raw'));
const kib = (bytes: number | undefined): string => (bytes === undefined ? '—' : (bytes / 1024).toFixed(1));
const ratio = (value: number | undefined, baseline: number | undefined): string =>
  value === undefined || baseline === undefined || baseline <= 0 ? '—' : `${(value / baseline).toFixed(2)}×`;
const lines = [
  `| ${opts.transport} target | connections | heap KiB per connection | RSS KiB per connection | RSS vs ${base === undefined ? 'baseline' : names[base.flavor]} | open s |`,
  '|---|---:|---:|---:|---:|---:|',
];
for (const r of results) {
  lines.push(`| ${names[r.flavor]} | ${r.opened} | ${kib(r.heapPerConnection)} | ${kib(r.rssPerConnection)} | ${ratio(r.rssPerConnection, base?.rssPerConnection)} | ${r.openSeconds.toFixed(1)} |`);
}
const herald = results.find((r) => r.flavor === 'herald');
const raw = results.find((r) => r.flavor === 'raw');
if (herald !== undefined && opts.top > 0) {
  const rows = [...herald.kinds]
    .filter(([, entry]) => Math.abs(entry.bytes) >= 1)
    .sort((a, b) => b[1].bytes - a[1].bytes)
    .slice(0, opts.top);
  lines.push('', `| kind (Herald's largest) | Herald bytes | objects | raw bytes | objects |`, `|---|---:|---:|---:|---:|`);
  for (const [kind, entry] of rows) {
    const other = raw?.kinds.get(kind) ?? { bytes: 0, count: 0 };
    lines.push(`| \`${kind}\` | ${entry.bytes.toFixed(0)} | ${entry.count.toFixed(2)} | ${other.bytes.toFixed(0)} | ${other.count.toFixed(2)} |`);
  }
}
console.log(lines.join('\n'));
if (opts.json !== undefined) {
  writeFileSync(opts.json, JSON.stringify(results.map((r) => ({ ...r, kinds: Object.fromEntries(r.kinds) })), null, 2));
}
process.exit(0);
