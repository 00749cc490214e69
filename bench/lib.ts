/**
 * Shared pieces of the fan-out benchmark: the payload format, the latency
 * histogram and the messages between the orchestrator (`fanout.ts`) and its
 * load-generator processes (`fanout-client.ts`).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export const TRANSPORTS = ['raw-ws', 'websocket', 'sse', 'long-poll'] as const;
export type Transport = (typeof TRANSPORTS)[number];

export const CHANNEL = 'bench:fanout';

/**
 * The Herald configuration every fan-out benchmark runs: production mode,
 * namespace `bench` (anonymous, history 300, default presence), limits per
 * IP raised because every bench client comes from 127.0.0.1, pings every
 * 10 minutes (so idle connections stay idle while measured). Production
 * mode takes no secret from the file: `benchSecrets` gives them as
 * environment variables.
 */
export function heraldBenchConfig(): Record<string, unknown> {
  return {
    mode: 'production',
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    process: { allowRoot: true },
    log: { level: 'info' },
    // The engine the earlier numbers in docs/performance.md were measured on; bench/sqlite.ts compares it with sqlite.
    engine: { type: 'memory' },
    api: { rateLimitPerIp: 100000000, rateLimitPerKey: 100000000 },
    channels: { defaults: {}, namespaces: [{ name: 'bench', allowAnonymous: true, historySize: 300 }] },
    limits: {
      inboundRatePerSecond: 100000,
      inboundBurst: 100000,
      inboundHardPerSecond: 1000000,
      maxConnectionsPerIp: 1000000,
      newConnectionsPerIpPerSecond: 1000000,
    },
    ping: { intervalMs: 600000 },
  };
}

/** The environment of a benchmarked Herald: its token secret and an admin API key. */
export function benchSecrets(apiKey: string): Record<string, string> {
  return { HERALD_AUTH_HMAC_SECRET: randomBytes(32).toString('base64url'), HERALD_API_KEY: apiKey };
}

/** Payload size in bytes: the serialized `data` of every publication. */
export const PAYLOAD_BYTES = 100;

/**
 * Microseconds on CLOCK_MONOTONIC. `process.hrtime` reads the same clock in
 * every process of the machine, so a timestamp taken by the publisher can be
 * subtracted from one taken by a client process.
 */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export interface Payload {
  /** sequence number, 0-based; warm-up messages come first */
  s: number;
  /** send time, `nowUs()` of the publisher just before the HTTP request */
  t: number;
  /** padding */
  p: string;
}

/** The JSON text of a payload, padded to exactly PAYLOAD_BYTES bytes. */
export function makePayload(seq: number, t: number): string {
  const bare = JSON.stringify({ s: seq, t, p: '' });
  const pad = PAYLOAD_BYTES - bare.length;
  if (pad < 0) throw new Error('payload header too long');
  return JSON.stringify({ s: seq, t, p: 'x'.repeat(pad) });
}

export function isPayload(value: unknown): value is Payload {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.s === 'number' && typeof v.t === 'number';
}

/**
 * Log-bucketed latency histogram: bucket i holds values in
 * [GROWTH^i, GROWTH^(i+1)) microseconds, so percentiles are exact to 1 %.
 * Mergeable across processes (plain number arrays over IPC).
 */
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
export const HISTOGRAM_BUCKETS = Math.ceil(Math.log(1e9) / LOG_GROWTH) + 1; // up to 1000 s

export function newHistogram(): number[] {
  return new Array<number>(HISTOGRAM_BUCKETS).fill(0);
}

export function record(histogram: number[], micros: number): void {
  const v = micros < 1 ? 1 : micros;
  let i = Math.floor(Math.log(v) / LOG_GROWTH);
  if (i >= HISTOGRAM_BUCKETS) i = HISTOGRAM_BUCKETS - 1;
  histogram[i] = (histogram[i] ?? 0) + 1;
}

export function merge(into: number[], from: readonly number[]): void {
  for (let i = 0; i < from.length; i++) into[i] = (into[i] ?? 0) + (from[i] ?? 0);
}

/** The q-quantile (0 < q ≤ 1) in microseconds, or NaN for an empty histogram. */
export function quantile(histogram: readonly number[], q: number): number {
  let total = 0;
  for (const c of histogram) total += c;
  if (total === 0) return Number.NaN;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i] ?? 0;
    if (seen >= rank) return Math.sqrt(GROWTH ** i * GROWTH ** (i + 1)); // geometric middle of the bucket
  }
  return Number.NaN;
}

// ---- orchestrator <-> client process messages ----

export interface StartMessage {
  type: 'start';
  transport: Transport;
  /** `127.0.0.1:PORT` */
  hostPort: string;
  /** subscribers this process opens */
  count: number;
  /** connection attempts in flight at once */
  concurrency: number;
  /** warm-up messages (seq 0 … warmup-1, not in the latency histogram) */
  warmup: number;
  /** measured messages (seq warmup … warmup+messages-1) */
  messages: number;
  connectTimeoutMs: number;
}

export interface StatusRequest {
  type: 'status';
}
export interface ReportRequest {
  type: 'report';
}
export interface StopRequest {
  type: 'stop';
}
export type ToClient = StartMessage | StatusRequest | ReportRequest | StopRequest;

export interface ConnectedMessage {
  type: 'connected';
  ready: number;
  failed: number;
  /** first few failure reasons, for the report */
  failures: string[];
  ms: number;
}
export interface StatusMessage {
  type: 'status';
  /** distinct measured publications received over all subscribers */
  measured: number;
  /** distinct warm-up publications received */
  warmup: number;
  closed: number;
  /** CPU of this load-generator process so far (µs, user+system) */
  cpuUs: number;
}
export interface ReportMessage {
  type: 'report';
  measured: number;
  warmup: number;
  duplicates: number;
  outOfOrder: number;
  /** subscribers that received every measured publication */
  complete: number;
  /** connections that ended unexpectedly after they were ready */
  closed: number;
  closeReasons: Record<string, number>;
  /** other frames (pings, unexpected pushes) by kind */
  otherFrames: Record<string, number>;
  /** `nowUs()` of the last measured delivery, 0 if none */
  lastDeliveryUs: number;
  histogram: number[];
  /** CPU of this load-generator process so far (µs, user+system) */
  cpuUs: number;
  /** long polling: poll requests sent after the session opened */
  polls: number;
}
export type FromClient = ConnectedMessage | StatusMessage | ReportMessage;

/**
 * The child processes a benchmark started. Every one still running is
 * killed (by PID, only these) when the benchmark exits or is interrupted.
 */
export function childProcessRegistry(onSignal: (signal: string) => void = () => {}): {
  readonly children: Set<ChildProcess>;
  killAll(): void;
} {
  const children = new Set<ChildProcess>();
  const killAll = (): void => {
    for (const child of children) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) continue;
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  };
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      onSignal(signal);
      killAll();
      process.exit(130);
    });
  }
  return { children, killAll };
}

/**
 * Runs every server kind's targets for each round, alternating the order from round to
 * round (kinds and the targets of a kind), so neither side always runs first on a warm or
 * cold machine. A kind that fails in a round is recorded in `skipped` as `… failed: …`
 * and the run goes on.
 */
export async function runAlternatingRounds<Kind extends string, Target, Result>(
  targets: readonly Target[],
  kindOf: (target: Target) => Kind,
  rounds: number,
  runServer: (kind: Kind, targets: Target[], round: number) => Promise<Result[]>,
  skipped: string[],
  log: (line: string) => void,
): Promise<Result[]> {
  const kinds: Kind[] = [];
  for (const t of targets) if (!kinds.includes(kindOf(t))) kinds.push(kindOf(t));
  const results: Result[] = [];
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? kinds : [...kinds].reverse();
    for (const kind of order) {
      const own = targets.filter((t) => kindOf(t) === kind);
      try {
        results.push(...(await runServer(kind, round % 2 === 1 ? own : [...own].reverse(), round)));
      } catch (error) {
        const message = `${kind} round ${String(round)} failed: ${error instanceof Error ? error.message : String(error)}`;
        skipped.push(message);
        log(`  ${message}`);
      }
    }
  }
  return results;
}
