/**
 * WebSocket: one frame per text message both ways, or, from the server, a
 * batch of frames joined by "\n" once the connect result says `batch: true`
 * (announced with `batch=1` in the URL). The close code is the disconnect
 * code. Browsers answer the server's ping frames themselves.
 *
 * Opened in the upgrade request by default (`connect=1`, docs/protocol.md
 * "Connect in the upgrade request"): the token (a browser cannot set
 * headers on a WebSocket, so in the query), the name, the channels and
 * the position vector go in the URL, and the server answers with a
 * `connected` push, `subscribed` pushes and the recovered publications;
 * nothing is sent until the client's own commands. Opened by commands
 * (`inUrl` false): `connect` and the subscribes as commands after the open.
 */
import { sdkCodes } from './codes.ts';
import { parseFrames, withBatch, type ClientTransport, type OpenRequest, type OutboundCommand, type TransportClose, type TransportHandlers } from './transport.ts';

export class WebSocketTransport implements ClientTransport {
  readonly name = 'websocket';
  readonly pushesSubscribed = false;
  readonly answersPing = false;
  readonly #url: string;
  /** Opened in the upgrade request (see above). */
  readonly #inUrl: boolean;
  /** The socket has opened (a close before is a failed open). */
  #opened = false;
  readonly #Ctor: typeof WebSocket;
  readonly #handlers: TransportHandlers;
  #socket: WebSocket | undefined;
  #done = false;
  /** The id of the `connect` command sent, until its reply. */
  #connectId: number | undefined;
  /** The server sends batches (its connect result said so). */
  #batched = false;

  constructor(url: string, Ctor: typeof WebSocket, handlers: TransportHandlers, inUrl: boolean) {
    this.#url = url;
    this.#Ctor = Ctor;
    this.#handlers = handlers;
    this.#inUrl = inUrl;
  }

  get pushesConnected(): boolean {
    return this.#inUrl;
  }

  open(request: OpenRequest): void {
    let socket: WebSocket;
    try {
      socket = new this.#Ctor(this.#inUrl ? openUrl(withBatch(this.#url), request) : withBatch(this.#url));
    } catch {
      queueMicrotask(() => this.#finish({ code: sdkCodes.transport_closed.code, reason: 'websocket could not be created' }));
      return;
    }
    this.#socket = socket;
    socket.onopen = () => {
      this.#opened = true;
      if (!this.#done && !this.#inUrl) this.#handlers.onOpen();
    };
    socket.onmessage = (event: MessageEvent) => {
      if (this.#done || typeof event.data !== 'string') return;
      for (const frame of parseFrames(event.data, this.#batched)) {
        if (this.#done) return;
        if (this.#connectId !== undefined && 'id' in frame && frame.id === this.#connectId) {
          this.#connectId = undefined;
          this.#batched = 'result' in frame && (frame.result as { batch?: unknown } | null)?.batch === true;
        } else if (this.#inUrl && 'push' in frame && frame.push === 'connected') this.#batched = frame.batch === true;
        this.#handlers.onFrame(frame);
      }
    };
    socket.onclose = (event: CloseEvent) => {
      const code = event.code === 1005 ? 1000 : event.code;
      const reason = event.reason || (code === 1006 ? 'connection lost' : 'websocket closed');
      this.#finish(this.#inUrl && !this.#opened ? { code, reason: 'websocket open refused or failed', openInUrlFailed: true } : { code, reason });
    };
    socket.onerror = () => {
      // A close event follows.
    };
  }

  send(command: OutboundCommand): void {
    const socket = this.#socket;
    if (this.#done || socket === undefined || socket.readyState !== 1) return;
    if (command.method === 'connect') this.#connectId = command.id;
    socket.send(JSON.stringify(command));
  }

  close(): void {
    if (this.#done) return;
    this.#done = true;
    const socket = this.#socket;
    if (socket === undefined) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(1000);
    } catch {
      // already closing
    }
  }

  #finish(close: TransportClose): void {
    if (this.#done) return;
    this.close();
    this.#handlers.onClose(close);
  }
}

/**
 * `url` with what a WebSocket opened in its upgrade request carries:
 * `connect=1`, the token, the name, the channels and the position vector.
 */
export function openUrl(url: string, request: OpenRequest): string {
  const params = new URLSearchParams();
  params.set('connect', '1');
  if (request.token !== undefined && request.token !== '') params.set('token', request.token);
  if (request.name !== undefined) params.set('name', request.name);
  for (const channel of request.channels) params.append('channel', channel);
  if (request.vector !== '') params.set('last_event_id', request.vector);
  return url + (url.includes('?') ? '&' : '?') + params.toString();
}
