/**
 * `herald bench`'s command: its options and help. The benchmark itself
 * (./bench.ts, with its HTTP and WebSocket clients) is loaded when the
 * command runs, so that no other command, `serve` above all, loads it.
 */
import type { Command } from './command.ts';

export const MAX_SUBSCRIBERS = 10000;
export const MAX_MESSAGES = 100000;
export const MAX_RATE = 10000;

export const benchCommand: Command = {
  summary: 'measure fan-out against a running server: deliveries per second, latency percentiles',
  help: `Usage: herald bench --key KEY [--url URL] [--subscribers N] [--messages M] [--rate R]
                   [--transport websocket|sse|long-poll] [--payload-bytes B] [--channel CHANNEL]
                   [--config FILE | --token TOKEN] [--timeout SECONDS] [--json]

Opens N subscribers to one channel on a running Herald, publishes M messages
of B bytes through the server API at R per second, and reports connect time,
deliveries per second, the delivery ratio, latency percentiles (p50, p90, p99,
max: from the publish request to the publication received) and every error.
Everything runs in this process; it stops by itself (or on Ctrl-C) and closes
its connections. Exit code 0 when every publication reached every subscriber
without error, 1 otherwise, 2 when it could not run.

What the server needs:
  - an API key with the publish scope (--key);
  - a channel the subscribers may join: with --config (the server's config
    file) each subscriber gets its own token, signed with its HS256 secret;
    with --token every subscriber uses that token (one user: keep N under
    limits.maxConnectionsPerUser, 100 by default); with neither, the
    development secrets in ./.herald are used when present, or subscribers
    connect anonymously (a namespace with allowAnonymous);
  - limits that let one machine do it: every subscriber comes from this
    address (limits.maxConnectionsPerIp 1000, newConnectionsPerIpPerSecond 50:
    refused opens are retried after Retry-After and counted), and every
    publication is an API request (api.rateLimitPerIp 600 per minute).

Options:
  --url URL             the server (HERALD_URL; default: the listener of --config,
                        else http://127.0.0.1:8000); https:// works, a path prefix too
  --key KEY             API key with the publish scope (HERALD_KEY); required
  --subscribers N       subscribers, 1 to ${MAX_SUBSCRIBERS} (default 100)
  --messages M          publications, 1 to ${MAX_MESSAGES} (default 100)
  --rate R              publications per second (default 10; up to ${MAX_RATE})
  --transport T         websocket, sse or long-poll (default websocket)
  --payload-bytes B     size of each publication's data, 64 to 1048576 (default 100)
  --channel CHANNEL     the channel (default: herald-bench-<random>, in the default namespace)
  --config FILE         the server's config (or HERALD_CONFIG): one token per subscriber, and the default URL
  --token TOKEN         one connection token for every subscriber
  --timeout SECONDS     the whole run stops after this, 10 to 3600 (default 300)
  --json                print the report as JSON`,
  options: {
    url: { type: 'string' },
    key: { type: 'string' },
    subscribers: { type: 'string' },
    messages: { type: 'string' },
    rate: { type: 'string' },
    transport: { type: 'string' },
    'payload-bytes': { type: 'string' },
    channel: { type: 'string' },
    config: { type: 'string' },
    token: { type: 'string' },
    timeout: { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(values) {
    // The benchmark's clients (node:http, ws) load only when it runs: `herald serve` never needs them.
    const { bench } = await import('./bench.ts');
    await bench(values);
  },
};
