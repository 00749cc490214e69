/**
 * JavaScript hooks benchmark (issue 17, part 2): client publishes per second
 * through a trivial `onPublish` hook against no hook, in one run, printed as
 * a ratio (goal: at least 0.5×).
 *
 * Setup as bench/publish.ts: `herald serve` from the sources (production
 * mode, bench/lib.ts's config, memory engine) pinned to one core
 * (`--server-cpu`; its sandbox processes inherit the pinning, so the hook's
 * cost is paid on the server's core), this process to the other
 * (`--loader-cpu`). The `bench` namespace takes anonymous clients that may
 * publish. `--clients` WebSocket clients each subscribe to a channel of
 * their own and publish 100-byte messages into it over the `publish`
 * command, `--in-flight` commands in flight in all; a publish counts when
 * its reply and its delivery back to the client arrived. Per target:
 * `--warmup` publishes, then `--publications` measured. Targets, in
 * alternating order over `--rounds`:
 *
 * - `none`: no hook;
 * - `js`: `hooks.javascript` with `export function onPublish() {}` (allow);
 * - `js-rewrite`: a hook that returns new data (`{result: {data}}`).
 *
 * Prints publishes/s, the server's CPU per publish and its sandbox
 * processes' CPU per publish (utime + stime from /proc), and two ratios of
 * each hook target to `none` of the same round: publishes per second, and
 * publishes per CPU-second (server and sandboxes together against the
 * server alone: the ratio when the server's core is the bound, which the
 * first one is only on an idle machine).
 *
 *   node bench/js-hooks.ts [--quick] [--clients=50] [--in-flight=64]
 *     [--publications=20000] [--warmup=2000] [--rounds=2]
 *     [--targets=none,js,js-rewrite] [--server-cpu=0] [--loader-cpu=1] [--json=FILE]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { heraldBenchConfig, makePayload, nowUs, runAlternatingRounds } from './lib.ts';
import { cpuSecondsOf, pinSelf, startServerProcess, type ServerProcess } from './server-process.ts';

const TARGETS = ['none', 'js', 'js-rewrite'] as const;
type Target = (typeof TARGETS)[number];

const HOOKS: Record<Exclude<Target, 'none'>, string> = {
  js: 'export function onPublish() {}\n',
  'js-rewrite': 'export function onPublish(e) { return { result: { data: { ...e.data, checked: true } } }; }\n',
};

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    clients: { type: 'string', default: '50' },
    'in-flight': { type: 'string', default: '64' },
    publications: { type: 'string', default: '20000' },
    warmup: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '2' },
    targets: { type: 'string', default: TARGETS.join(',') },
    'server-cpu': { type: 'string', default: '0' },
    'loader-cpu': { type: 'string', default: '1' },
    json: { type: 'string' },
  },
});
const quick = values.quick;
const clients = Number(values.clients);
const inFlight = Number(values['in-flight']);
const publications = quick ? 5000 : Number(values.publications);
const warmup = quick ? 500 : Number(values.warmup);
const rounds = quick ? 1 : Number(values.rounds);
const targets = values.targets.split(',').filter((t): t is Target => (TARGETS as readonly string[]).includes(t));
const pinned = cpus().length >= 2;
if (pinned) pinSelf(values['loader-cpu']);

interface Result {
  readonly target: Target;
  readonly round: number;
  readonly perSecond: number;
  readonly serverCpuUs: number;
  readonly sandboxCpuUs: number;
}

/** The server's child processes (its sandboxes), from /proc. */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function sandboxCpu(pid: number): number {
  let total = 0;
  for (const child of childrenOf(pid)) {
    try {
      total += cpuSecondsOf(child);
    } catch {
      // exited
    }
  }
  return total;
}

/** A client: connected anonymously, subscribed to its own channel. */
class Publisher {
  readonly ws: WebSocket;
  readonly channel: string;
  #nextId = 1;
  readonly #replies = new Map<number, (frame: Record<string, unknown>) => void>();
  onDelivery: () => void = () => undefined;

  constructor(url: string, channel: string) {
    this.ws = new WebSocket(url);
    this.channel = channel;
    this.ws.on('message', (data: Buffer) => {
      for (const line of data.toString('utf8').split('\n')) {
        if (line === '') continue;
        const frame = JSON.parse(line) as Record<string, unknown>;
        if (typeof frame['id'] === 'number' && frame['push'] === undefined) {
          const resolve = this.#replies.get(frame['id']);
          this.#replies.delete(frame['id']);
          resolve?.(frame);
        } else if (frame['push'] === 'publication') this.onDelivery();
      }
    });
  }

  async open(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    await this.call('connect', {});
    await this.call('subscribe', { channel: this.channel });
  }

  call(method: string, params: unknown): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#replies.set(id, (frame) => (frame['error'] === undefined ? resolve(frame) : reject(new Error(`${method}: ${JSON.stringify(frame['error'])}`))));
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }
}

/** Publishes `count` times with `inFlight` commands in flight; resolves when every reply and delivery arrived. */
async function publishAll(publishers: readonly Publisher[], count: number): Promise<void> {
  let started = 0;
  let delivered = 0;
  let replied = 0;
  await new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (delivered >= count && replied >= count) resolve();
    };
    for (const p of publishers) {
      p.onDelivery = () => {
        delivered++;
        check();
      };
    }
    const next = (): void => {
      if (started >= count) return;
      const seq = started++;
      const publisher = publishers[seq % publishers.length]!;
      publisher
        .call('publish', { channel: publisher.channel, data: JSON.parse(makePayload(seq, nowUs())) })
        .then(() => {
          replied++;
          check();
          next();
        }, reject);
    };
    for (let i = 0; i < inFlight; i++) next();
  });
}

async function run(target: Target, round: number): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-js-hooks-'));
  const config = heraldBenchConfig() as Record<string, any>;
  config['channels'] = { defaults: {}, namespaces: [{ name: 'bench', allowAnonymous: true, clientPublish: true, historySize: 300 }] };
  if (target !== 'none') {
    const file = join(dir, 'hooks.js');
    writeFileSync(file, HOOKS[target]);
    config['hooks'] = { javascript: { file, events: ['publish'] } };
  }
  let server: ServerProcess | undefined;
  const publishers: Publisher[] = [];
  try {
    server = await startServerProcess({ kind: 'herald', config, cpus: pinned ? values['server-cpu'] : undefined });
    const url = `ws://127.0.0.1:${server.port}/connection/websocket`;
    for (let i = 0; i < clients; i++) publishers.push(new Publisher(url, `bench:js-${i}`));
    await Promise.all(publishers.map((p) => p.open()));
    await publishAll(publishers, warmup);
    const cpu0 = server.cpuSeconds();
    const sandbox0 = sandboxCpu(server.pid);
    const t0 = performance.now();
    await publishAll(publishers, publications);
    const seconds = (performance.now() - t0) / 1000;
    const result: Result = {
      target,
      round,
      perSecond: publications / seconds,
      serverCpuUs: ((server.cpuSeconds() - cpu0) * 1e6) / publications,
      sandboxCpuUs: ((sandboxCpu(server.pid) - sandbox0) * 1e6) / publications,
    };
    console.log(
      `  round ${round} ${target.padEnd(10)} ${result.perSecond.toFixed(0).padStart(7)} publishes/s  server CPU ${result.serverCpuUs.toFixed(1)} µs/publish  sandboxes ${result.sandboxCpuUs.toFixed(1)} µs/publish`,
    );
    return result;
  } finally {
    for (const p of publishers) p.ws.terminate();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(
  `JavaScript hooks benchmark: ${clients} WebSocket clients, ${inFlight} publishes in flight, ${publications} measured after ${warmup}, ${rounds} round(s), server ${pinned ? `on CPU ${values['server-cpu']}` : 'not pinned'}`,
);
const skipped: string[] = [];
const results = await runAlternatingRounds(
  targets,
  (target) => target,
  rounds,
  async (target, _targets, round) => [await run(target, round)],
  skipped,
  (line) => console.log(line),
);
console.log('\nsummary (medians over rounds; ratios to `none` of the same round):');
const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted.length % 2 === 1 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
};
const summary: Record<string, unknown>[] = [];
for (const target of targets) {
  const own = results.filter((r) => r.target === target);
  const baseline = (r: Result): Result | undefined => results.find((n) => n.target === 'none' && n.round === r.round);
  const ratios = own.map((r) => r.perSecond / (baseline(r)?.perSecond ?? NaN)).filter(Number.isFinite);
  // Publishes per CPU-second of the server and its sandboxes: what the ratio is when the server's core is the bound.
  const cpuRatios = own.map((r) => (baseline(r)?.serverCpuUs ?? NaN) / (r.serverCpuUs + r.sandboxCpuUs)).filter(Number.isFinite);
  const line = {
    target,
    perSecond: median(own.map((r) => r.perSecond)),
    serverCpuUs: median(own.map((r) => r.serverCpuUs)),
    sandboxCpuUs: median(own.map((r) => r.sandboxCpuUs)),
    ratio: median(ratios),
    cpuRatio: median(cpuRatios),
  };
  summary.push(line);
  console.log(
    `  ${target.padEnd(10)} ${line.perSecond.toFixed(0).padStart(7)} publishes/s  ${target === 'none' ? '' : `${line.ratio.toFixed(2)}× no hook (publishes/s), ${line.cpuRatio.toFixed(2)}× (publishes per CPU-second)  `}server ${line.serverCpuUs.toFixed(1)} µs + sandboxes ${line.sandboxCpuUs.toFixed(1)} µs CPU per publish`,
  );
}
for (const line of skipped) console.log(`  skipped: ${line}`);
if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ results, summary, skipped }, null, 2));
