/**
 * WebSocket: the write side (WebSocketTransport) and the upgrade handler
 * that owns the socket and reads from it. Protocol errors of the framing
 * layer (1002, 1007, 1009) are the `ws` library's.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { decodeCommand } from '../protocol/command-decoder.ts';
import { apiErrors, disconnects, type ApiErrorCode } from '../protocol/index.ts';
import type { EncodedFrame } from '../core/encoded-frame.ts';
import type { Transport } from '../core/transport.ts';
import type { Node } from '../core/node.ts';
import type { Client } from '../core/client.ts';
import { openGate, type ConnectionGate } from './http-connection.ts';

export const WEBSOCKET_PATH = '/connection/websocket';

const OPEN = 1;

export class WebSocketTransport implements Transport {
  readonly kind = 'websocket';
  readonly tracksPositions = false;
  readonly #socket: WebSocket;
  /** The upgraded TCP socket under `#socket`: frames built once go straight to it. */
  readonly #raw: Duplex;
  #closed = false;

  constructor(socket: WebSocket, raw: Duplex) {
    this.#socket = socket;
    this.#raw = raw;
  }

  write(frame: EncodedFrame): void {
    // Whole frames only, and only while open (never after a close frame):
    // interleaves safely with what `ws` writes (pings, close), since
    // per-message deflate is off and nothing is fragmented.
    if (!this.#closed && this.#socket.readyState === OPEN) this.#raw.write(frame.wsFrame);
  }

  heartbeat(ping: EncodedFrame): void {
    if (this.#closed) return;
    this.#socket.ping();
    this.write(ping);
  }

  bufferedBytes(): number {
    return this.#socket.bufferedAmount;
  }

  close(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    const socket = this.#socket;
    if (code === disconnects.slow.code) {
      // The peer is not reading: a close handshake would queue behind the
      // backlog. Cut the socket.
      socket.terminate();
      return;
    }
    socket.close(code, reason);
    const timer = setTimeout(() => socket.terminate(), 5000);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  markClosed(): void {
    this.#closed = true;
  }
}

export interface WebSocketHandlerOptions {
  readonly maxMessageBytes: number;
  /** Fragments per message before the socket is closed with 1008 (required: `ws` reads 0 as no cap). */
  readonly maxFragments: number;
  /**
   * Decides before the upgrade (origin allowlist, connection caps, cookie
   * token); a refusal is answered with its HTTP status and no 101.
   */
  readonly gate?: ConnectionGate;
}

/**
 * Herald has no subprotocols; a `Sec-WebSocket-Protocol` longer than this
 * is refused (400) before `ws` parses it.
 */
const MAX_PROTOCOL_HEADER = 1024;

export interface WebSocketEndpoint {
  /** Resolves when every upgraded socket has closed, or after `timeoutMs`. */
  settle(timeoutMs: number): Promise<void>;
  /** Cuts every socket still open. */
  terminateAll(): void;
}

/** Attaches the WebSocket endpoint to an HTTP server. */
export function attachWebSocket(server: Server | HttpsServer, node: Node, options: WebSocketHandlerOptions): WebSocketEndpoint {
  const gate = options.gate ?? openGate;
  const sockets = new Set<WebSocket>();
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: options.maxMessageBytes,
    maxFragments: options.maxFragments,
    perMessageDeflate: false,
    clientTracking: false,
    skipUTF8Validation: false,
  });
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const path = (request.url ?? '').split('?', 1)[0];
    if (path !== WEBSOCKET_PATH) return refuse(socket, 'not_found');
    if (node.draining) return refuse(socket, 'unavailable');
    const protocols = request.headers['sec-websocket-protocol'];
    if (protocols !== undefined && protocols.length > MAX_PROTOCOL_HEADER) return refuse(socket, 'bad_request');
    const admission = gate.open(request);
    if (admission.refused !== undefined) return refuse(socket, admission.refused, admission.retryAfterSeconds);
    // Released when the socket closes, whether or not the upgrade succeeds.
    socket.once('close', () => admission.release());
    wss.handleUpgrade(request, socket, head, (ws) => {
      sockets.add(ws);
      ws.once('close', () => sockets.delete(ws));
      const client = serve(ws, socket, node, options, gate);
      admission.attach(client);
      client.fallbackToken = admission.fallbackToken;
    });
  });
  return {
    async settle(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (sockets.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    },
    terminateAll() {
      for (const ws of sockets) ws.terminate();
    },
  };
}

const statusText: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  429: 'Too Many Requests',
  503: 'Service Unavailable',
};

/** Answers the upgrade request with a registered API error instead of a 101, and closes. */
function refuse(socket: Duplex, code: ApiErrorCode, retryAfterSeconds?: number): void {
  const entry = apiErrors[code];
  const body = JSON.stringify({ error: { code, message: entry.message } });
  const retryAfter = retryAfterSeconds === undefined ? '' : `Retry-After: ${retryAfterSeconds}\r\n`;
  socket.end(
    `HTTP/1.1 ${entry.status} ${statusText[entry.status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n${retryAfter}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

function serve(ws: WebSocket, raw: Duplex, node: Node, options: WebSocketHandlerOptions, gate: ConnectionGate): Client {
  const transport = new WebSocketTransport(ws, raw);
  const client: Client = node.createClient(transport);
  let userAdmitted = false;
  const reply = (frame: string) => {
    if (client.isClosed) return;
    // The first reply after `connect` succeeded is the connect reply: the
    // per-user cap is judged now that the user is known, before it is sent.
    if (!userAdmitted && client.state === 'connected') {
      userAdmitted = true;
      if (!gate.admitUser(client)) {
        client.disconnect('connection_limit');
        return;
      }
    }
    ws.send(frame);
  };
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (client.isClosed) return;
    if (isBinary) {
      client.disconnect('bad_request');
      return;
    }
    const admitted = client.admitInbound();
    if (client.isClosed) return;
    const decoded = decodeCommand(data.toString('utf8'), options.maxMessageBytes);
    if (!decoded.ok) {
      if (decoded.error === 'method_not_found') client.replyError(decoded.id, 'method_not_found', reply);
      else if (decoded.error === 'bad_params') client.replyError(decoded.id, 'bad_request', reply);
      else client.disconnect(decoded.error === 'too_large' ? 'message_too_large' : 'bad_request');
      return;
    }
    const command = decoded.command;
    if (!admitted) {
      if (command.id !== undefined) client.replyError(command.id, 'too_many_requests', reply);
      return;
    }
    void client.handleCommand(command, reply);
  });
  ws.on('pong', () => {
    client.lastActivity = node.now();
  });
  ws.on('error', () => {
    // ws closes the socket itself (1002/1007/1009); 'close' follows.
  });
  ws.on('close', (code: number, reason: Buffer) => {
    transport.markClosed();
    client.close(code === 1005 ? 1000 : code, reason.toString('utf8').slice(0, 123));
  });
  return client;
}
