/**
 * WebSocket: one frame per text message both ways, or, from the server, a
 * batch of frames joined by "\n" once the connect result says `batch: true`
 * (announced with `batch=1` in the URL). The close code is the disconnect
 * code. Browsers answer the server's ping frames themselves.
 */
import { sdkCodes } from './codes.ts';
import { parseFrames, withBatch, type ClientTransport, type OpenRequest, type OutboundCommand, type TransportClose, type TransportHandlers } from './transport.ts';

export class WebSocketTransport implements ClientTransport {
  readonly name = 'websocket';
  readonly pushesConnected = false;
  readonly answersPing = false;
  readonly #url: string;
  readonly #Ctor: typeof WebSocket;
  readonly #handlers: TransportHandlers;
  #socket: WebSocket | undefined;
  #done = false;
  /** The id of the `connect` command sent, until its reply. */
  #connectId: number | undefined;
  /** The server sends batches (its connect result said so). */
  #batched = false;

  constructor(url: string, Ctor: typeof WebSocket, handlers: TransportHandlers) {
    this.#url = url;
    this.#Ctor = Ctor;
    this.#handlers = handlers;
  }

  open(_request: OpenRequest): void {
    let socket: WebSocket;
    try {
      socket = new this.#Ctor(withBatch(this.#url));
    } catch {
      queueMicrotask(() => this.#finish({ code: sdkCodes.transport_closed.code, reason: 'websocket could not be created' }));
      return;
    }
    this.#socket = socket;
    socket.onopen = () => {
      if (!this.#done) this.#handlers.onOpen();
    };
    socket.onmessage = (event: MessageEvent) => {
      if (this.#done || typeof event.data !== 'string') return;
      for (const frame of parseFrames(event.data, this.#batched)) {
        if (this.#done) return;
        if (this.#connectId !== undefined && 'id' in frame && frame.id === this.#connectId) {
          this.#connectId = undefined;
          this.#batched = 'result' in frame && (frame.result as { batch?: unknown } | null)?.batch === true;
        }
        this.#handlers.onFrame(frame);
      }
    };
    socket.onclose = (event: CloseEvent) => {
      const code = event.code === 1005 ? 1000 : event.code;
      this.#finish({ code, reason: event.reason || (code === 1006 ? 'connection lost' : 'websocket closed') });
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
