/**
 * WebSocket: the write side (WebSocketTransport) and the upgrade handler
 * that owns the socket and reads from it. Protocol errors of the framing
 * layer (1002, 1007, 1009) are the `ws` library's.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { hash } from 'node:crypto';
import { WebSocket, WebSocketServer } from 'ws';
import { decodeCommand } from '@herald/protocol/commands';
import { apiErrors, disconnects, encodePush, type ApiErrorCode, type ConnectResult } from '@herald/protocol';
import { EncodedFrame } from '../core/encoded-frame.ts';
import type { EncodedBatch } from '../core/encoded-batch.ts';
import type { Transport } from '../core/transport.ts';
import type { Node } from '../core/node.ts';
import type { Client } from '../core/client.ts';
import {
  queryFlag,
  connectHttpClient,
  openGate,
  subscribeHttpClient,
  type ConnectionGate,
  type ConnectTimeSubscription,
  type GateAnswer,
  type Opened,
  type OpenFailure,
  type Releasable,
} from './http-connection.ts';
import { onSocketDrain } from './socket-drain.ts';
import { encodeServerTextFrameOf, encodeServerTextFrames } from '../util/websocket-frame.ts';
import type { AppPaths, AppScope } from './app-paths.ts';
import { bearer } from './sse.ts';

export const WEBSOCKET_PATH = '/connection/websocket';

const OPEN = 1;

export class WebSocketTransport implements Transport {
  // Getters, not fields: nothing per connection.
  get kind(): 'websocket' {
    return 'websocket';
  }

  get tracksPositions(): boolean {
    return false;
  }
  /** Undefined while a connection opened in the upgrade request is connected before its 101 (`attach`). */
  #socket: WebSocket | undefined;
  /** The upgraded TCP socket under `#socket`: frames built once go straight to it. */
  readonly #raw: Duplex;
  readonly #closeGraceMs: number;
  #closed = false;
  /**
   * From a reply to the end of its turn of the event loop: the replies
   * (text) and frames (framed bytes) written meanwhile, framed into one
   * buffer and written at once (`flushHeld`): a `connect` reply, the
   * `subscribe` reply pipelined behind it and the recovered publications
   * leave in one write of one buffer.
   */
  #held: (string | Buffer)[] | undefined = undefined;
  /** What `#held` holds, counted in `bufferedBytes()` (replies by their length, as a socket counts a string). */
  #heldBytes = 0;
  /**
   * A connection opened in the upgrade request (`connect=1`): true from
   * its creation until `opened()`. Everything written meanwhile is held,
   * so the 101, the `connected` push, the `subscribed` pushes and the
   * recovered publications leave in one system call: one buffer when
   * Herald writes the 101 (`upgradeAtOpen`); else `ws` writes it into the
   * socket, corked until `opened()`.
   */
  #opening = false;
  /** An opening whose 101 Herald writes itself (`upgradeAtOpen`), until `opened()`. */
  #upgrade: PendingUpgrade | undefined = undefined;

  constructor(socket: WebSocket | undefined, raw: Duplex, closeGraceMs: number) {
    this.#socket = socket;
    this.#raw = raw;
    this.#closeGraceMs = closeGraceMs;
    if (socket === undefined) {
      this.#opening = true;
      this.#held = [];
    }
  }

  /** A connection opened in the upgrade request: its socket, once `ws` has written the 101. */
  attach(socket: WebSocket): void {
    this.#socket = socket;
  }

  /**
   * An opening that finishes its handshake at `opened()`: the 101 and what
   * the opening held leave in one write of one buffer, then `ws` takes the
   * socket (nothing of `ws`'s can write before the 101: it has no socket
   * until then, and after it reads only on a later tick).
   */
  upgradeAtOpen(upgrade: PendingUpgrade): void {
    this.#upgrade = upgrade;
  }

  /** The end of an opening (see `#opening`): writes what it held (after the 101, see `upgradeAtOpen`) and uncorks the socket. */
  opened(): void {
    if (!this.#opening) return;
    this.#opening = false;
    const upgrade = this.#upgrade;
    if (upgrade !== undefined) {
      this.#upgrade = undefined;
      const held = this.#held ?? [];
      this.#held = undefined;
      this.#heldBytes = 0;
      this.#raw.write(encodeServerTextFrames(held, upgradeAnswer(upgrade.accept)));
      (upgrade.ws as unknown as SocketTaker).setSocket(this.#raw, upgrade.head, upgrade.options);
      this.#socket = upgrade.ws;
      upgrade.onOpen(upgrade.ws, this.#raw, upgrade.lost);
      return;
    }
    if (this.#held !== undefined && this.#held.length === 0) {
      this.#held = undefined;
      this.#heldBytes = 0;
    } else this.flushHeld();
    if (this.#raw.writableCorked > 0) this.#raw.uncork();
  }

  #open(): boolean {
    return !this.#closed && this.#socket !== undefined && this.#socket.readyState === OPEN;
  }

  write(frame: EncodedFrame): void {
    // Whole frames only, and only while open (never after a close frame):
    // interleaves safely with what `ws` writes (pings, close), since
    // per-message deflate is off and nothing is fragmented.
    if (this.#opening) {
      if (!this.#closed) this.#hold(frame.wsFrame);
      return;
    }
    if (!this.#open()) return;
    if (this.#held !== undefined) this.#hold(frame.wsFrame);
    else this.#raw.write(frame.wsFrame);
  }

  writeMany(batch: EncodedBatch): void {
    if (this.#opening) {
      if (!this.#closed) this.#hold(batch.wsFrame);
      return;
    }
    if (!this.#open()) return;
    if (this.#held !== undefined) this.#hold(batch.wsFrame);
    else this.#raw.write(batch.wsFrame);
  }

  #hold(bytes: Buffer): void {
    this.#held!.push(bytes);
    this.#heldBytes += bytes.length;
  }

  /**
   * A reply: one frame, framed here (ws.send writes a header and a
   * payload). Held until the end of this turn with what follows it (a
   * subscribe's recovered publications, the next pipelined command's
   * reply), then written in one piece.
   */
  reply(text: string): void {
    if (!this.#opening && !this.#open()) return;
    if (this.#held === undefined) {
      this.#held = [text];
      process.nextTick(flushHeld, this);
    } else this.#held.push(text);
    this.#heldBytes += text.length;
  }

  /** Writes what this turn held (see `#held`), framed into one buffer. */
  flushHeld(): void {
    const held = this.#held;
    if (held === undefined || this.#opening) return;
    this.#held = undefined;
    this.#heldBytes = 0;
    if (!this.#open() || held.length === 0) return;
    const first = held[0]!;
    if (held.length === 1) {
      this.#raw.write(typeof first === 'string' ? encodeServerTextFrameOf(first) : first);
      return;
    }
    this.#raw.write(encodeServerTextFrames(held));
  }

  heartbeat(ping: EncodedFrame): void {
    if (this.#closed || this.#socket === undefined) return;
    this.opened();
    this.flushHeld();
    this.#socket.ping();
    this.write(ping);
  }

  bufferedBytes(): number {
    return (this.#socket?.bufferedAmount ?? 0) + this.#heldBytes;
  }

  onDrain(listener: () => void): void {
    onSocketDrain(this.#raw, listener);
  }

  close(code: number, reason: string): void {
    if (this.#closed) return;
    // Past its checks, an opening answers 101 first, then closes as any connection.
    if (this.#upgrade !== undefined) this.opened();
    const socket = this.#socket;
    if (socket === undefined) {
      // Refused before its 101: the upgrade handler answers with an HTTP error.
      this.#closed = true;
      this.#held = undefined;
      this.#heldBytes = 0;
      return;
    }
    if (code === disconnects.slow.code) {
      // The peer is not reading: a close handshake would queue behind the
      // backlog. Cut the socket.
      this.#closed = true;
      this.#opening = false;
      this.#held = undefined;
      this.#heldBytes = 0;
      socket.terminate();
      return;
    }
    // What this turn held goes before the close frame.
    this.opened();
    this.flushHeld();
    this.#closed = true;
    socket.close(code, reason);
    // A peer that does not answer the close handshake within the close grace is cut.
    const timer = setTimeout(() => socket.terminate(), this.#closeGraceMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  markClosed(): void {
    this.#closed = true;
    this.#opening = false;
    this.#upgrade = undefined;
    this.#held = undefined;
    this.#heldBytes = 0;
  }
}

/** `ws`'s options for a socket it takes (`WebSocket.setSocket`, as its `completeUpgrade` passes them). */
interface SetSocketOptions {
  readonly allowSynchronousEvents: boolean | undefined;
  readonly maxBufferedChunks: number | undefined;
  readonly maxFragments: number | undefined;
  readonly maxPayload: number | undefined;
  readonly skipUTF8Validation: boolean | undefined;
}

/**
 * `ws`'s `WebSocket.setSocket` (not in its type definitions): what its
 * `completeUpgrade` calls once it has written the 101. Herald calls it for
 * a connection opened in the upgrade request, whose 101 it writes with the
 * opening frames (`ws` is pinned in package.json; the WebSocket tests open
 * every connection through it).
 */
interface SocketTaker {
  setSocket(socket: Duplex, head: Buffer, options: SetSocketOptions): void;
}

/** See `WebSocketTransport.upgradeAtOpen`. */
interface PendingUpgrade {
  /** `Sec-WebSocket-Accept` of the request's key. */
  readonly accept: string;
  /** The `ws` socket (CONNECTING until it takes the TCP socket). */
  readonly ws: WebSocket;
  /** What the client sent after the upgrade request's head. */
  readonly head: Buffer;
  readonly options: SetSocketOptions;
  /** The handler's 'close' listener of the socket before the upgrade. */
  readonly lost: () => void;
  /** Called once `ws` has the socket. */
  readonly onOpen: (ws: WebSocket, raw: Duplex, lost: () => void) => void;
}

/** The 101 answer to a handshake (as `ws` answers it: no subprotocol, no extension). */
function upgradeAnswer(accept: string): string {
  return `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`;
}

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export interface WebSocketHandlerOptions {
  readonly maxMessageBytes: number;
  /** Fragments per message before the socket is closed with 1008 (required: `ws` reads 0 as no cap). */
  readonly maxFragments: number;
  /**
   * Decides before the upgrade (origin allowlist, connection caps, cookie
   * token); a refusal is answered with its HTTP status and no 101.
   */
  readonly gate?: ConnectionGate;
  /**
   * Upgrades on other paths (the Pusher endpoint's `/app/{key}`,
   * packages/server/src/pusher): answers true when it took the request (it
   * then answers or upgrades the socket itself); false leaves the 404.
   */
  /** The apps' paths (`/apps/{id}/connection/websocket`, transports/app-paths.ts); without it only the unprefixed path. */
  readonly appPaths?: AppPaths;
  readonly otherUpgrade?: (request: IncomingMessage, socket: Duplex, head: Buffer, path: string) => boolean;
}

/**
 * Herald has no subprotocols; a `Sec-WebSocket-Protocol` longer than this
 * is refused (400) before `ws` parses it.
 */
const MAX_PROTOCOL_HEADER = 1024;

/** `Sec-WebSocket-Key` as `ws` accepts it. */
const KEY = /^[+/0-9A-Za-z]{22}==$/;

/** The checks `ws`'s handleUpgrade makes of the method and the handshake headers, made before a connection opened in the upgrade request runs `connect`. */
function handshakeValid(request: IncomingMessage): boolean {
  const { upgrade, 'sec-websocket-key': key, 'sec-websocket-version': version } = request.headers;
  return (
    request.method === 'GET' &&
    upgrade !== undefined &&
    upgrade.toLowerCase() === 'websocket' &&
    key !== undefined &&
    KEY.test(key) &&
    (version === '13' || version === '8')
  );
}

/** `name` of a connection opened in the upgrade request: as the `connect` command's. */
const MAX_NAME_LENGTH = 64;

export interface WebSocketEndpoint {
  /** Resolves when every upgraded socket has closed (true), or after `timeoutMs` (false). */
  settle(timeoutMs: number): Promise<boolean>;
  /** Cuts every socket still open. */
  terminateAll(): void;
}

function flushHeld(transport: WebSocketTransport): void {
  transport.flushHeld();
}

/** Destroys the socket that emitted the error (`this`). */
function destroyOnError(this: Duplex): void {
  this.destroy();
}

/** Attaches the WebSocket endpoint to an HTTP server. */
export function attachWebSocket(server: Server | HttpsServer, node: Node, options: WebSocketHandlerOptions): WebSocketEndpoint {
  const gate = options.gate ?? openGate;
  const maxMessageBytes = options.maxMessageBytes;
  const maxJsonDepth = node.config.limits.maxJsonDepth;
  /** Upgraded sockets until their 'close' (for drain). */
  const sockets = new Set<HeraldWebSocket>();

  /**
   * The `ws` socket class of this endpoint. It carries the connection's
   * Herald state and handles its own events in `emit`: an idle connection
   * then holds no listener entries and no closures of ours (see
   * docs/performance.md, idle memory). Events other than these four go to
   * listeners as usual.
   */
  class HeraldWebSocket extends WebSocket {
    client: Client | undefined = undefined;
    place: Releasable | undefined = undefined;
    /** Whether the per-user cap has been judged (at the first reply after `connect`). */
    userAdmitted = false;

    override emit(event: string | symbol, ...args: unknown[]): boolean {
      switch (event) {
        case 'message':
          onMessage(this, args[0] as Buffer, args[1] as boolean);
          return true;
        case 'pong':
          if (this.client !== undefined) this.client.lastActivity = node.now();
          return true;
        case 'error':
          // ws closes the socket itself (1002/1007/1009); 'close' follows.
          return true;
        case 'close':
          onClose(this, args[0] as number, args[1] as Buffer);
          return true;
        default:
          return super.emit(event, ...args);
      }
    }
  }

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: maxMessageBytes,
    maxFragments: options.maxFragments,
    perMessageDeflate: false,
    clientTracking: false,
    skipUTF8Validation: false,
    WebSocket: HeraldWebSocket,
  });

  /** The reply to one command: the first reply after `connect` is where the per-user cap is judged. */
  function sendReply(ws: HeraldWebSocket, client: Client, frame: string): void {
    if (client.isClosed) return;
    // Frames written before the reply go out before it.
    client.flushWrites();
    if (!ws.userAdmitted && client.state === 'connected') {
      ws.userAdmitted = true;
      if (!gate.admitUser(client)) {
        client.disconnect('connection_limit');
        return;
      }
    }
    (client.transport as WebSocketTransport).reply(frame);
  }

  function onMessage(ws: HeraldWebSocket, data: Buffer, isBinary: boolean): void {
    const client = ws.client;
    if (client === undefined || client.isClosed) return;
    if (isBinary) {
      client.disconnect('bad_request');
      return;
    }
    const admitted = client.admitInbound();
    if (client.isClosed) return;
    const reply = (frame: string): void => sendReply(ws, client, frame);
    const decoded = decodeCommand(data.toString('utf8'), maxMessageBytes, maxJsonDepth);
    if (!decoded.ok) {
      if (decoded.error === 'method_not_found') client.replyError(decoded.id, 'method_not_found', reply);
      else if (decoded.error === 'bad_params') client.replyError(decoded.id, 'bad_request', reply, decoded.detail);
      else if (decoded.error === 'too_deep') client.replyError(decoded.id, 'json_too_deep', reply);
      else client.disconnect(decoded.error === 'too_large' ? 'message_too_large' : 'bad_request');
      return;
    }
    const command = decoded.command;
    if (!admitted) {
      if (command.id !== undefined) client.replyError(command.id, 'too_many_requests', reply);
      return;
    }
    void client.handleCommand(command, reply);
  }

  function onClose(ws: HeraldWebSocket, code: number, reason: Buffer): void {
    sockets.delete(ws);
    ws.place?.release();
    const client = ws.client;
    if (client === undefined) return;
    (client.transport as WebSocketTransport).markClosed();
    client.close(code === 1005 ? 1000 : code, reason.toString('utf8').slice(0, 123));
  }

  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', destroyOnError);
    const path = (request.url ?? '').split('?', 1)[0] ?? '';
    let scope: AppScope | undefined;
    if (path !== WEBSOCKET_PATH) {
      const match = options.appPaths?.match(path);
      if (match?.refused !== undefined) return refuse(socket, match.refused);
      if (match === undefined || match.rest !== WEBSOCKET_PATH) {
        if (options.otherUpgrade?.(request, socket, head, path) !== true) refuse(socket, 'not_found');
        return;
      }
      scope = match.scope;
    }
    if (node.draining) return refuse(socket, 'unavailable');
    const protocols = request.headers['sec-websocket-protocol'];
    if (protocols !== undefined && protocols.length > MAX_PROTOCOL_HEADER) return refuse(socket, 'bad_request');
    const admission = gate.open(request, scope);
    if (admission instanceof Promise) {
      // Cluster-wide limits: Redis answers first.
      void admission.then((settled) => {
        if (!socket.destroyed && !node.draining) return upgrade(request, socket, head, settled, path, scope);
        if (settled.refused === undefined) settled.place.release();
        if (!socket.destroyed) refuse(socket, 'unavailable');
      });
      return;
    }
    upgrade(request, socket, head, admission, path, scope);
  });

  function upgrade(request: IncomingMessage, socket: Duplex, head: Buffer, admission: GateAnswer, path: string, scope: AppScope | undefined): void {
    if (admission.refused !== undefined) return refuse(socket, admission.refused, admission.retryAfterSeconds);
    // The query is parsed only when it can name `batch` or `connect` (most URLs carry none; `%` for an encoded name).
    const query = request.url?.slice(path.length) ?? '';
    const params = query.includes('batch') || query.includes('connect') || query.includes('%') ? new URLSearchParams(query) : undefined;
    if (params !== undefined && queryFlag(params.get('connect'))) {
      openInUpgrade(request, socket, head, admission, params, scope);
      return;
    }
    const place = admission.place;
    // Until the upgrade completes, the place goes back when the socket
    // closes (ws destroys it on a bad handshake); after it, onClose does it.
    const releaseEarly = (): void => place.release();
    socket.once('close', releaseEarly);
    wss.handleUpgrade(request, socket, head, (upgraded) => {
      socket.removeListener('close', releaseEarly);
      // From here ws handles socket errors (and destroys the socket).
      socket.removeListener('error', destroyOnError);
      const ws = upgraded as HeraldWebSocket;
      sockets.add(ws);
      ws.place = place;
      const client = node.createClient(new WebSocketTransport(ws, socket, node.config.limits.closeGraceMs));
      ws.client = client;
      fromRequest(client, request, admission, scope, params !== undefined && queryFlag(params.get('batch')));
    });
  }

  /** What a new client takes from its upgrade request and admission: app, peer address, headers for hooks, batch, cookie token. */
  function fromRequest(client: Client, request: IncomingMessage, admission: Exclude<GateAnswer, { readonly refused: ApiErrorCode }>, scope: AppScope | undefined, batch: boolean): void {
    client.scope = scope;
    client.address = admission.address ?? request.socket.remoteAddress ?? '';
    if (node.hooks !== undefined) client.forwarded = node.hooks.capture(request.headers);
    client.batchRequested = batch;
    client.fallbackToken = admission.fallbackToken;
  }

  /**
   * A connection opened in the upgrade request (`connect=1`, docs/protocol.md
   * "WebSocket"): `connect` and the channels are checked before the 101, as
   * an SSE open checks them before its stream starts (a failure is an HTTP
   * error with its registered body); after it, the `connected` push, the
   * connect-time subscriptions (`subscribed` or `unsubscribed` pushes, the
   * recovered publications) follow the 101 in the same write.
   */
  function openInUpgrade(
    request: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    admission: Exclude<GateAnswer, { readonly refused: ApiErrorCode }>,
    params: URLSearchParams,
    scope: AppScope | undefined,
  ): void {
    const place = admission.place;
    if (!handshakeValid(request)) {
      // Not a WebSocket handshake `ws` would complete: it refuses it (400/405) before anything of Herald's runs.
      place.release();
      wss.handleUpgrade(request, socket, head, (upgraded) => upgraded.terminate());
      return;
    }
    const name = params.get('name') ?? undefined;
    if (name !== undefined && name.length > MAX_NAME_LENGTH) {
      place.release();
      return refuse(socket, 'bad_request', undefined, `name: at most ${MAX_NAME_LENGTH} characters`);
    }
    const transport = new WebSocketTransport(undefined, socket, node.config.limits.closeGraceMs);
    const client = node.createClient(transport);
    const batch = queryFlag(params.get('batch'));
    fromRequest(client, request, admission, scope, batch);
    // Until the upgrade completes, a socket that closes takes its place and its client with it.
    const lost = (): void => {
      place.release();
      transport.markClosed();
      client.close(1006, 'connection lost');
    };
    socket.once('close', lost);
    const header = request.headers['last-event-id'];
    // As the SSE route: the header first, then the query.
    const vector = (typeof header === 'string' ? header : undefined) ?? params.get('last_event_id') ?? undefined;
    const token = params.get('token') ?? bearer(request.headers.authorization);
    const opening = connectHttpClient(client, node, { token, channels: params.getAll('channel'), vector, batch, name });
    // At once when `connect` asked nothing (no token, no hook): no promise per open.
    if (!(opening instanceof Promise)) return upgradeConnected(request, socket, head, place, client, transport, lost, opening);
    opening.then(
      (opened) => upgradeConnected(request, socket, head, place, client, transport, lost, opened),
      (error: unknown) => {
        node.logger.error({ err: error }, 'WebSocket open failed before its upgrade');
        socket.destroy();
      },
    );
  }

  /** `openInUpgrade` once `connect` and the channels are checked: refused with an HTTP error, or upgraded. */
  function upgradeConnected(
    request: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    place: Releasable,
    client: Client,
    transport: WebSocketTransport,
    lost: () => void,
    opened: Opened | OpenFailure,
  ): void {
    if (socket.destroyed) return;
    let refusal: { readonly code: ApiErrorCode; readonly detail?: string | undefined } | undefined;
    // A failed connectHttpClient has closed the client.
    if ('error' in opened) refusal = { code: opened.error, detail: opened.detail };
    else if (client.isClosed || node.draining) refusal = { code: 'unavailable' };
    else if (!gate.admitUser(client)) refusal = { code: 'connection_limit' };
    if (refusal !== undefined || 'error' in opened) {
      socket.removeListener('close', lost);
      place.release();
      if (!client.isClosed) client.disconnect(refusal?.code === 'connection_limit' ? 'connection_limit' : 'shutdown');
      return refuse(socket, refusal?.code ?? 'internal', undefined, refusal?.detail);
    }
    if (request.headers['sec-websocket-protocol'] !== undefined) {
      // ws picks the subprotocol (the first offered) and writes the 101: it waits in the corked socket with what
      // follows it, until `opened()`.
      socket.cork();
      wss.handleUpgrade(request, socket, head, (upgraded) => {
        socket.removeListener('close', lost);
        socket.removeListener('error', destroyOnError);
        const ws = upgraded as HeraldWebSocket;
        sockets.add(ws);
        transport.attach(ws);
        started(ws, client, place, opened);
      });
      return;
    }
    // The peer has gone already (as ws checks): `lost` cleans up.
    if (!socket.readable || !socket.writable) return void socket.destroy();
    // Herald writes the 101 itself, with the opening frames (`upgradeAtOpen`); ws has checked nothing of it, so
    // handshakeValid above makes ws's checks, and the answer is ws's for a request without subprotocols.
    const ws = new (HeraldWebSocket as unknown as new (address: null, protocols: undefined, options: unknown) => HeraldWebSocket)(null, undefined, wss.options);
    const accept = hash('sha1', request.headers['sec-websocket-key'] + WEBSOCKET_GUID, 'base64');
    transport.upgradeAtOpen({ accept, ws, head, options: socketOptions, lost, onOpen: upgradedAtOpen });
    started(ws, client, place, opened);
  }

  /** `ws`'s options for the sockets Herald upgrades itself, as its `completeUpgrade` passes them. */
  const socketOptions: SetSocketOptions = {
    allowSynchronousEvents: wss.options.allowSynchronousEvents,
    maxBufferedChunks: (wss.options as { maxBufferedChunks?: number }).maxBufferedChunks,
    maxFragments: options.maxFragments,
    maxPayload: wss.options.maxPayload,
    skipUTF8Validation: wss.options.skipUTF8Validation,
  };

  /** A socket upgraded at its `opened()`: from here ws handles its errors and its close. */
  function upgradedAtOpen(ws: WebSocket, raw: Duplex, lost: () => void): void {
    raw.removeListener('close', lost);
    raw.removeListener('error', destroyOnError);
    sockets.add(ws as HeraldWebSocket);
  }

  /** After the handshake of a connection opened in the upgrade request: the `connected` push, then the subscriptions. */
  function started(ws: HeraldWebSocket, client: Client, place: Releasable, opened: { readonly connected: ConnectResult; readonly subscribe: readonly ConnectTimeSubscription[] }): void {
    ws.place = place;
    ws.client = client;
    ws.userAdmitted = true;
    const transport = client.transport as WebSocketTransport;
    client.writePush(new EncodedFrame(encodePush({ push: 'connected', ...opened.connected })));
    if (opened.connected.batch === true) client.enableBatching();
    // Written when every connect-time subscription has had its first attempt (at once when none waited), or at
    // the end of this turn of the event loop at the latest (an engine that answers slowly does not hold the rest back).
    let subscribing: Promise<void> | undefined;
    try {
      subscribing = subscribeHttpClient(client, opened.subscribe);
    } catch (error) {
      subscribing = Promise.reject(error as Error);
    }
    if (subscribing === undefined) {
      transport.opened();
      return;
    }
    if (toOpen.length === 0) setImmediate(openAll);
    toOpen.push(transport);
    subscribing.then(
      () => transport.opened(),
      (error: unknown) => {
        node.logger.error({ err: error }, 'WebSocket open failed after its upgrade');
        client.disconnect('internal');
      },
    );
  }

  /** Openings still held (see `openInUpgrade`): one callback per turn writes them all. */
  let toOpen: WebSocketTransport[] = [];
  function openAll(): void {
    const list = toOpen;
    toOpen = [];
    for (const transport of list) transport.opened();
  }
  return {
    async settle(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (sockets.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      return sockets.size === 0;
    },
    terminateAll() {
      // Openings of this turn first (their sockets join `sockets` at their 101).
      openAll();
      for (const ws of sockets) ws.terminate();
    },
  };
}

const statusText: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** Answers the upgrade request with a registered API error instead of a 101, and closes. */
function refuse(socket: Duplex, code: ApiErrorCode, retryAfterSeconds?: number, detail?: string): void {
  const entry = apiErrors[code];
  const body = JSON.stringify({ error: detail === undefined ? { code, message: entry.message } : { code, message: entry.message, detail } });
  const retryAfter = retryAfterSeconds === undefined ? '' : `Retry-After: ${retryAfterSeconds}\r\n`;
  socket.end(
    `HTTP/1.1 ${entry.status} ${statusText[entry.status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n${retryAfter}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
