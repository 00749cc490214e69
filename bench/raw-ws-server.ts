/**
 * Baseline for the fan-out benchmark: the least a WebSocket broadcast server
 * can do. A `ws` WebSocketServer on any path, and `POST /publish`, which
 * frames the request body once (ws's own `Sender.frame`: one unmasked text
 * frame) and writes those same bytes to every open client's socket: no
 * per-socket framing, no protocol, no channels, no auth, no history, no
 * logging per connection. The fastest honest broadcast over `ws`, and so
 * the baseline Herald's own fan-out (which also frames once) is held to.
 *
 * Run as its own process (like `herald serve`) so that /proc CPU and RSS of
 * the two are comparable:
 *
 *   node bench/raw-ws-server.ts [--port=0] [--host=127.0.0.1]
 *
 * Prints one JSON line `{"msg":"listening","port":N}` to stdout once it
 * accepts connections, and exits when stdin closes (its parent went away),
 * on SIGTERM or on SIGINT.
 */
import { createServer } from 'node:http';
import type { Socket } from 'node:net';
import * as ws from 'ws';
import { WebSocketServer, WebSocket } from 'ws';

interface FrameOptions {
  readonly fin: boolean;
  readonly rsv1: boolean;
  readonly opcode: number;
  readonly mask: boolean;
  readonly readOnly: boolean;
}
/** ws's frame builder (its `Sender.frame`, exported by the package but not in its type definitions). */
const { Sender } = ws as unknown as { Sender: { frame(data: Buffer, options: FrameOptions): Buffer[] } };
const textFrame: FrameOptions = { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: true };

function flag(name: string, fallback: string): string {
  const prefix = `--${name}=`;
  const arg = process.argv.find((a) => a.startsWith(prefix));
  return arg === undefined ? fallback : arg.slice(prefix.length);
}

const host = flag('host', '127.0.0.1');
const port = Number(flag('port', '0'));

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/publish') {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = chunks.length === 1 && chunks[0] !== undefined ? chunks[0] : Buffer.concat(chunks);
      const frame = Buffer.concat(Sender.frame(body, textFrame));
      let sent = 0;
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) {
          (client as unknown as { _socket: Socket })._socket.write(frame);
          sent++;
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"sent":${sent}}`);
    });
    return;
  }
  if (req.method === 'GET' && req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (socket) => {
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
// The benchmark gives us a stdin pipe: when it closes, the parent is gone.
if (!process.stdin.isTTY) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
