/**
 * Server-Sent Events read with `fetch` (a streaming response body), so the
 * SDK sees HTTP statuses (a 401 is not a network error), sends the token in
 * an `Authorization` header rather than the URL, and runs in Node without
 * an EventSource. Recovery does not use EventSource's own reconnect: every
 * reconnect opens a fresh stream with the SDK's position vector in the
 * `last_event_id` query parameter, under the client's backoff.
 * Commands go by POST (http-commands.ts); `ping` pushes are answered with a
 * `pong` command, as an interactive SSE connection must.
 */
import type { ServerFrame } from '@herald/protocol';
import { openFailure, sdkCodes } from './codes.ts';
import { HttpCommandSender } from './http-commands.ts';
import { SseParser } from './sse-parser.ts';
import {
  parseFrames,
  readApiError,
  withBatch,
  type ClientTransport,
  type Endpoints,
  type FetchFunction,
  type OpenRequest,
  type OutboundCommand,
  type TransportClose,
  type TransportHandlers,
} from './transport.ts';

export class SseTransport implements ClientTransport {
  readonly name = 'sse';
  readonly pushesConnected = true;
  readonly pushesSubscribed = true;
  readonly answersPing = true;
  readonly #endpoints: Endpoints;
  readonly #fetch: FetchFunction;
  readonly #handlers: TransportHandlers;
  readonly #abort = new AbortController();
  readonly #commands: HttpCommandSender;
  #done = false;
  /** The server sends batches (its `connected` push said so). */
  #batched = false;

  constructor(endpoints: Endpoints, fetch: FetchFunction, handlers: TransportHandlers) {
    this.#endpoints = endpoints;
    this.#fetch = fetch;
    this.#handlers = handlers;
    this.#commands = new HttpCommandSender(
      endpoints.command,
      fetch,
      (frame) => this.#deliver(frame),
      () => this.#finish({ code: sdkCodes.transport_closed.code, reason: 'session unknown' }),
    );
  }

  open(request: OpenRequest): void {
    const url = new URL(withBatch(this.#endpoints.sse));
    for (const channel of request.channels) url.searchParams.append('channel', channel);
    if (request.vector !== '') url.searchParams.set('last_event_id', request.vector);
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (request.token !== undefined && request.token !== '') headers['authorization'] = 'Bearer ' + request.token;
    const requestedChannels = request.channels.length > 0 || request.vector !== '';
    void this.#run(url.toString(), headers, requestedChannels);
  }

  async #run(url: string, headers: Record<string, string>, requestedChannels: boolean): Promise<void> {
    let response: Response;
    try {
      response = await this.#fetch(url, { headers, signal: this.#abort.signal, cache: 'no-store' });
    } catch {
      this.#finish({ code: sdkCodes.transport_closed.code, reason: 'sse request failed' });
      return;
    }
    if (this.#done) return;
    if (!response.ok) {
      const failure = openFailure(response.status, await readApiError(response), requestedChannels);
      this.#finish(failure);
      return;
    }
    const type = response.headers.get('content-type') ?? '';
    if (!type.startsWith('text/event-stream') || response.body === null) {
      this.#finish({ code: sdkCodes.transport_closed.code, reason: 'not an event stream' });
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (this.#done) return;
        if (done) break;
        for (const event of parser.push(value)) {
          for (const frame of parseFrames(event.data, this.#batched)) {
            this.#onStreamFrame(frame);
            if (this.#done) return;
          }
        }
      }
    } catch {
      // network error or abort
    } finally {
      reader.cancel().catch(() => undefined);
    }
    this.#finish({ code: sdkCodes.transport_closed.code, reason: 'event stream ended' });
  }

  #onStreamFrame(frame: ServerFrame): void {
    if ('push' in frame) {
      if (frame.push === 'disconnect') {
        this.#finish({ code: frame.code, reason: frame.reason });
        return;
      }
      if (frame.push === 'connected') {
        if (typeof frame.session === 'string') this.#commands.setSession(frame.session);
        this.#batched = frame.batch === true;
      }
    }
    this.#deliver(frame);
  }

  #deliver(frame: ServerFrame): void {
    if (!this.#done) this.#handlers.onFrame(frame);
  }

  send(command: OutboundCommand): void {
    this.#commands.send(command);
  }

  close(): void {
    if (this.#done) return;
    this.#done = true;
    this.#commands.stop();
    this.#abort.abort();
  }

  #finish(close: TransportClose): void {
    if (this.#done) return;
    this.close();
    this.#handlers.onClose(close);
  }
}
