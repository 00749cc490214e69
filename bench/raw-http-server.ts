/**
 * Baseline for the publish benchmark (bench/publish.ts): the least an HTTP
 * publish endpoint in front of WebSocket subscribers can do on Node. A
 * `ws` WebSocketServer where a client subscribes to one channel by its URL
 * (`/sub/<channel>`), and `POST /publish` with `{"channel":…,"data":…}`:
 * the body is read, parsed with `JSON.parse`, `data` serialized again and
 * sent to that channel's subscribers with `ws.send`, and the answer is a
 * small JSON object. No auth, no validation, no history, no rate limit, no
 * logging per request.
 *
 *   node bench/raw-http-server.ts [--port=0] [--host=127.0.0.1]
 *
 * Prints one JSON line `{"msg":"listening","port":N}` once it accepts
 * connections, and exits when stdin closes (its parent went away), on
 * SIGTERM or on SIGINT.
 */
import { createServer } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';

function flag(name: string, fallback: string): string {
  const prefix = `--${name}=`;
  const arg = process.argv.find((a) => a.startsWith(prefix));
  return arg === undefined ? fallback : arg.slice(prefix.length);
}

const host = flag('host', '127.0.0.1');
const port = Number(flag('port', '0'));
const channels = new Map<string, Set<WebSocket>>();

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/publish') {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let message: { channel?: unknown; data?: unknown };
      try {
        message = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { channel?: unknown; data?: unknown };
      } catch {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end('{"error":"invalid_json"}');
        return;
      }
      const subscribers = typeof message.channel === 'string' ? channels.get(message.channel) : undefined;
      const text = JSON.stringify(message.data);
      let sent = 0;
      if (subscribers !== undefined) {
        for (const client of subscribers) {
          client.send(text);
          sent++;
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"sent":${String(sent)}}`);
    });
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (socket, request) => {
  const url = request.url ?? '';
  const channel = url.startsWith('/sub/') ? decodeURIComponent(url.slice(5)) : '';
  let set = channels.get(channel);
  if (set === undefined) channels.set(channel, (set = new Set()));
  set.add(socket);
  socket.on('close', () => {
    set.delete(socket);
    if (set.size === 0) channels.delete(channel);
  });
  socket.on('error', () => socket.terminate());
});

server.listen(port, host, () => {
  const address = server.address();
  const actual = typeof address === 'object' && address !== null ? address.port : port;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: actual, pid: process.pid })}\n`);
});

function stop(): void {
  for (const client of wss.clients) client.terminate();
  wss.close();
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
