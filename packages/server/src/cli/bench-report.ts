/**
 * The report of `herald bench` (JSON with --json, else the text below) and
 * what each error means for the server's configuration.
 */

export interface BenchError {
  readonly phase: 'subscribe' | 'publish' | 'connection lost';
  /** "HTTP 429 connection_limit", "close 3004 slow", "ECONNREFUSED", … */
  readonly what: string;
  readonly count: number;
  readonly hint: string | undefined;
}

export interface BenchReport {
  /** Every publication reached every subscriber once, in order, without any error. */
  readonly ok: boolean;
  /** Why the run ended early, if it did. */
  readonly stopped: 'interrupted' | 'timeout' | null;
  readonly url: string;
  readonly channel: string;
  readonly transport: string;
  readonly auth: string;
  readonly subscribers: { readonly requested: number; readonly subscribed: number; readonly failed: number; readonly throttledAttempts: number };
  /** `seconds`: until every subscriber was subscribed (or refused); the rest: per subscriber. */
  readonly connect: { readonly seconds: number; readonly p50Ms: number; readonly p99Ms: number; readonly maxMs: number };
  readonly publish: {
    readonly messages: number;
    readonly sent: number;
    readonly accepted: number;
    readonly failed: number;
    readonly payloadBytes: number;
    readonly rate: number;
    readonly seconds: number;
    /** Time to the API's answer. */
    readonly p50Ms: number;
    readonly p99Ms: number;
  };
  readonly deliveries: {
    /** Subscribed subscribers × accepted publications. */
    readonly expected: number;
    /** Distinct deliveries of accepted publications. */
    readonly delivered: number;
    readonly ratio: number;
    /** From the first publish request to the last delivery. */
    readonly perSecond: number;
    readonly duplicates: number;
    readonly outOfOrder: number;
    readonly completeSubscribers: number;
    /** Publications on the channel that this run did not send. */
    readonly foreign: number;
  };
  /** Publish request sent → publication received. */
  readonly latencyMs: { readonly p50: number; readonly p90: number; readonly p99: number; readonly max: number };
  readonly lostConnections: number;
  readonly errors: readonly BenchError[];
  /** This process during the publish phase: 1.0 cores is one busy core. */
  readonly loadGenerator: { readonly cores: number; readonly eventLoopDelayP99Ms: number };
}

/** What a hint may depend on. */
export interface HintContext {
  readonly channel: string;
  /** Subscribers connect without a token. */
  readonly anonymous: boolean;
}

const hints: readonly [RegExp, (context: HintContext) => string | undefined][] = [
  [/^publish HTTP 401/, () => 'the server does not know this API key (--key, HERALD_KEY)'],
  [/^publish HTTP 403/, () => 'the API key lacks the publish scope: herald keys create --name bench --scopes publish'],
  [/^publish HTTP 429/, () => 'publications are API requests: api.rateLimitPerIp (600 per minute by default) and api.rateLimitPerKey (6000) cap them; raise them for the test, or publish fewer'],
  [/^publish HTTP 413/, () => '--payload-bytes is above the server\'s api.maxBodyBytes (64 KiB by default)'],
  [/^publish HTTP 400 (unknown_namespace|invalid_channel)/, ({ channel }) => `the server refuses the channel ${channel}: pick a --channel in a configured namespace (or one without ":", the default namespace)`],
  [/^publish HTTP 503/, () => 'the server is draining or its engine is unavailable (GET /health says which)'],
  [/anonymous_not_allowed/, ({ channel }) => `the namespace of ${channel} takes no anonymous connections: give --config (the server's config: a token per subscriber) or --token, or a --channel in a namespace with allowAnonymous`],
  [/unknown_namespace|invalid_channel/, ({ channel }) => `the server refuses the channel ${channel}: pick a --channel in a configured namespace (or one without ":", the default namespace)`],
  [
    /subscription_token_required|permission_denied|3504/,
    ({ anonymous }) =>
      anonymous
        ? 'no namespace of this server has allowAnonymous, so it refuses connections without a token: give --config (the server\'s config: a token per subscriber) or --token'
        : 'a private namespace needs subscription tokens: bench a channel of a namespace without private: true',
  ],
  [/token_expired|3003/, () => 'the token expired: give a fresh --token, or --config to mint tokens for the run'],
  [/unauthorized|invalid_token|3500|3507/, () => 'the server refuses the token: --config must be the server\'s own config (same HS256 secret, auth.audience, auth.issuer), or --token a valid connection token'],
  [/HTTP 429 connection_limit/, () => 'limits.maxConnectionsPerIp (1000 by default): every bench subscriber comes from this machine\'s address'],
  [/3506|connection_limit/, () => 'limits.maxConnectionsPerUser (100 by default): with --token every subscriber is the same user; --config mints one user per subscriber'],
  [/HTTP 429 too_many_requests/, () => 'limits.newConnectionsPerIpPerSecond (50 by default): opens were retried after Retry-After until the connect deadline'],
  [/HTTP 503/, () => 'limits.maxConnections reached, or the server is draining or degraded'],
  [/3004|slow/, () => 'the server cut slow subscribers (limits.outboundQueueBytes): this process or the network did not read fast enough; lower --rate, --subscribers or --payload-bytes'],
  [/3009|too_many_requests/, () => 'a rate limit of the server: see limits and api in docs/config.md'],
  [/3001|shutdown/, () => 'the server shut down during the run'],
  [/EMFILE|ENFILE/, () => 'this process ran out of file descriptors: raise ulimit -n, or lower --subscribers'],
  [/ECONNREFUSED/, () => 'nothing listens at the URL (--url, HERALD_URL)'],
  [/ECONNRESET|EPIPE|stream ended|close 1006/, () => 'connections were cut: a proxy timeout, the server restarting, or a limit (check the server log)'],
  [/timeout/, () => 'the server did not answer in time: it (or this machine) is overloaded'],
];

/** What an error means, when Herald knows. */
export function hintFor(what: string, context: HintContext): string | undefined {
  for (const [pattern, hint] of hints) if (pattern.test(what)) return hint(context);
  return undefined;
}

function ms(value: number): string {
  if (!Number.isFinite(value)) return '-';
  return `${value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0)} ms`;
}

function count(n: number): string {
  return n.toLocaleString('en');
}

export function formatReport(r: BenchReport): string {
  const lines: string[] = [];
  const row = (label: string, text: string) => lines.push(`  ${label.padEnd(15)}${text}`);
  lines.push(`herald bench: ${r.transport}, ${count(r.subscribers.requested)} subscribers, channel ${r.channel} at ${r.url}`);
  lines.push(`  subscribers connect ${r.auth}`);
  if (r.stopped !== null) lines.push(`  stopped early (${r.stopped === 'interrupted' ? 'Ctrl-C' : '--timeout reached'}): the numbers cover the run so far`);
  lines.push('');
  row(
    'connect',
    `${count(r.subscribers.subscribed)} of ${count(r.subscribers.requested)} subscribed in ${r.connect.seconds.toFixed(2)} s` +
      (r.subscribers.subscribed > 0 ? ` (each: p50 ${ms(r.connect.p50Ms)}, p99 ${ms(r.connect.p99Ms)}, max ${ms(r.connect.maxMs)})` : ''),
  );
  row(
    'publish',
    `${count(r.publish.accepted)} of ${count(r.publish.messages)} accepted, ${count(r.publish.payloadBytes)} B each at ${r.publish.rate}/s over ${r.publish.seconds.toFixed(2)} s` +
      (r.publish.sent > 0 ? ` (answer p50 ${ms(r.publish.p50Ms)}, p99 ${ms(r.publish.p99Ms)})` : ''),
  );
  row(
    'delivered',
    `${count(r.deliveries.delivered)} of ${count(r.deliveries.expected)}, ratio ${r.deliveries.ratio.toFixed(4)}` +
      ` (${count(r.deliveries.completeSubscribers)} of ${count(r.subscribers.subscribed)} subscribers got every publication)`,
  );
  row('throughput', `${count(Math.round(r.deliveries.perSecond))} deliveries/s`);
  row('latency', `p50 ${ms(r.latencyMs.p50)}   p90 ${ms(r.latencyMs.p90)}   p99 ${ms(r.latencyMs.p99)}   max ${ms(r.latencyMs.max)}`);
  row('order', `${count(r.deliveries.duplicates)} duplicates, ${count(r.deliveries.outOfOrder)} out of order, ${count(r.lostConnections)} connections lost`);
  if (r.errors.length === 0) row('errors', 'none');
  for (const [i, e] of r.errors.entries()) {
    row(i === 0 ? 'errors' : '', `${e.phase}: ${count(e.count)} × ${e.what}`);
    if (e.hint !== undefined) row('', `  ${e.hint}`);
  }
  row('load generator', `${r.loadGenerator.cores.toFixed(2)} cores, event loop delay p99 ${ms(r.loadGenerator.eventLoopDelayP99Ms)}`);

  const notes: string[] = [];
  if (r.subscribers.throttledAttempts > 0) {
    notes.push(
      `${count(r.subscribers.throttledAttempts)} opens were answered 429 (or 503) and retried: limits.newConnectionsPerIpPerSecond applies per client address, ` +
        'and every subscriber here comes from one; the connect time measures that limit, not how fast Herald accepts connections.',
    );
  }
  if (r.loadGenerator.cores > 0.8 || r.loadGenerator.eventLoopDelayP99Ms > 50) {
    notes.push('this process was busy: the latency includes its own delays. Run it on another machine, or with fewer subscribers or a lower rate.');
  }
  if (r.deliveries.foreign > 0) notes.push(`${count(r.deliveries.foreign)} publications on ${r.channel} came from someone else, and were not counted.`);
  lines.push('');
  for (const note of notes) lines.push(`Note: ${note}`);
  lines.push(
    r.ok
      ? 'OK: every publication reached every subscriber, once and in order.'
      : r.stopped !== null
        ? 'Incomplete: the run was stopped early.'
        : 'NOT OK: see the delivery ratio and the errors above.',
  );
  return lines.join('\n') + '\n';
}
