/**
 * `herald bench`: a fan-out benchmark against a running Herald, from this
 * one process. N subscribers (one transport) subscribe to one channel; M
 * publications of a fixed size go through the server API at a steady rate;
 * every subscriber counts what it receives. The report says what matters
 * before going live: connect time, deliveries per second, delivery ratio,
 * latency percentiles (publish request sent → publication received, on this
 * process's clock), and every error with what it means.
 *
 * Bounded: at most 10 000 subscribers and 100 000 publications, a hard
 * --timeout for the whole run; it stops by itself, and Ctrl-C stops it
 * cleanly (connections closed, the report so far printed). The repository's
 * bench/ folder holds the benchmarks that compare Herald with a baseline;
 * this one ships with the server.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { readConfigFile, validateConfig } from '../config/load.ts';
import { readDevSecrets } from '../app/dev-secrets.ts';
import { fail, intOption, type Values } from './command.ts';
import { DeliveryLedger, Histogram, Tally } from './bench-stats.ts';
import { BENCH_TRANSPORTS, BenchClients, OpenError, type BenchTransport, type Subscriber } from './bench-subscribers.ts';
import { formatReport, hintFor, type BenchReport } from './bench-report.ts';

import { MAX_MESSAGES, MAX_RATE, MAX_SUBSCRIBERS } from './bench-command.ts';
/** Subscribers × messages: one bit each in the delivery ledger (12.5 MB at most). */
const MAX_DELIVERIES = 100_000_000;
/** Connection attempts in flight while subscribers open. */
const OPEN_CONCURRENCY = 64;
/** Publish requests in flight at once. */
const PUBLISH_CONCURRENCY = 16;
/** After the last publish answer: give up waiting when nothing arrives for this long. */
const DRAIN_IDLE_MS = 5000;


/** How subscribers authenticate. */
type Auth =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'shared'; readonly token: string }
  | { readonly kind: 'minted'; readonly secret: string; readonly audience: string | undefined; readonly issuer: string | undefined; readonly from: string };

interface BenchOptions {
  readonly base: URL;
  readonly key: string;
  readonly channel: string;
  readonly subscribers: number;
  readonly messages: number;
  readonly rate: number;
  readonly transport: BenchTransport;
  readonly payloadBytes: number;
  readonly timeoutMs: number;
  readonly auth: Auth;
  readonly json: boolean;
  readonly runId: string;
}

function options(values: Values): BenchOptions {
  const env = process.env;
  const text = (name: string) => values[name] as string | undefined;
  const subscribers = text('subscribers') === undefined ? 100 : intOption('bench', 'subscribers', text('subscribers')!, 1, MAX_SUBSCRIBERS);
  const messages = text('messages') === undefined ? 100 : intOption('bench', 'messages', text('messages')!, 1, MAX_MESSAGES);
  if (subscribers * messages > MAX_DELIVERIES) fail(`herald bench: --subscribers × --messages must be at most ${MAX_DELIVERIES.toLocaleString('en')}`);
  const rateText = text('rate') ?? '10';
  const rate = /^[0-9]{1,5}(\.[0-9]{1,3})?$/.test(rateText) ? Number(rateText) : NaN;
  if (!(rate >= 0.1 && rate <= MAX_RATE)) fail(`herald bench: --rate must be a number of publications per second from 0.1 to ${MAX_RATE}, not "${rateText}"`);
  const transport = text('transport') ?? 'websocket';
  if (!(BENCH_TRANSPORTS as readonly string[]).includes(transport)) fail(`herald bench: --transport must be one of ${BENCH_TRANSPORTS.join(', ')}, not "${transport}"`);
  const payloadBytes = text('payload-bytes') === undefined ? 100 : intOption('bench', 'payload-bytes', text('payload-bytes')!, 64, 1048576);
  const timeoutMs = (text('timeout') === undefined ? 300 : intOption('bench', 'timeout', text('timeout')!, 10, 3600)) * 1000;
  const publishMs = (messages / rate) * 1000;
  if (publishMs + 20000 > timeoutMs) {
    fail(`herald bench: publishing ${messages} messages at ${rate}/s takes ${Math.ceil(publishMs / 1000)} s; give a --timeout of at least ${Math.ceil(publishMs / 1000) + 20} s, or fewer messages, or a higher rate`);
  }
  const runId = randomBytes(4).toString('hex');
  const channel = text('channel') ?? `herald-bench-${runId}`;
  const key = text('key') ?? env['HERALD_KEY'];
  if (key === undefined || key === '') fail('herald bench: --key KEY (or HERALD_KEY) is required: an API key with the publish scope (herald bench --help)');

  const token = text('token');
  const configFile = text('config') ?? (token === undefined ? env['HERALD_CONFIG'] || undefined : undefined);
  if (token !== undefined && text('config') !== undefined) fail('herald bench: give --config (a token per subscriber) or --token (one for all), not both');
  const server = configFile === undefined ? undefined : serverOf(configFile);
  let auth: Auth = { kind: 'anonymous' };
  if (token !== undefined) auth = { kind: 'shared', token };
  else if (server !== undefined) auth = server.auth;
  else {
    const dev = readDevSecrets('.herald');
    if (dev !== undefined) auth = { kind: 'minted', secret: dev.hmacSecret, audience: undefined, issuer: undefined, from: 'the development secrets in ./.herald' };
  }

  const urlGiven = text('url') ?? (env['HERALD_URL'] || undefined);
  if (urlGiven === undefined && server !== undefined && server.url === undefined) fail(`herald bench: ${configFile} has listen.port 0 (a free port): give --url (or HERALD_URL)`);
  const urlText = urlGiven ?? server?.url ?? 'http://127.0.0.1:8000';
  let base: URL;
  try {
    base = new URL(urlText);
  } catch {
    fail(`herald bench: --url must be an http:// or https:// URL, not "${urlText}"`);
  }
  if ((base.protocol !== 'http:' && base.protocol !== 'https:') || base.search !== '' || base.hash !== '' || base.username !== '' || base.password !== '') {
    fail(`herald bench: --url must be an http:// or https:// URL without credentials, query or fragment, not "${urlText}"`);
  }
  return { base, key, channel, subscribers, messages, rate, transport: transport as BenchTransport, payloadBytes, timeoutMs, auth, json: values['json'] === true, runId };
}

/** What the server's config file tells: its URL and how to sign tokens for it. */
function serverOf(file: string): { url: string | undefined; auth: Auth } {
  const validated = validateConfig(readConfigFile(file), { env: process.env, file });
  if (validated.problems.length > 0) fail(`herald bench: ${file} has problems (herald check-config --config ${file}):\n  - ${validated.problems.join('\n  - ')}`);
  const config = validated.config;
  let secret = config.auth.hmacSecret;
  if (secret === undefined && config.auth.hmacSecretFile !== undefined) {
    try {
      secret = readFileSync(config.auth.hmacSecretFile, 'utf8').trim();
    } catch (error) {
      fail(`herald bench: cannot read ${config.auth.hmacSecretFile} (auth.hmacSecretFile): ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  if (secret === undefined && config.mode === 'development') secret = readDevSecrets(config.stateDir)?.hmacSecret;
  if (secret === undefined || !config.auth.algorithms.includes('HS256')) {
    fail(`herald bench: ${file} gives no HS256 secret to sign subscriber tokens with; give --token TOKEN, or use a channel in a namespace with allowAnonymous`);
  }
  const { host, port } = config.listen;
  const local = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const tls = config.tls.certFile !== undefined && config.tls.keyFile !== undefined;
  return {
    url: port === 0 ? undefined : `${tls ? 'https' : 'http'}://${local.includes(':') ? `[${local}]` : local}:${port}`,
    auth: { kind: 'minted', secret, audience: config.auth.audience, issuer: config.auth.issuer, from: `the HS256 secret of ${file}` },
  };
}

/** The JSON text of publication `seq`: `{"r":run,"s":seq,"t":sent at,"p":padding}`, exactly `bytes` long. */
function payload(runId: string, seq: number, t: number, bytes: number): string {
  const head = `{"r":"${runId}","s":${seq},"t":${t.toFixed(3)},"p":"`;
  return head + 'x'.repeat(Math.max(0, bytes - head.length - 2)) + '"}';
}

function isOurs(data: unknown, runId: string): data is { s: number; t: number } {
  if (typeof data !== 'object' || data === null) return false;
  const d = data as Record<string, unknown>;
  return d['r'] === runId && typeof d['s'] === 'number' && typeof d['t'] === 'number';
}

interface PublishAnswer {
  readonly status: number;
  readonly code: string | undefined;
}

class Publisher {
  readonly #url: URL;
  readonly #key: string;
  readonly #agent: http.Agent;
  readonly #http: typeof http | typeof https;

  constructor(base: URL, key: string) {
    this.#url = new URL(base.href);
    this.#url.pathname = base.pathname.replace(/\/+$/, '') + '/api/publish';
    this.#key = key;
    const secure = base.protocol === 'https:';
    this.#http = secure ? https : http;
    this.#agent = new (secure ? https.Agent : http.Agent)({ keepAlive: true, maxSockets: PUBLISH_CONCURRENCY });
  }

  publish(body: string): Promise<PublishAnswer> {
    return new Promise((resolve, reject) => {
      const request = this.#http.request(
        this.#url,
        {
          method: 'POST',
          agent: this.#agent,
          timeout: 30000,
          headers: { authorization: `Bearer ${this.#key}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
        },
        (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => {
            if (text.length < 4096) text += chunk;
          });
          response.on('end', () => {
            let code: string | undefined;
            try {
              const parsed = JSON.parse(text) as { error?: { code?: unknown } };
              if (typeof parsed.error?.code === 'string') code = parsed.error.code;
            } catch {
              // not JSON: the status says enough
            }
            resolve({ status: response.statusCode ?? 0, code });
          });
          response.on('error', reject);
        },
      );
      request.on('timeout', () => request.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
      request.on('error', reject);
      request.end(body);
    });
  }

  destroy(): void {
    this.#agent.destroy();
  }
}

function errorCode(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? code : (error as Error).message.slice(0, 80);
}

export async function bench(values: Values): Promise<void> {
  const o = options(values);
  const began = performance.now();
  const deadline = began + o.timeoutMs;
  let stopped: 'interrupted' | 'timeout' | undefined;
  let wake: () => void = () => undefined;
  const stopping = new Promise<void>((resolve) => (wake = resolve));
  const stop = (why: 'interrupted' | 'timeout') => {
    if (stopped !== undefined) return;
    stopped = why;
    wake();
  };
  const onSigint = () => {
    if (stopped === 'interrupted') process.exit(130); // a second Ctrl-C: now
    process.stderr.write('\nherald bench: stopping (Ctrl-C again to quit at once)\n');
    stop('interrupted');
  };
  process.on('SIGINT', onSigint);
  const hardStop = setTimeout(() => stop('timeout'), o.timeoutMs);
  const sleep = (ms: number) => Promise.race([new Promise<void>((resolve) => setTimeout(resolve, ms).unref()), stopping]);
  const progress = (line: string) => {
    if (!o.json || process.stderr.isTTY) process.stderr.write(`herald bench: ${line}\n`);
  };

  const publisher = new Publisher(o.base, o.key);
  const hints = { channel: o.channel, anonymous: o.auth.kind === 'anonymous' };

  // The key and the URL first, before opening thousands of connections.
  const probe = await publisher
    .publish(JSON.stringify({ channel: o.channel, data: { r: o.runId, probe: true } }))
    .catch((error: unknown) => ({ status: 0, code: errorCode(error) }));
  if (probe.status !== 200) {
    publisher.destroy();
    const reason = probe.status === 0 ? `${probe.code ?? 'no answer'}` : `HTTP ${probe.status}${probe.code === undefined ? '' : ` ${probe.code}`}`;
    const hint = hintFor(`publish ${reason}`, hints);
    fail(`herald bench: a first publish to ${o.channel} at ${o.base.href} failed: ${reason}${hint === undefined ? '' : `\n  ${hint}`}`);
  }

  const ledger = new DeliveryLedger(o.subscribers, o.messages);
  const latency = new Histogram();
  const openTimes = new Histogram();
  const publishTimes = new Histogram();
  const openErrors = new Tally();
  const publishErrors = new Tally();
  const lost = new Tally();
  let throttled = 0;
  let foreign = 0;
  let lastDeliveryAt = 0;

  const clients = new BenchClients(
    { base: o.base, channel: o.channel, transport: o.transport, openTimeoutMs: 30000 },
    {
      publication(index, data, offset, receivedAt) {
        if (!isOurs(data, o.runId)) {
          foreign++;
          return;
        }
        if (ledger.record(index, data.s, offset)) {
          latency.record(receivedAt - data.t);
          lastDeliveryAt = receivedAt;
        }
      },
      lost(_index, reason) {
        lost.add(reason);
      },
    },
  );

  // Tokens: one per subscriber (its own user), one shared, or none.
  const tokens: (string | undefined)[] = [];
  if (o.auth.kind === 'minted') {
    const { mintConnectionToken } = await import('@herald/server-sdk');
    const auth = o.auth;
    const ttlSeconds = Math.ceil(o.timeoutMs / 1000) + 60;
    for (let i = 0; i < o.subscribers; i++) {
      tokens.push(
        await mintConnectionToken({
          sub: `herald-bench-${o.runId}-${i}`,
          ttlSeconds,
          key: auth.secret,
          algorithm: 'HS256',
          ...(auth.audience === undefined ? {} : { audience: auth.audience }),
          ...(auth.issuer === undefined ? {} : { issuer: auth.issuer }),
        }),
      );
    }
  } else {
    for (let i = 0; i < o.subscribers; i++) tokens.push(o.auth.kind === 'shared' ? o.auth.token : undefined);
  }

  // Subscribers: the first alone (a refusal is explained before thousands repeat it), then the others in parallel.
  const open = new Map<number, Subscriber>();
  const publishBudgetMs = (o.messages / o.rate) * 1000 + 15000;
  const openDeadline = deadline - publishBudgetMs;
  const openOne = async (index: number): Promise<void> => {
    for (;;) {
      const started = performance.now();
      try {
        const subscriber = await clients.open(index, tokens[index]);
        openTimes.record(performance.now() - started);
        if (stopped !== undefined) {
          await subscriber.close();
          return;
        }
        open.set(index, subscriber);
        return;
      } catch (error) {
        const reason = error instanceof OpenError ? error.reason : errorCode(error);
        const retryAfterMs = error instanceof OpenError ? error.retryAfterMs : undefined;
        if (retryAfterMs !== undefined && stopped === undefined && performance.now() + retryAfterMs < openDeadline) {
          throttled++;
          await sleep(retryAfterMs);
          if (stopped === undefined) continue;
        }
        openErrors.add(reason);
        return;
      }
    }
  };
  progress(`${o.subscribers} subscribers over ${o.transport} to ${o.channel} at ${o.base.href}`);
  const openBegan = performance.now();
  await openOne(0);
  if (open.size === 0 && stopped === undefined) {
    const [reason] = [...openErrors.counts.keys()];
    clients.destroy();
    publisher.destroy();
    const hint = reason === undefined ? undefined : hintFor(reason, hints);
    fail(`herald bench: the first subscriber could not subscribe to ${o.channel}: ${reason ?? 'no reason'}${hint === undefined ? '' : `\n  ${hint}`}`);
  }
  let next = 1;
  const lane = async () => {
    while (next < o.subscribers && stopped === undefined && performance.now() < openDeadline) await openOne(next++);
  };
  await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, o.subscribers - 1) }, lane));
  const notOpened = o.subscribers - open.size - openErrors.total;
  if (notOpened > 0 && stopped === undefined) openErrors.add('not opened before the connect deadline', notOpened);
  const connectMs = performance.now() - openBegan;
  const ready = [...open.keys()];

  // Publications at a steady rate; answers counted as they come.
  const accepted: number[] = [];
  const failedSeqs: number[] = [];
  const cpuBefore = process.cpuUsage();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const publishBegan = performance.now();
  let publishEnded = publishBegan;
  let sent = 0;
  if (stopped === undefined) {
    progress(`${open.size} subscribed in ${(connectMs / 1000).toFixed(2)} s; publishing ${o.messages} × ${o.payloadBytes} B at ${o.rate}/s`);
    const inflight = new Set<Promise<void>>();
    const intervalMs = 1000 / o.rate;
    for (let seq = 0; seq < o.messages && stopped === undefined; seq++) {
      const wait = publishBegan + seq * intervalMs - performance.now();
      if (wait > 1) await sleep(wait);
      while (inflight.size >= PUBLISH_CONCURRENCY && stopped === undefined) await Promise.race([...inflight, stopping]);
      if (stopped !== undefined) break;
      const t = performance.now();
      const body = `{"channel":${JSON.stringify(o.channel)},"data":${payload(o.runId, seq, t, o.payloadBytes)}}`;
      sent++;
      const done: Promise<void> = publisher
        .publish(body)
        .then(
          (answer) => {
            publishTimes.record(performance.now() - t);
            if (answer.status === 200) accepted.push(seq);
            else {
              failedSeqs.push(seq);
              publishErrors.add(`HTTP ${answer.status}${answer.code === undefined ? '' : ` ${answer.code}`}`);
            }
          },
          (error: unknown) => {
            failedSeqs.push(seq);
            publishErrors.add(errorCode(error));
          },
        )
        .finally(() => inflight.delete(done));
      inflight.add(done);
    }
    await Promise.race([Promise.all(inflight), stopping]);
    publishEnded = performance.now();

    // Deliveries still on their way: wait until all are in, or nothing has come for a while.
    if (stopped === undefined) progress('waiting for the last deliveries');
    let seen = ledger.delivered;
    let quietSince = performance.now();
    while (stopped === undefined) {
      if (ledger.delivered >= ready.length * accepted.length) break;
      if (ledger.delivered !== seen) {
        seen = ledger.delivered;
        quietSince = performance.now();
      } else if (performance.now() - quietSince > DRAIN_IDLE_MS) break;
      await sleep(50);
    }
  }
  const endedAt = performance.now();
  const cpu = process.cpuUsage(cpuBefore);
  loopDelay.disable();
  clearTimeout(hardStop);
  process.off('SIGINT', onSigint);

  // Close every subscriber (bounded: a few seconds), then whatever is left.
  const subscribers = [...open.values()];
  let closing = 0;
  const closeLane = async () => {
    while (closing < subscribers.length) await subscribers[closing++]!.close().catch(() => undefined);
  };
  await Promise.race([Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, subscribers.length) }, closeLane)), new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
  clients.destroy();
  publisher.destroy();

  const stray = failedSeqs.length === 0 ? 0 : ledger.countOf(ready, failedSeqs);
  const delivered = ledger.delivered - stray;
  const expected = ready.length * accepted.length;
  const windowMs = (lastDeliveryAt > publishBegan ? lastDeliveryAt : publishEnded) - publishBegan;
  const errors = [
    ...[...openErrors.counts].map(([what, count]) => ({ phase: 'subscribe' as const, what, count, hint: hintFor(what, hints) })),
    ...[...publishErrors.counts].map(([what, count]) => ({ phase: 'publish' as const, what, count, hint: hintFor(`publish ${what}`, hints) })),
    ...[...lost.counts].map(([what, count]) => ({ phase: 'connection lost' as const, what, count, hint: hintFor(what, hints) })),
  ];
  const report: BenchReport = {
    ok: stopped === undefined && errors.length === 0 && expected > 0 && delivered === expected && ledger.duplicates === 0 && ledger.outOfOrder === 0,
    stopped: stopped ?? null,
    url: o.base.href,
    channel: o.channel,
    transport: o.transport,
    auth: o.auth.kind === 'anonymous' ? 'anonymous' : o.auth.kind === 'shared' ? 'the --token, for every subscriber' : `one token per subscriber, signed with ${o.auth.from}`,
    subscribers: { requested: o.subscribers, subscribed: ready.length, failed: openErrors.total, throttledAttempts: throttled },
    connect: { seconds: connectMs / 1000, p50Ms: openTimes.quantile(0.5), p99Ms: openTimes.quantile(0.99), maxMs: openTimes.max },
    publish: {
      messages: o.messages,
      sent,
      accepted: accepted.length,
      failed: sent - accepted.length,
      payloadBytes: o.payloadBytes,
      rate: o.rate,
      seconds: (publishEnded - publishBegan) / 1000,
      p50Ms: publishTimes.quantile(0.5),
      p99Ms: publishTimes.quantile(0.99),
    },
    deliveries: {
      expected,
      delivered,
      ratio: expected === 0 ? 0 : delivered / expected,
      perSecond: windowMs > 0 ? delivered / (windowMs / 1000) : 0,
      duplicates: ledger.duplicates,
      outOfOrder: ledger.outOfOrder,
      completeSubscribers: ledger.complete(ready, accepted),
      foreign,
    },
    latencyMs: { p50: latency.quantile(0.5), p90: latency.quantile(0.9), p99: latency.quantile(0.99), max: latency.max },
    lostConnections: lost.total,
    errors,
    loadGenerator: {
      cores: (cpu.user + cpu.system) / 1000 / Math.max(1, endedAt - publishBegan),
      eventLoopDelayP99Ms: loopDelay.count > 0 ? loopDelay.percentile(99) / 1e6 : 0,
    },
  };
  process.stdout.write(o.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
  process.exitCode = stopped === 'interrupted' ? 130 : report.ok ? 0 : 1;
}
