/**
 * Baseline for the SSE benchmarks: the least an EventSource broadcast server
 * on Node's `http` can do. `GET` on any path opens a stream (status 200,
 * `text/event-stream`, `retry: 1000`, then one `connected` event at once, so
 * a client can tell it is in); `POST /publish` writes the request body as
 * one `data:` event to every open stream's socket. No protocol, no
 * channels, no auth, no history, no logging per connection.
 *
 *   node bench/raw-sse-server.ts [--port=0] [--host=127.0.0.1]
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
const streams = new Set<ServerResponse>();

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/publish') {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const event = Buffer.from('data: ' + Buffer.concat(chunks).toString('utf8') + '\n\n');
      for (const stream of streams) stream.socket?.write(event);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"sent":${streams.size}}`);
    });
    return;
  }
  if (req.method === 'GET') {
    res.useChunkedEncodingByDefault = false;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'close' });
    res.write('retry: 1000\n\ndata: {"connected":true}\n\n');
    streams.add(res);
    res.on('close', () => streams.delete(res));
    return;
  }
  res.writeHead(404);
  res.end();
});
server.listen(port, host, () => {
  const address = server.address();
  const actual = typeof address === 'object' && address !== null ? address.port : port;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: actual, pid: process.pid })}\n`);
});

function stop(): void {
  for (const stream of streams) stream.destroy();
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
