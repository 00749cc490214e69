/**
 * A tiny HTTP proxy in front of a test Herald that can misbehave the way
 * real networks do, for the SDK's fallback and recovery tests:
 *
 * - `refuseUpgrades`: answers WebSocket upgrades with 403 (a proxy or
 *   firewall that blocks WebSocket);
 * - `bufferStreams`: holds `text/event-stream` answers until they end (a
 *   proxy that buffers responses, so SSE never delivers an event);
 * - `down`: destroys new connections at once (the server is unreachable);
 *   `dropAll()` also cuts every open one (a network drop);
 * - `stripParams`: removes these query parameters from every request URL
 *   (a server that does not know them, as an older Herald ignores them).
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TestProxy {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  refuseUpgrades: boolean;
  bufferStreams: boolean;
  down: boolean;
  stripParams: readonly string[];
  /** Destroys every open connection, both sides. */
  dropAll(): void;
  /** Requests seen, as `METHOD path` (WebSocket upgrades as `UPGRADE path`). */
  readonly seen: string[];
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<TestProxy> {
  const upstream = new URL(target);
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const seen: string[] = [];
  const state = { refuseUpgrades: false, bufferStreams: false, down: false, stripParams: [] as readonly string[] };
  const rewrite = (url: string | undefined): string => {
    if (url === undefined || state.stripParams.length === 0 || !url.includes('?')) return url ?? '/';
    const parsed = new URL(url, 'http://proxy');
    for (const name of state.stripParams) parsed.searchParams.delete(name);
    return parsed.pathname + parsed.search;
  };

  const server: Server = createServer((req, res) => {
    if (state.down) {
      req.socket.destroy();
      return;
    }
    seen.push(`${req.method} ${req.url}`);
    const forward = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: rewrite(req.url), headers: req.headers, agent: false },
      (answer: IncomingMessage) => {
        track(answer.socket);
        const isStream = (answer.headers['content-type'] ?? '').startsWith('text/event-stream');
        if (isStream && state.bufferStreams) {
          const chunks: Buffer[] = [];
          answer.on('data', (chunk: Buffer) => chunks.push(chunk));
          answer.on('end', () => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            res.end(Buffer.concat(chunks));
          });
        } else {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.flushHeaders();
          answer.pipe(res);
        }
        answer.on('error', () => res.destroy());
      },
    );
    forward.on('error', () => res.destroy());
    res.on('close', () => forward.destroy());
    req.pipe(forward);
  });
  server.on('connection', (socket: Socket) => {
    if (state.down) {
      socket.destroy();
      return;
    }
    track(socket);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    seen.push(`UPGRADE ${req.url}`);
    socket.on('error', () => socket.destroy());
    if (state.refuseUpgrades || state.down) {
      socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const remote = connect(Number(upstream.port), upstream.hostname, () => {
      let head0 = `${req.method} ${rewrite(req.url)} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) head0 += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      remote.write(head0 + '\r\n');
      if (head.length > 0) remote.write(head);
      remote.pipe(socket);
      socket.pipe(remote);
    });
    track(remote);
    remote.on('error', () => socket.destroy());
    remote.on('close', () => socket.destroy());
    socket.on('close', () => remote.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get refuseUpgrades() {
      return state.refuseUpgrades;
    },
    set refuseUpgrades(value: boolean) {
      state.refuseUpgrades = value;
    },
    get bufferStreams() {
      return state.bufferStreams;
    },
    set bufferStreams(value: boolean) {
      state.bufferStreams = value;
    },
    get down() {
      return state.down;
    },
    set down(value: boolean) {
      state.down = value;
    },
    get stripParams() {
      return state.stripParams;
    },
    set stripParams(value: readonly string[]) {
      state.stripParams = value;
    },
    dropAll() {
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
    seen,
    async close() {
      state.down = true;
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
