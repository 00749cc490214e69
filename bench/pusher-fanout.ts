/**
 * Pusher fan-out benchmark: server CPU per delivery of the Pusher protocol
 * endpoint (`/app/{key}`) against the native WebSocket protocol, in one run
 * on one Herald process (goal: within 1.1×).
 *
 *   node bench/pusher-fanout.ts [--subscribers=2000] [--messages=200]
 *     [--delivery-rate=20000] [--rounds=2] [--server-cpu=0] [--loader-cpu=1] [--json=FILE]
 *
 * One `herald serve` (memory engine, one app) pinned to `--server-cpu`; this
 * process, pinned to `--loader-cpu`, holds the subscribers: N native
 * WebSocket clients (connect, subscribe) or N Pusher protocol 7 clients
 * (pusher:subscribe), on the same channel of the default app, so both get
 * the same publications. Each phase publishes M publications of a
 * Pusher-shaped event (`{"event", "data"}`, 100 bytes of data) through the
 * HTTP API at a steady rate (--delivery-rate / N per second), waits until
 * every subscriber has all M, and reads the server's utime + stime
 * (/proc/<pid>/stat) before and after. Phases alternate (native, pusher,
 * native, pusher, …) so that drift hits both; the ratio is the Pusher
 * endpoint's CPU per delivery over the native one's, per round and overall.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { heraldBenchConfig } from './lib.ts';
import { pinSelf, sleep, startServerProcess, type ServerProcess } from './server-process.ts';

const CHANNEL = 'bench-pusher-fanout';
const APP_KEY = 'bench-key';

const { values } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '2000' },
    messages: { type: 'string', default: '200' },
    'delivery-rate': { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '2' },
    'server-cpu': { type: 'string', default: '0' },
    'loader-cpu': { type: 'string', default: '1' },
    json: { type: 'string' },
  },
});
const N = Number(values.subscribers);
const M = Number(values.messages);
const rounds = Number(values.rounds);
const perSecond = Math.max(1, Number(values['delivery-rate']) / N);
const pinned = cpus().length >= 2;

type Kind = 'native' | 'pusher';

interface Phase {
  readonly kind: Kind;
  readonly round: number;
  readonly deliveries: number;
  readonly cpuSeconds: number;
  readonly microsPerDelivery: number;
}

/** Opens `count` subscribers of one kind; resolves once all are subscribed. `onEvent` counts deliveries. */
async function openSubscribers(server: ServerProcess, kind: Kind, count: number, onEvent: () => void): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  const open = (): Promise<WebSocket> =>
    new Promise((resolve, reject) => {
      const url = kind === 'native' ? `ws://127.0.0.1:${server.port}/connection/websocket` : `ws://127.0.0.1:${server.port}/app/${APP_KEY}?protocol=7&client=bench&version=1`;
      const ws = new WebSocket(url, { perMessageDeflate: false });
      const timer = setTimeout(() => reject(new Error(`${kind}: subscribe timeout`)), 20000);
      let ready = false;
      ws.on('error', reject);
      ws.on('message', (data: Buffer) => {
        if (ready) {
          onEvent();
          return;
        }
        const frame = JSON.parse(data.toString()) as Record<string, any>;
        if (kind === 'native') {
          if (frame['id'] === 1) ws.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel: CHANNEL } }));
          else if (frame['id'] === 2) {
            ready = true;
            clearTimeout(timer);
            resolve(ws);
          }
        } else if (frame['event'] === 'pusher:connection_established') {
          ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: CHANNEL } }));
        } else if (frame['event'] === 'pusher_internal:subscription_succeeded') {
          ready = true;
          clearTimeout(timer);
          resolve(ws);
        }
      });
      if (kind === 'native') ws.on('open', () => ws.send(JSON.stringify({ id: 1, method: 'connect', params: {} })));
    });
  for (let i = 0; i < count; i += 100) sockets.push(...(await Promise.all(Array.from({ length: Math.min(100, count - i) }, open))));
  return sockets;
}

async function publish(server: ServerProcess, seq: number): Promise<void> {
  const data = JSON.stringify({ seq, pad: 'x'.repeat(80) }).slice(0, 100);
  const response = await fetch(`http://127.0.0.1:${server.port}/api/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel: CHANNEL, data: { event: 'bench', data } }),
  });
  if (response.status !== 200) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
}

async function phase(server: ServerProcess, kind: Kind, round: number): Promise<Phase> {
  let delivered = 0;
  const sockets = await openSubscribers(server, kind, N, () => delivered++);
  await sleep(1000);
  // Warm-up: a few publications not measured.
  for (let i = 0; i < 5; i++) await publish(server, -1 - i);
  const warm = 5 * N;
  const warmDeadline = Date.now() + 20000;
  while (delivered < warm && Date.now() < warmDeadline) await sleep(20);
  delivered = 0;
  const cpu0 = server.cpuSeconds();
  const started = Date.now();
  for (let i = 0; i < M; i++) {
    const due = started + (i * 1000) / perSecond;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    await publish(server, i);
  }
  const deadline = Date.now() + 60000;
  while (delivered < M * N && Date.now() < deadline) await sleep(10);
  const cpuSeconds = server.cpuSeconds() - cpu0;
  const deliveries = delivered;
  for (const ws of sockets) ws.terminate();
  await sleep(1500);
  if (deliveries < M * N) process.stderr.write(`${kind}: ${deliveries} of ${M * N} deliveries arrived\n`);
  return { kind, round, deliveries, cpuSeconds, microsPerDelivery: (cpuSeconds * 1e6) / deliveries };
}

async function main(): Promise<void> {
  if (pinned) pinSelf(values['loader-cpu']!);
  const cwd = mkdtempSync(join(tmpdir(), 'herald-bench-pusher-'));
  const secretFile = join(cwd, 'app.secret');
  writeFileSync(secretFile, randomBytes(16).toString('hex'), { mode: 0o600 });
  const base = heraldBenchConfig() as Record<string, any>;
  const config = {
    ...base,
    channels: { defaults: { allowAnonymous: true, historySize: 300 }, namespaces: base['channels'].namespaces },
    apps: { list: [{ id: 'bench', key: APP_KEY, secretFile }] },
  };
  const server = await startServerProcess({ kind: 'herald', cpus: pinned ? values['server-cpu'] : undefined, config, cwd });
  const phases: Phase[] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const kind of ['native', 'pusher'] as const) {
        const result = await phase(server, kind, round);
        phases.push(result);
        console.log(`round ${round} ${kind.padEnd(6)}: ${result.deliveries} deliveries, ${result.cpuSeconds.toFixed(2)} s CPU, ${result.microsPerDelivery.toFixed(2)} µs/delivery`);
      }
    }
  } finally {
    await server.stop();
    rmSync(cwd, { recursive: true, force: true });
  }
  const total = (kind: Kind) => {
    const list = phases.filter((p) => p.kind === kind);
    const cpu = list.reduce((sum, p) => sum + p.cpuSeconds, 0);
    const deliveries = list.reduce((sum, p) => sum + p.deliveries, 0);
    return (cpu * 1e6) / deliveries;
  };
  const ratio = total('pusher') / total('native');
  console.log(`N=${N} M=${M} ${perSecond.toFixed(1)} publications/s, server ${pinned ? `pinned to CPU ${values['server-cpu']}` : 'not pinned'}`);
  console.log(`native ${total('native').toFixed(2)} µs/delivery, pusher ${total('pusher').toFixed(2)} µs/delivery, ratio pusher/native ${ratio.toFixed(3)} (goal ≤ 1.1)`);
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ subscribers: N, messages: M, perSecond, phases, native: total('native'), pusher: total('pusher'), ratio }, null, 2));
}

await main();
