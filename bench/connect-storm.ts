/**
 * Connect storm: N clients connecting and subscribing at once (the reconnect
 * storm after a deploy or a network blip), each with a recovery position,
 * Herald vs the raw Node server of the transport and Nchan, in one run.
 *
 *   node bench/connect-storm.ts [--transports=ws,sse] [--clients=10000]
 *     [--in-flight=500] [--rounds=2] [--targets=raw,herald,nchan] (also raw-net, herald-before, herald-pipelined, herald-sequential)
 *     [--server-cpu=0] [--client-cpu=1] [--server-node-args=...] [--raw-node-args=...]
 *     [--engine=sqlite|memory] [--json=FILE] [--before-root=DIR] [--before-in-url]
 *     [--before-node-args=...] (Node flags of herald-before instead of --server-node-args: e.g. the same checkout with a V8 flag)
 *
 * Herald runs the benchmarks' production config (bench/lib.ts) on
 * `--engine` (default sqlite, the product's default, its state file in the
 * server's temporary directory).
 *
 * Per transport, round and target (alternating order): start the server
 * pinned to `--server-cpu`; for Herald publish 5 messages to `bench:fanout`
 * (history 300) and take the last one's position, one behind it is every
 * client's recovery position (so each recovers one publication). Then open
 * N clients from this process (pinned to `--client-cpu`, lean node:net
 * clients, bench/raw-clients.ts) with `--in-flight` attempts at a time
 * (Node's listen backlog is 511: beyond it, SYN retries would measure the
 * kernel's timers):
 * - WebSocket: Herald opened in the upgrade request, as the SDK opens it
 *   (`connect=1` and the position vector in `last_event_id`), done at the
 *   `subscribed` push; target `herald-pipelined`: `connect` and, right behind
 *   it, `subscribe` with `recover`, `epoch` and `offset` as commands, done at
 *   its reply (the SDK before the upgrade-request open); target
 *   `herald-sequential`: `subscribe` sent after the connect reply; raw ws done when open; Nchan done when
 *   open (its WebSocket subscriber is subscribed by the upgrade);
 * - SSE: target `raw-net`: the raw SSE server's streams on `node:net` with
 *   llhttp (bench/raw-net-long-poll-server.ts, no IncomingMessage nor
 *   ServerResponse), done at its first event as the raw server;
 * - SSE: Herald `GET /connection/sse` with `Last-Event-ID: <position
 *   vector>`, done at the `subscribed` event; raw SSE done at its first
 *   event; Nchan done when the stream's head arrives.
 * Measured: the time from the first attempt until every client is done, and
 * the server's CPU (utime + stime, Nchan: its worker) over that time.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { encodePositions } from '@herald/protocol';
import { CHANNEL, heraldBenchConfig, nowUs } from './lib.ts';
import { nchanChannelId, nchanUnavailable, startNchan } from './nchan.ts';
import { HttpConnection, openSse, openWebSocket } from './raw-clients.ts';
import { cpuSecondsOf, pinSelf, sleep, startServerProcess } from './server-process.ts';

type Transport = 'ws' | 'sse';
/** `herald-sequential` (WebSocket only): `subscribe` sent after the `connect` reply, as the SDK did before it pipelined them. */
/** `herald-pipelined` (WebSocket only): `connect` and `subscribe` as commands, pipelined, as the SDK did before it opened in the upgrade request. */
/** `herald-before`: `herald` from another checkout (`--before-root`, e.g. a worktree of the code before a change, with its own `npm ci`). */
/** `raw-net` (SSE only): the raw SSE server's streams on `node:net` with llhttp, without node:http's request and response objects (bench/raw-net-long-poll-server.ts). */
type Flavor = 'raw' | 'raw-net' | 'herald' | 'herald-pipelined' | 'herald-sequential' | 'herald-before' | 'nchan';
const isHerald = (flavor: Flavor): boolean => flavor === 'herald' || flavor === 'herald-pipelined' || flavor === 'herald-sequential' || flavor === 'herald-before';

const { values } = parseArgs({
  options: {
    transports: { type: 'string', default: 'ws,sse' },
    clients: { type: 'string', default: '10000' },
    'in-flight': { type: 'string', default: '500' },
    rounds: { type: 'string', default: '2' },
    targets: { type: 'string', default: 'raw,herald,nchan' },
    'server-cpu': { type: 'string', default: '0' },
    'client-cpu': { type: 'string', default: '1' },
    'server-node-args': { type: 'string', default: '' },
    'raw-node-args': { type: 'string', default: '' },
    engine: { type: 'string', default: 'sqlite' },
    'before-root': { type: 'string' },
    /** `herald-before` opens in the upgrade request as `herald` does (its checkout must have connect=1); default: by commands, pipelined. */
    'before-in-url': { type: 'boolean', default: false },
    'before-node-args': { type: 'string' },
    json: { type: 'string' },
  },
  strict: true,
});
const transports = values.transports.split(',') as Transport[];
const clients = Number(values.clients);
const inFlight = Number(values['in-flight']);
const rounds = Number(values.rounds);
const targets = values.targets.split(',') as Flavor[];
const serverNodeArgs = values['server-node-args'].split(' ').filter((a) => a !== '');
const rawNodeArgs = values['raw-node-args'].split(' ').filter((a) => a !== '');
const beforeNodeArgs = values['before-node-args'] === undefined ? serverNodeArgs : values['before-node-args'].split(' ').filter((a) => a !== '');
if (targets.includes('herald-before') && values['before-root'] === undefined) throw new Error('herald-before needs --before-root');
if (targets.includes('nchan') && nchanUnavailable() !== undefined) {
  process.stderr.write(`Nchan skipped: ${nchanUnavailable()}\n`);
  targets.splice(targets.indexOf('nchan'), 1);
}
pinSelf(values['client-cpu']);

interface Position {
  epoch: string;
  offset: number;
}

interface Result {
  transport: Transport;
  flavor: Flavor;
  round: number;
  done: number;
  seconds: number;
  cpuSeconds: number;
  /** CPU of this process (the clients) over the storm. */
  clientCpuSeconds: number;
  failures: string[];
}

type Closer = () => void;

function openOne(transport: Transport, flavor: Flavor, port: number, since: Position | undefined): Promise<Closer> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let close: Closer = () => {};
    const timer = setTimeout(() => fail('timeout'), 60000);
    const ready = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(close);
    };
    const fail = (reason: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      close();
      reject(new Error(reason));
    };
    const nchanPath = '/sub/' + nchanChannelId(CHANNEL);
    if (transport === 'ws') {
      const subscribe =
        since === undefined
          ? `{"id":2,"method":"subscribe","params":{"channel":"${CHANNEL}"}}`
          : `{"id":2,"method":"subscribe","params":{"channel":"${CHANNEL}","recover":true,"epoch":"${since.epoch}","offset":${since.offset}}}`;
      // Opened in the upgrade request: connect and subscribe in the URL, nothing sent after the 101.
      const inUrl = flavor === 'herald' || (flavor === 'herald-before' && values['before-in-url']);
      const openPath =
        '/connection/websocket?connect=1' +
        (since === undefined ? `&channel=${encodeURIComponent(CHANNEL)}` : `&last_event_id=${encodeURIComponent(encodePositions([[CHANNEL, since]]))}`);
      const ws = openWebSocket(port, inUrl ? openPath : isHerald(flavor) ? '/connection/websocket' : flavor === 'nchan' ? nchanPath : '/', {
        onOpen() {
          if (!isHerald(flavor)) {
            ready();
            return;
          }
          if (inUrl) return;
          ws.send('{"id":1,"method":"connect","params":{}}');
          // As the SDK does: the subscribe right behind connect, before its reply.
          if (flavor !== 'herald-sequential') ws.send(subscribe);
        },
        onMessage(text) {
          if (!isHerald(flavor) || settled) return;
          if (inUrl) {
            if (text.includes('"push":"subscribed"')) ready();
            else if (text.includes('"push":"unsubscribed"')) fail(`refused: ${text}`);
            return;
          }
          const frame = JSON.parse(text) as { id?: number; error?: unknown };
          if (frame.error !== undefined) fail(`reply error ${JSON.stringify(frame.error)}`);
          else if (frame.id === 1 && flavor === 'herald-sequential') ws.send(subscribe);
          else if (frame.id === 2) ready();
        },
        onEnd: fail,
      });
      close = () => ws.close();
      return;
    }
    const headers: Record<string, string> = {};
    if (isHerald(flavor) && since !== undefined) headers['last-event-id'] = encodePositions([[CHANNEL, since]]);
    const path = isHerald(flavor) ? '/connection/sse' : flavor === 'nchan' ? nchanPath : '/';
    const socket = openSse(port, path, headers, {
      onOpen() {
        if (flavor === 'nchan') ready();
      },
      onEvent(data) {
        if (flavor === 'raw' || flavor === 'raw-net') ready();
        else if (isHerald(flavor) && data.includes('"push":"subscribed"')) ready();
      },
      onEnd: fail,
    });
    close = () => socket.destroy();
  });
}

async function storm(transport: Transport, flavor: Flavor, round: number): Promise<Result> {
  let port: number;
  let pid: number;
  let stop: () => Promise<void>;
  let since: Position | undefined;
  if (flavor === 'nchan') {
    const nchan = await startNchan({ cpus: values['server-cpu'] });
    port = nchan.port;
    pid = nchan.workerPid;
    stop = () => nchan.stop();
  } else {
    const kind = isHerald(flavor) ? 'herald' : flavor === 'raw-net' ? 'raw-net-long-poll' : transport === 'ws' ? 'raw-ws' : 'raw-sse';
    const config =
      values.engine === 'sqlite' ? { ...heraldBenchConfig(), engine: { type: 'sqlite' }, stateDir: 'state' } : { ...heraldBenchConfig(), engine: { type: values.engine } };
    const root = flavor === 'herald-before' ? values['before-root'] : undefined;
    const args = flavor === 'raw-net' ? ['--parser=llhttp'] : undefined;
    const server = await startServerProcess({ kind, cpus: values['server-cpu'], nodeArgs: flavor === 'herald-before' ? beforeNodeArgs : isHerald(flavor) ? serverNodeArgs : rawNodeArgs, config, root, args });
    port = server.port;
    pid = server.pid;
    stop = () => server.stop();
    if (isHerald(flavor)) {
      const api = new HttpConnection(port);
      let last: Position | undefined;
      for (let i = 0; i < 5; i++) {
        const answer = await api.request('POST', '/api/publish', { 'content-type': 'application/json', authorization: `Bearer ${server.apiKey}` }, `{"channel":"${CHANNEL}","data":{"n":${i}}}`);
        if (answer.status !== 200) throw new Error(`publish ${answer.status}: ${answer.body}`);
        last = JSON.parse(answer.body) as Position;
      }
      api.close();
      since = { epoch: last!.epoch, offset: last!.offset - 1 };
    }
  }
  const closers: Closer[] = [];
  const failures: string[] = [];
  try {
    await sleep(1000);
    const cpuStart = cpuSecondsOf(pid);
    const clientStart = process.cpuUsage();
    const began = performance.now();
    const windowStart = nowUs();
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < clients) {
        next++;
        try {
          closers.push(await openOne(transport, flavor, port, since));
        } catch (error) {
          failures.push(error instanceof Error ? error.message : String(error));
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(inFlight, clients) }, lane));
    const seconds = (performance.now() - began) / 1000;
    // For a CPU profile of the server (--server-node-args="--cpu-prof ..."): bench/profile-summary.ts --window=FROM-TO
    process.stderr.write(`  ${transport} ${flavor}: storm window ${windowStart}-${nowUs()}\n`);
    const cpuSeconds = cpuSecondsOf(pid) - cpuStart;
    const client = process.cpuUsage(clientStart);
    const clientCpuSeconds = (client.user + client.system) / 1e6;
    return { transport, flavor, round, done: closers.length, seconds, cpuSeconds, clientCpuSeconds, failures: failures.slice(0, 5) };
  } finally {
    for (const close of closers) close();
    await sleep(500);
    await stop();
  }
}

process.stderr.write(`connect storm: ${clients} clients, ${inFlight} in flight, ${rounds} round(s), Herald on the ${values.engine} engine; node ${process.version}\n`);
const results: Result[] = [];
for (const transport of transports) {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? targets : [...targets].reverse();
    for (const flavor of order) {
      if ((flavor === 'herald-sequential' || flavor === 'herald-pipelined') && transport !== 'ws') continue;
      if (flavor === 'raw-net' && transport !== 'sse') continue;
      const result = await storm(transport, flavor, round);
      results.push(result);
      process.stderr.write(
        `  ${transport} ${flavor} round ${round + 1}: ${result.done}/${clients} in ${result.seconds.toFixed(2)} s, server CPU ${result.cpuSeconds.toFixed(2)} s, clients' CPU ${result.clientCpuSeconds.toFixed(2)} s${result.failures.length > 0 ? `; failures: ${result.failures.join('; ')}` : ''}\n`,
      );
    }
  }
}

/** The median; for an even count, the mean of the middle two. */
const median = (list: number[]): number => {
  const sorted = [...list].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const names: Record<Flavor, (t: Transport) => string> = {
  raw: (t) => (t === 'ws' ? 'raw ws server' : 'raw SSE server'),
  'raw-net': () => 'raw SSE on node:net (llhttp, no IncomingMessage/ServerResponse)',
  herald: (t) => (t === 'ws' ? 'Herald (connect and subscribe in the upgrade request, as the SDK)' : 'Herald'),
  'herald-pipelined': () => 'Herald (subscribe pipelined behind connect, commands)',
  'herald-sequential': () => 'Herald (subscribe after the connect reply)',
  'herald-before': (t) =>
    t === 'ws' ? `Herald before (--before-root), ${values['before-in-url'] ? 'in the upgrade request' : 'subscribe pipelined'}` : 'Herald before (--before-root)',
  nchan: () => 'Nchan',
};
const lines = [
  '| transport | target | clients done | seconds | vs raw | server CPU-s | vs raw | load generator CPU-s |',
  '|---|---|---:|---:|---:|---:|---:|---:|',
];
for (const transport of transports) {
  const of = (flavor: Flavor) => results.filter((r) => r.transport === transport && r.flavor === flavor);
  const raw = of('raw');
  const rawSeconds = raw.length > 0 ? median(raw.map((r) => r.seconds)) : undefined;
  const rawCpu = raw.length > 0 ? median(raw.map((r) => r.cpuSeconds)) : undefined;
  for (const flavor of targets) {
    const list = of(flavor);
    if (list.length === 0) continue;
    const s = median(list.map((r) => r.seconds));
    const cpu = median(list.map((r) => r.cpuSeconds));
    lines.push(
      `| ${transport} | ${names[flavor](transport)} | ${median(list.map((r) => r.done))} | ${s.toFixed(2)} | ${rawSeconds === undefined ? '—' : `${(s / rawSeconds).toFixed(2)}×`} | ${cpu.toFixed(2)} | ${rawCpu === undefined ? '—' : `${(cpu / rawCpu).toFixed(2)}×`} | ${median(list.map((r) => r.clientCpuSeconds)).toFixed(2)} |`,
    );
  }
}
console.log(lines.join('\n'));
if (values.json !== undefined) writeFileSync(values.json, JSON.stringify(results, null, 2));
process.exit(0);
