/**
 * `herald publish | history | presence | disconnect | revoke`: calls of a
 * running Herald's server API, through @herald/server-sdk (its first user);
 * and `herald openapi`, which prints the API's OpenAPI description.
 *
 * The URL and the API key come from `--url` / `--key` or `HERALD_URL` /
 * `HERALD_KEY`, nowhere else (a key in the URL is refused), and the key is
 * never printed. Results are JSON on stdout. Exit status: 0 done; 1 Herald
 * refused the call or could not be reached (one line on stderr with the API
 * code); 2 a usage error.
 */
import { writeFileSync } from 'node:fs';
import type { HeraldApi } from '@herald/server-sdk';
import { readJson, DEFAULT_MAX_JSON_DEPTH } from '@herald/protocol/json';
import type { Command, Values } from './command.ts';
import { version } from '../app/version.ts';

/** The most `herald publish <channel> -` reads from stdin (the server's limit is usually far lower). */
const MAX_STDIN_BYTES = 16 * 1024 * 1024;

const connectionHelp = `  --url URL         Herald's public URL (or HERALD_URL), e.g. http://127.0.0.1:8000
  --key KEY         an API key (or HERALD_KEY; prefer the variable: a flag shows in ps)`;

const exitHelp = `Prints the result as JSON. Exit status: 0 done; 1 Herald refused the call
or could not be reached (one line on stderr naming the API code, e.g.
"forbidden (HTTP 403)"); 2 a usage error.`;

const connectionOptions = { url: { type: 'string' }, key: { type: 'string' } } as const;

function usageError(name: string, message: string): never {
  process.stderr.write(`herald ${name}: ${message} (herald ${name} --help)\n`);
  process.exit(2);
}

/** The API client from the flags or the environment; refuses a key given any other way. */
async function client(name: string, values: Values): Promise<HeraldApi> {
  // Loaded here, not at start: `herald serve` never needs the server SDK.
  const { HeraldApi } = await import('@herald/server-sdk');
  const url = (values['url'] as string | undefined) ?? process.env['HERALD_URL'];
  const key = (values['key'] as string | undefined) ?? process.env['HERALD_KEY'];
  if (url === undefined || url === '') usageError(name, 'no server URL: give --url URL or set HERALD_URL (development: http://127.0.0.1:8000)');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    usageError(name, '--url / HERALD_URL is not an absolute http(s) URL');
  }
  // The key comes from --key or HERALD_KEY only: not in the URL, where logs and shell history keep it.
  if (parsed.username !== '' || parsed.password !== '' || parsed.search !== '') {
    usageError(name, 'the URL carries credentials or a query; give the API key with HERALD_KEY or --key, and the URL without them');
  }
  if (key === undefined || key === '') usageError(name, 'no API key: set HERALD_KEY or give --key KEY (herald keys create makes one)');
  try {
    return new HeraldApi({ url: parsed, apiKey: key });
  } catch (error) {
    // The SDK's messages never quote the key.
    usageError(name, (error as Error).message.replace(/^HeraldApi: /, ''));
  }
}

/** Runs one API call: its result as JSON on stdout, or one line on stderr and exit 1. */
async function call(name: string, work: () => Promise<unknown>): Promise<void> {
  const { HeraldApiError } = await import('@herald/server-sdk');
  let result: unknown;
  try {
    result = await work();
  } catch (error) {
    if (!(error instanceof HeraldApiError)) throw error;
    const status = error.status === 0 ? '' : ` (HTTP ${error.status})`;
    const detail = error.detail === undefined ? '' : `: ${error.detail}`;
    const retry = error.retryAfter === undefined ? '' : `; retry after ${error.retryAfter} s`;
    process.stderr.write(`herald ${name}: ${error.code}${status}: ${error.message}${detail}${retry}\n`.replace(/[\r\n]+(?!$)/g, ' '));
    process.exit(1);
  }
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
}

async function readStdin(name: string): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > MAX_STDIN_BYTES) usageError(name, `stdin holds more than ${MAX_STDIN_BYTES} bytes`);
    chunks.push(chunk);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    usageError(name, 'stdin is not UTF-8 text');
  }
}

function jsonArgument(name: string, text: string, where: string): unknown {
  const read = readJson(text, DEFAULT_MAX_JSON_DEPTH);
  if (read.ok) return read.value;
  const why = read.error === 'too_deep' ? `nests deeper than ${DEFAULT_MAX_JSON_DEPTH}` : read.error === 'poisoned' ? 'has a __proto__ or constructor.prototype key' : 'is not JSON';
  usageError(name, `${where} ${why} (a string needs its quotes: '"hello"')`);
}

function integerFlag(name: string, flag: string, value: string | boolean | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !/^[0-9]{1,15}$/.test(value)) usageError(name, `${flag} must be a whole number`);
  return Number(value);
}

/** `--expires-at`: unix seconds or an ISO 8601 time. */
function timeFlag(name: string, value: string): number {
  if (/^[0-9]{1,15}$/.test(value)) return Number(value);
  const at = /^\d{4}-\d\d-\d\d/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(at)) usageError(name, '--expires-at must be unix seconds or an ISO 8601 time (2027-01-01T00:00:00Z)');
  return Math.ceil(at / 1000);
}

export const apiCommands: Readonly<Record<string, Command>> = {
  openapi: {
    summary: 'print the server API as OpenAPI 3.1 (docs/openapi.json)',
    help: `Usage: herald openapi [--write FILE]

Prints the OpenAPI 3.1 description of the server HTTP API, generated from the
schemas the server checks (with the config's default limits). A running
server serves its own, with its limits, at GET /openapi.json on the internal
listener.

Options:
  --write FILE      write it to FILE instead of stdout`,
    options: { write: { type: 'string' } },
    async run(values) {
      const { renderOpenApi } = await import('../api/openapi.ts');
      const text = renderOpenApi({ version });
      if (typeof values['write'] === 'string') writeFileSync(values['write'], text);
      else process.stdout.write(text);
    },
  },
  publish: {
    summary: 'publish a JSON value to a channel of a running Herald',
    help: `Usage: herald publish <channel> <json|-> [--idempotency-key KEY] [--url URL] [--key KEY]

Publishes a JSON value to a channel through the server API (scope publish);
- reads the value from stdin. A string needs its JSON quotes; a value that
starts with "-" goes after "--".

  herald publish chat:lobby '{"text":"hello"}'
  echo '{"text":"hello"}' | herald publish chat:lobby -
  herald publish counters:visits -- -1
  herald publish orders:42 '{"status":"paid"}' --idempotency-key order-42-paid

Options:
  --idempotency-key KEY  safe to retry: within api.idempotencyWindowMs the
                    same channel and KEY print the first position and publish
                    nothing (1 to 128 printable ASCII characters)
${connectionHelp}

${exitHelp} The result is the publication's
position: {"epoch":"…","offset":N}.`,
    options: { 'idempotency-key': { type: 'string' }, ...connectionOptions },
    args: ['<channel>', '<json|->'],
    async run(values, [channel, json]) {
      const api = await client('publish', values);
      const data = json === '-' ? jsonArgument('publish', await readStdin('publish'), 'stdin') : jsonArgument('publish', json!, 'the value');
      const key = values['idempotency-key'];
      await call('publish', () => api.publish(channel!, data, typeof key === 'string' ? { idempotencyKey: key } : {}));
    },
  },
  history: {
    summary: 'print the history of a channel of a running Herald',
    help: `Usage: herald history <channel> [--limit N] [--reverse] [--url URL] [--key KEY]

Prints the channel's stream position and its last publications, through the
server API (scope read). Oldest first unless --reverse.

Options:
  --limit N         at most N publications (default 10; 0 = only the position)
  --reverse         newest first
${connectionHelp}

${exitHelp}`,
    options: { limit: { type: 'string' }, reverse: { type: 'boolean' }, ...connectionOptions },
    args: ['<channel>'],
    async run(values, [channel]) {
      const limit = integerFlag('history', '--limit', values['limit']) ?? 10;
      const api = await client('history', values);
      await call('history', () => api.history(channel!, { limit, ...(values['reverse'] === true ? { reverse: true } : {}) }));
    },
  },
  presence: {
    summary: 'print who is subscribed to a channel of a running Herald',
    help: `Usage: herald presence <channel> [--url URL] [--key KEY]

Prints the connections subscribed to a channel (namespaces with presence),
by connection id: {client, user, conn_info}. Scope read.

Options:
${connectionHelp}

${exitHelp}`,
    options: connectionOptions,
    args: ['<channel>'],
    async run(values, [channel]) {
      const api = await client('presence', values);
      await call('presence', () => api.presence(channel!));
    },
  },
  disconnect: {
    summary: 'close every connection of a user on a running Herald',
    help: `Usage: herald disconnect <user> [--reconnect] [--url URL] [--key KEY]

Closes every connection of a user on every node, with 3503 (the client does
not reconnect) or, with --reconnect, 3007 (it reconnects). Scope admin.

Options:
  --reconnect       let the clients reconnect
${connectionHelp}

${exitHelp} The result counts the connections
closed on the node that answered: {"disconnected":N}.`,
    options: { reconnect: { type: 'boolean' }, ...connectionOptions },
    args: ['<user>'],
    async run(values, [user]) {
      const api = await client('disconnect', values);
      await call('disconnect', () => api.disconnect(user!, { reconnect: values['reconnect'] === true }));
    },
  },
  revoke: {
    summary: 'revoke a token (by jti) or every token of a user on a running Herald',
    help: `Usage:
  herald revoke --user USER [--url URL] [--key KEY]
  herald revoke --jti JTI [--expires-at TIME] [--url URL] [--key KEY]

--user refuses every token of the user issued until now; --jti refuses one
token by its jti claim (until --expires-at, or for auth.revocationRetentionMs).
Both close the connections concerned, on every node, with 3507. Scope admin.

Options:
  --user USER       revoke every token of this user
  --jti JTI         revoke the token with this jti
  --expires-at TIME with --jti: until then (unix seconds or ISO 8601, e.g. the token's exp)
${connectionHelp}

${exitHelp}`,
    options: { user: { type: 'string' }, jti: { type: 'string' }, 'expires-at': { type: 'string' }, ...connectionOptions },
    async run(values) {
      const user = values['user'] as string | undefined;
      const jti = values['jti'] as string | undefined;
      if ((user === undefined) === (jti === undefined)) usageError('revoke', 'give exactly one of --user USER and --jti JTI');
      if (user !== undefined && values['expires-at'] !== undefined) usageError('revoke', '--expires-at goes with --jti');
      const expiresAt = values['expires-at'] === undefined ? undefined : timeFlag('revoke', values['expires-at'] as string);
      const api = await client('revoke', values);
      await call('revoke', () => (user !== undefined ? api.revokeUser(user) : api.revokeToken(jti!, expiresAt)));
    },
  },
};
