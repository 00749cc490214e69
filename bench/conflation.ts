/**
 * Conflation channels: a fast channel with slow readers, conflation off vs
 * on in one run (docs/protocol.md, "Conflation"; docs/performance.md).
 *
 *   node bench/conflation.ts [--readers=20] [--rate=1000] [--seconds=15]
 *     [--payload=4096] [--keys=16] [--read-kib=64] [--transport=websocket|sse]
 *     [--rounds=1] [--server-cpu=0] [--client-cpu=1] [--modes=off,on[,cut]]
 *     [--server-node-args="--cpu-prof --cpu-prof-dir=DIR"] [--json=FILE]
 *
 * Per round and mode (alternating order): Herald starts pinned to
 * `--server-cpu` with namespace `px` (history 300, anonymous), conflation
 * on (`key: "k"`, default `lagBytes` and `maxKeys`) or off, and
 * `limits.outboundQueueBytes` at 1 GiB so that no slow reader is cut without
 * conflation either (with the default 1 MiB they would be, 3004): the "off"
 * server buffers what they cannot take yet (mode `cut`, not run by
 * default: conflation off with the default limit, where they are cut). From this process (pinned to
 * `--client-cpu`): `--readers` slow readers, raw sockets that read at most
 * `--read-kib` KiB per second (a sixtieth of what is published to them by
 * default; paused in between, so the kernel's socket buffers fill, a few MiB
 * per connection on loopback, and then the server's backlog grows), and one
 * reader that keeps up; then, after a 3 s warm-up at the same rate (the
 * server's heap grows to its working size), publications of `--payload`
 * bytes over `--keys` keys at `--rate` per second for `--seconds`, paced,
 * through `POST /api/publish` on four kept-alive connections. Each payload
 * carries its key, sequence number and send time (CLOCK_MONOTONIC).
 *
 * Measured over the publishing phase: server CPU (utime + stime of the
 * process), peak RSS (sampled every 100 ms) and its growth since the phase
 * began; from the server's metrics the publications conflated
 * (`herald_conflated_total`) and the readers cut as slow (3004); for the
 * slow readers the publications they read and the age of the newest value
 * each has read when publishing ends (max over readers: on loopback mostly
 * the kernel's socket buffers, megabytes per connection that no server can
 * conflate); the reader that keeps up must get every publication in every
 * mode. Printed: a row per mode and round, and the on/off ratios (means).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { heraldBenchConfig, newHistogram, nowUs, quantile, record } from './lib.ts';
import { HttpConnection } from './raw-clients.ts';
import { cpuSecondsOf, pinSelf, rssOf, sleep, startServerProcess } from './server-process.ts';

/** `cut`: conflation off with the default `limits.outboundQueueBytes` (1 MiB): what a slow reader gets without conflation out of the box. */
type Mode = 'off' | 'on' | 'cut';
type ReaderTransport = 'websocket' | 'sse';

const { values } = parseArgs({
  options: {
    readers: { type: 'string', default: '20' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '15' },
    payload: { type: 'string', default: '4096' },
    keys: { type: 'string', default: '16' },
    'read-kib': { type: 'string', default: '64' },
    transport: { type: 'string', default: 'websocket' },
    rounds: { type: 'string', default: '1' },
    'server-cpu': { type: 'string', default: '0' },
    'client-cpu': { type: 'string', default: '1' },
    modes: { type: 'string', default: 'off,on' },
    'server-node-args': { type: 'string', default: '' },
    json: { type: 'string' },
  },
  strict: true,
});
const readers = Number(values.readers);
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const payloadBytes = Number(values.payload);
const keys = Number(values.keys);
const readBytesPerSecond = Number(values['read-kib']) * 1024;
/** Slow readers get their read budget in slices this often. */
const READ_SLICE_MS = 50;
const transport = values.transport as ReaderTransport;
const rounds = Number(values.rounds);
if (transport !== 'websocket' && transport !== 'sse') throw new Error('--transport: websocket or sse');
pinSelf(values['client-cpu']);

const CHANNEL = 'px:ticker';
const PUBLISHERS = 4;

/** utime and stime of a process in seconds (/proc/<pid>/stat, CLK_TCK 100). */
function userSystemSeconds(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
}

/** Busy CPU-seconds of the whole machine so far (all CPUs, /proc/stat, CLK_TCK 100). */
function machineBusySeconds(): number {
  const v = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  // user nice system irq softirq
  return ((v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0)) / 100;
}

function selfCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/** A free loopback port (for the internal listener, whose metrics tell how many publications were conflated). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** From the server's metrics: publications conflated, and connections cut as slow (3004). */
async function serverCounts(adminPort: number): Promise<{ conflated: number; cut: number }> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const conflated = Number(/^herald_conflated_total (\d+)/m.exec(text)?.[1] ?? 0);
  let cut = 0;
  for (const match of text.matchAll(/^herald_disconnects_total\{[^}]*code="3004"[^}]*\} (\d+)/gm)) cut += Number(match[1]);
  return { conflated, cut };
}

function config(mode: Mode, adminPort: number): Record<string, unknown> {
  const base = heraldBenchConfig() as { channels: unknown; limits: Record<string, unknown> };
  return {
    ...base,
    admin: { host: '127.0.0.1', port: adminPort },
    channels: {
      defaults: {},
      namespaces: [{ name: 'px', allowAnonymous: true, historySize: 300, conflation: { enabled: mode === 'on', key: 'k' } }],
    },
    limits: mode === 'cut' ? base.limits : { ...base.limits, outboundQueueBytes: 1073741824 },
  };
}

/** The publication data: key, sequence number, send time (µs), padded to `payloadBytes`. */
function payload(seq: number): string {
  const bare = JSON.stringify({ k: `K${seq % keys}`, s: seq, t: nowUs(), p: '' });
  return bare.slice(0, -2) + 'x'.repeat(Math.max(0, payloadBytes - bare.length)) + '"}';
}

interface Publication {
  readonly k: string;
  readonly s: number;
  readonly t: number;
}

/** A subscriber on a raw socket; `slow`: reads at most `readBytesPerSecond`, paused in between. */
class Reader {
  readonly socket: Socket;
  readonly ages = newHistogram();
  delivered = 0;
  /** Send time of the newest value read (µs), 0 before any. */
  newestT = 0;
  ended: string | undefined;
  subscribed = false;
  #buffer: Buffer = Buffer.alloc(0);
  #text = '';
  #open = false;
  #timer: NodeJS.Timeout | undefined;
  #measuring = false;
  /** Bytes the slow reader may still read in this slice. */
  #budget = 0;

  constructor(port: number, slow: boolean) {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true });
    this.socket = socket;
    socket.on('connect', () => {
      if (transport === 'websocket') {
        socket.write(
          `GET /connection/websocket HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
            `sec-websocket-key: ${randomBytes(16).toString('base64')}\r\nsec-websocket-version: 13\r\n\r\n`,
        );
      } else {
        socket.write(`GET /connection/sse?channel=${encodeURIComponent(CHANNEL)} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n`);
      }
    });
    socket.on('data', (chunk: Buffer) => {
      this.#data(chunk);
      if (slow && this.subscribed) {
        this.#budget -= chunk.length;
        if (this.#budget <= 0) socket.pause();
      }
    });
    if (slow) {
      const slice = (readBytesPerSecond * READ_SLICE_MS) / 1000;
      this.#timer = setInterval(() => {
        this.#budget = Math.min(this.#budget + slice, slice);
        if (this.#budget > 0 && this.subscribed) socket.resume();
      }, READ_SLICE_MS);
    }
    socket.on('error', (error) => (this.ended ??= error.message));
    socket.on('close', () => (this.ended ??= 'closed'));
  }

  measure(on: boolean): void {
    this.#measuring = on;
  }

  close(): void {
    clearInterval(this.#timer);
    this.socket.destroy();
  }

  #data(chunk: Buffer): void {
    if (transport === 'sse') {
      this.#text += chunk.toString('utf8');
      if (!this.#open) {
        const at = this.#text.indexOf('\r\n\r\n');
        if (at === -1) return;
        this.#open = true;
        this.#text = this.#text.slice(at + 4);
      }
      let at = this.#text.indexOf('\n\n');
      while (at !== -1) {
        const event = this.#text.slice(0, at);
        this.#text = this.#text.slice(at + 2);
        for (const line of event.split('\n')) if (line.startsWith('data: ')) this.#frame(line.slice(6));
        at = this.#text.indexOf('\n\n');
      }
      return;
    }
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    if (!this.#open) {
      const at = this.#buffer.indexOf('\r\n\r\n');
      if (at === -1) return;
      this.#open = true;
      this.#buffer = this.#buffer.subarray(at + 4);
      this.#send('{"id":1,"method":"connect","params":{}}');
      this.#send(`{"id":2,"method":"subscribe","params":{"channel":"${CHANNEL}"}}`);
    }
    for (;;) {
      const buffer = this.#buffer;
      if (buffer.length < 2) return;
      let length = buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) return;
        length = buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffer.length < 10) return;
        length = Number(buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (buffer.length < offset + length) return;
      const opcode = buffer[0]! & 0x0f;
      const text = buffer.toString('utf8', offset, offset + length);
      this.#buffer = buffer.subarray(offset + length);
      if (opcode === 1) this.#frame(text);
      else if (opcode === 8) this.ended ??= `close ${text.slice(2)}`;
    }
  }

  #frame(text: string): void {
    const frame = JSON.parse(text) as { id?: number; push?: string; data?: Publication; error?: unknown };
    if (frame.id === 2 || frame.push === 'subscribed') {
      if (frame.error !== undefined) this.ended ??= `subscribe: ${JSON.stringify(frame.error)}`;
      this.subscribed = true;
      return;
    }
    if (frame.push === 'disconnect') this.ended ??= `disconnect ${text}`;
    if (frame.push !== 'publication' || frame.data === undefined || !this.#measuring) return;
    const now = nowUs();
    this.delivered++;
    record(this.ages, now - frame.data.t);
    if (frame.data.t > this.newestT) this.newestT = frame.data.t;
  }

  #send(text: string): void {
    const data = Buffer.from(text);
    const mask = randomBytes(4);
    const header = data.length < 126 ? Buffer.from([0x81, 0x80 | data.length]) : Buffer.from([0x81, 0x80 | 126, data.length >> 8, data.length & 0xff]);
    for (let i = 0; i < data.length; i++) data[i] = data[i]! ^ mask[i & 3]!;
    this.socket.write(Buffer.concat([header, mask, data]));
  }
}

interface Result {
  mode: Mode;
  round: number;
  published: number;
  /** How long publishing took (`--seconds` unless the server or the load generator fell behind). */
  phaseSeconds: number;
  cpuSeconds: number;
  /** Of which in user space and in the kernel (on loopback the kernel also does the readers' side of TCP). */
  userSeconds: number;
  systemSeconds: number;
  /** Cores busy outside the server and this process during the phase (other work on a shared machine skews CPU). */
  otherLoad: number;
  cpuPerPublicationUs: number;
  peakRssMiB: number;
  /** Peak RSS minus RSS when publishing began (after the warm-up). */
  rssGrowthMiB: number;
  slowDelivered: number;
  slowAgeP50ms: number;
  slowAgeP99ms: number;
  /** Oldest "newest value read" among slow readers when publishing ended, ms. */
  slowStaleAtEndMs: number;
  fastDelivered: number;
  /** herald_conflated_total: publications replaced before they were written to a slow reader. */
  conflated: number;
  /** Slow readers the server cut as slow (3004), from its metrics. */
  cut: number;
  disconnects: string[];
}

async function run(mode: Mode, round: number): Promise<Result> {
  const adminPort = await freePort();
  const nodeArgs = values['server-node-args'].split(' ').filter((a) => a !== '');
  const server = await startServerProcess({ kind: 'herald', cpus: values['server-cpu'], config: config(mode, adminPort), nodeArgs });
  const slow: Reader[] = [];
  const fast = new Reader(server.port, false);
  const publishers: HttpConnection[] = [];
  try {
    for (let i = 0; i < readers; i++) slow.push(new Reader(server.port, true));
    const all = [...slow, fast];
    const deadline = Date.now() + 15000;
    while (all.some((r) => !r.subscribed && r.ended === undefined)) {
      if (Date.now() > deadline) throw new Error('readers did not subscribe within 15 s');
      await sleep(20);
    }
    const failed = all.find((r) => r.ended !== undefined);
    if (failed !== undefined) throw new Error(`a reader failed: ${failed.ended}`);
    for (let i = 0; i < PUBLISHERS; i++) publishers.push(new HttpConnection(server.port));
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${server.apiKey}` };
    const publish = async (connection: HttpConnection, seq: number): Promise<void> => {
      const answer = await connection.request('POST', '/api/publish', headers, `{"channel":"${CHANNEL}","data":${payload(seq)}}`);
      if (answer.status !== 200) throw new Error(`publish ${answer.status}: ${answer.body.slice(0, 160)}`);
    };
    // Warm-up: 3 s at the full rate, not measured.
    const paced = async (count: number, first: number): Promise<void> => {
      let next = 0;
      const began = performance.now();
      await Promise.all(
        publishers.map(async (connection) => {
          for (let i = next++; i < count; i = next++) {
            const wait = began + (i * 1000) / rate - performance.now();
            if (wait > 1) await sleep(wait);
            await publish(connection, first + i);
          }
        }),
      );
    };
    await paced(3 * rate, 0);
    await sleep(500);
    for (const r of all) r.measure(true);
    const rssBefore = server.rss();
    let peakRss = rssBefore;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, rssOf(server.pid));
    }, 100);
    const cpuStart = cpuSecondsOf(server.pid);
    const splitStart = userSystemSeconds(server.pid);
    const machineStart = machineBusySeconds();
    const selfStart = selfCpuSeconds();
    const messages = Math.round(rate * seconds);
    const phaseStart = performance.now();
    await paced(messages, 3 * rate);
    const phaseSeconds = (performance.now() - phaseStart) / 1000;
    const cpuSeconds = cpuSecondsOf(server.pid) - cpuStart;
    const splitEnd = userSystemSeconds(server.pid);
    const userSeconds = splitEnd.user - splitStart.user;
    const systemSeconds = splitEnd.system - splitStart.system;
    const otherLoad = (machineBusySeconds() - machineStart - cpuSeconds - (selfCpuSeconds() - selfStart)) / phaseSeconds;
    const { conflated, cut } = await serverCounts(adminPort);
    const endUs = nowUs();
    clearInterval(sampler);
    peakRss = Math.max(peakRss, rssOf(server.pid));
    // The reader that keeps up gets everything (a moment for the last ones in flight).
    const until = Date.now() + 5000;
    while (fast.delivered < messages && Date.now() < until) await sleep(20);
    for (const r of all) r.measure(false);
    const ages = newHistogram();
    for (const r of slow) for (let i = 0; i < ages.length; i++) ages[i] = ages[i]! + r.ages[i]!;
    return {
      mode,
      round,
      published: messages,
      phaseSeconds,
      cpuSeconds,
      userSeconds,
      systemSeconds,
      otherLoad,
      cpuPerPublicationUs: (cpuSeconds / messages) * 1e6,
      peakRssMiB: peakRss / 1048576,
      rssGrowthMiB: (peakRss - rssBefore) / 1048576,
      slowDelivered: slow.reduce((sum, r) => sum + r.delivered, 0),
      slowAgeP50ms: quantile(ages, 0.5) / 1000,
      slowAgeP99ms: quantile(ages, 0.99) / 1000,
      slowStaleAtEndMs: Math.max(...slow.map((r) => (r.newestT === 0 ? Number.POSITIVE_INFINITY : (endUs - r.newestT) / 1000))),
      fastDelivered: fast.delivered,
      conflated,
      cut,
      disconnects: all.flatMap((r) => (r.ended === undefined ? [] : [r.ended])),
    };
  } finally {
    for (const r of [...slow, fast]) r.close();
    for (const p of publishers) p.close();
    await server.stop();
  }
}

const results: Result[] = [];
for (let round = 1; round <= rounds; round++) {
  const modes = values.modes.split(',') as Mode[];
  const order: Mode[] = round % 2 === 1 ? modes : [...modes].reverse();
  for (const mode of order) {
    process.stderr.write(`round ${round}: conflation ${mode}…\n`);
    results.push(await run(mode, round));
  }
}

const f = (x: number, digits = 1): string => (Number.isFinite(x) ? x.toFixed(digits) : '—');
console.log(
  `\nConflation: ${readers} slow ${transport} readers (at most ${values['read-kib']} KiB/s each) + 1 that keeps up; ` +
    `${rate} publications/s of ${payloadBytes} B over ${keys} keys for ${seconds} s; server on CPU ${values['server-cpu']}\n`,
);
console.log('| conflation | round | publishing s | server CPU s (user + sys) | CPU µs per publication | peak RSS MiB (growth) | delivered to slow readers | conflated (never written) | newest value read, age at end ms | reader that keeps up | cut as slow (3004) | other load (cores) |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of results) {
  console.log(
    `| ${r.mode} | ${r.round} | ${f(r.phaseSeconds)} | ${f(r.cpuSeconds, 2)} (${f(r.userSeconds, 2)} + ${f(r.systemSeconds, 2)}) | ${f(r.cpuPerPublicationUs)} | ${f(r.peakRssMiB)} (+${f(r.rssGrowthMiB)}) | ${r.slowDelivered} | ${r.conflated} | ${f(r.slowStaleAtEndMs, 0)} | ${r.fastDelivered}/${r.published} | ${r.cut} | ${f(r.otherLoad, 2)} |`,
  );
}
const mean = (mode: Mode, pick: (r: Result) => number): number => {
  const list = results.filter((r) => r.mode === mode).map(pick);
  return list.reduce((a, b) => a + b, 0) / list.length;
};
console.log(
  `\non / off: server CPU ${f(mean('on', (r) => r.cpuSeconds) / mean('off', (r) => r.cpuSeconds), 2)}× ` +
    `(user ${f(mean('on', (r) => r.userSeconds) / mean('off', (r) => r.userSeconds), 2)}×, sys ${f(mean('on', (r) => r.systemSeconds) / mean('off', (r) => r.systemSeconds), 2)}×), ` +
    `peak RSS ${f(mean('on', (r) => r.peakRssMiB) / mean('off', (r) => r.peakRssMiB), 2)}× ` +
    `(RSS growth while publishing ${f(mean('on', (r) => r.rssGrowthMiB) / mean('off', (r) => r.rssGrowthMiB), 2)}×)`,
);
for (const r of results) if (r.disconnects.length > 0) console.log(`${r.mode} round ${r.round}: ${r.disconnects.length} readers saw their connection end (${r.disconnects[0]})`);
if (values.json !== undefined) writeFileSync(values.json, JSON.stringify(results, null, 2));
