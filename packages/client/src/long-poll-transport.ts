/**
 * HTTP long polling: `POST /connection/poll/open` (token, channels, cursor),
 * then one `POST /connection/poll` at a time acknowledging the last `seq`
 * received, so an answer lost on the way is sent again by the next poll.
 * Commands go by POST (http-commands.ts). Closing ends the session at once
 * with `POST /connection/close` rather than leaving it to time out.
 */
import type { ServerFrame } from '@herald/protocol';
import { openFailure, sdkCodes } from './codes.ts';
import { HttpCommandSender } from './http-commands.ts';
import {
  isFrame,
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

/** A poll unanswered this long is taken as a dead connection (the server answers within its poll timeout, 25 s by default). */
const POLL_DEADLINE_MS = 60000;

interface PollAnswer {
  readonly session?: unknown;
  readonly seq?: unknown;
  readonly messages?: unknown;
}

export class LongPollTransport implements ClientTransport {
  readonly name = 'long-poll';
  readonly pushesConnected = true;
  readonly pushesSubscribed = true;
  readonly answersPing = false;
  readonly #endpoints: Endpoints;
  readonly #fetch: FetchFunction;
  readonly #handlers: TransportHandlers;
  readonly #abort = new AbortController();
  readonly #commands: HttpCommandSender;
  #session: string | undefined;
  #seq = 0;
  #done = false;

  constructor(endpoints: Endpoints, fetch: FetchFunction, handlers: TransportHandlers) {
    this.#endpoints = endpoints;
    this.#fetch = fetch;
    this.#handlers = handlers;
    this.#commands = new HttpCommandSender(
      endpoints.command,
      fetch,
      (frame) => {
        if (!this.#done) this.#handlers.onFrame(frame);
      },
      () => this.#finish({ code: sdkCodes.transport_closed.code, reason: 'session unknown' }),
    );
  }

  open(request: OpenRequest): void {
    const body: { token?: string; channels?: readonly string[]; cursor?: string } = {};
    if (request.token !== undefined && request.token !== '') body.token = request.token;
    if (request.channels.length > 0) body.channels = request.channels;
    if (request.vector !== '') body.cursor = request.vector;
    void this.#run(body, request.channels.length > 0 || request.vector !== '');
  }

  async #run(openBody: object, requestedChannels: boolean): Promise<void> {
    // Announced in the query (older servers refuse unknown body keys); the answers' arrays do not change.
    const opened = await this.#post(withBatch(this.#endpoints.pollOpen), openBody, undefined);
    if (opened === undefined) return;
    if (!opened.ok) {
      this.#finish(openFailure(opened.status, await readApiError(opened), requestedChannels));
      return;
    }
    const first = await this.#json(opened);
    if (first === undefined) return;
    if (typeof first.session !== 'string') {
      this.#finish({ code: sdkCodes.transport_closed.code, reason: 'bad poll answer' });
      return;
    }
    this.#session = first.session;
    if (!this.#take(first)) return;
    this.#commands.setSession(first.session);
    while (!this.#done) {
      const response = await this.#post(this.#endpoints.poll, { seq: this.#seq }, this.#session);
      if (response === undefined) return;
      if (!response.ok) {
        const apiError = await readApiError(response);
        this.#finish({ code: sdkCodes.transport_closed.code, reason: apiError === 'session_unknown' ? 'session unknown' : `poll answered HTTP ${response.status}` });
        return;
      }
      const answer = await this.#json(response);
      if (answer === undefined || !this.#take(answer)) return;
    }
  }

  /** Hands over an answer's messages; false when the connection ended. */
  #take(answer: PollAnswer): boolean {
    if (typeof answer.seq === 'number') this.#seq = answer.seq;
    const messages = Array.isArray(answer.messages) ? answer.messages : [];
    for (const message of messages) {
      if (this.#done) return false;
      if (!isFrame(message)) continue;
      const frame: ServerFrame = message;
      if ('push' in frame && frame.push === 'disconnect') {
        this.#session = undefined;
        this.#finish({ code: frame.code, reason: frame.reason });
        return false;
      }
      this.#handlers.onFrame(frame);
    }
    return !this.#done;
  }

  async #post(url: string, body: object, session: string | undefined): Promise<Response | undefined> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (session !== undefined) headers['herald-session'] = session;
    const timer = setTimeout(() => this.#finish({ code: sdkCodes.transport_closed.code, reason: 'poll timed out' }), POLL_DEADLINE_MS);
    try {
      const response = await this.#fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal: this.#abort.signal, cache: 'no-store' });
      return this.#done ? undefined : response;
    } catch {
      this.#finish({ code: sdkCodes.transport_closed.code, reason: 'poll request failed' });
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  async #json(response: Response): Promise<PollAnswer | undefined> {
    try {
      const value: unknown = await response.json();
      if (this.#done) return undefined;
      if (typeof value === 'object' && value !== null) return value as PollAnswer;
    } catch {
      // fall through
    }
    this.#finish({ code: sdkCodes.transport_closed.code, reason: 'bad poll answer' });
    return undefined;
  }

  send(command: OutboundCommand): void {
    this.#commands.send(command);
  }

  close(): void {
    if (this.#done) return;
    this.#done = true;
    this.#commands.stop();
    this.#abort.abort();
    const session = this.#session;
    if (session !== undefined) {
      this.#fetch(this.#endpoints.close, { method: 'POST', headers: { 'herald-session': session }, keepalive: true }).catch(() => undefined);
    }
  }

  #finish(close: TransportClose): void {
    if (this.#done) return;
    this.close();
    this.#handlers.onClose(close);
  }
}
