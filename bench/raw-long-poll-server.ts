/**
 * Baseline for the long-polling benchmark: the least a long-poll broadcast
 * server on Node's `http` can do. `POST /poll` with `{"seq":N}` answers at
 * once with every message after N, or holds the request until the next
 * `POST /publish`, which appends the request body to one in-memory log and
 * answers every held poll: `{"seq":M,"messages":[...]}`. No sessions, no
 * protocol, no auth, no security headers, no timeouts, no logging.
 *
 *   node bench/raw-long-poll-server.ts [--port=0] [--host=127.0.0.1]
 *
 * Prints one JSON line `{"msg":"listening","port":N}` to stdout once it
 * accepts connections, and exits when stdin closes (its parent went away),
 * on SIGTERM or on SIGINT.
 */
import { createServer, type ServerResponse } from 'node:http';

function flag(name: string, fallback: string): string {
  const prefix = `--${name}=`;
  const arg = process.argv.find((a) => a.startsWith(prefix));
  return arg === undefined ? fallback : arg.slice(prefix.length);
}

const host = flag('host', '127.0.0.1');
const port = Number(flag('port', '0'));
const log: string[] = [];
let held: ServerResponse[] = [];

function answer(response: ServerResponse, after: number): void {
  const text = '{"seq":' + log.length + ',"messages":[' + log.slice(after).join(',') + ']}';
  response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    if (req.method === 'POST' && req.url === '/publish') {
      log.push(body);
      const waiting = held;
      held = [];
      for (const response of waiting) if (!response.destroyed) answer(response, log.length - 1);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"offset":${log.length}}`);
      return;
    }
    if (req.method === 'POST' && req.url === '/poll') {
      const seq = (JSON.parse(body) as { seq: number }).seq;
      if (seq < log.length) answer(res, seq);
      else held.push(res);
      return;
    }
    res.writeHead(404);
    res.end();
  });
});
server.keepAliveTimeout = 300_000;
server.listen(port, host, () => {
  const address = server.address();
  const actual = typeof address === 'object' && address !== null ? address.port : port;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: actual, pid: process.pid })}\n`);
});

function stop(): void {
  server.closeAllConnections();
  server.close();
  setTimeout(() => process.exit(0), 200).unref();
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (!process.stdin.isTTY) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
