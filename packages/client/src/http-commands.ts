/**
 * Commands over HTTP for SSE and long polling: `POST /connection/command`
 * with the session secret in `Herald-Session`. Commands given in the same
 * tick go in one POST (an array of at most 100); POSTs are sent one at a
 * time, so the server runs commands in the order they were given. Replies
 * go to the client as frames; a POST that fails answers each of its
 * commands with an error reply.
 */
import { replyErrors } from '@herald/protocol';
import type { ServerFrame } from '@herald/protocol';
import { sdkCodes } from './codes.ts';
import { isFrame, readApiError, type FetchFunction, type OutboundCommand } from './transport.ts';

const MAX_BATCH = 100;

export class HttpCommandSender {
  readonly #url: string;
  readonly #fetch: FetchFunction;
  readonly #onFrame: (frame: ServerFrame) => void;
  readonly #onSessionLost: () => void;
  readonly #queue: OutboundCommand[] = [];
  #session: string | undefined;
  #scheduled = false;
  #sending = false;
  #stopped = false;

  constructor(url: string, fetch: FetchFunction, onFrame: (frame: ServerFrame) => void, onSessionLost: () => void) {
    this.#url = url;
    this.#fetch = fetch;
    this.#onFrame = onFrame;
    this.#onSessionLost = onSessionLost;
  }

  setSession(session: string): void {
    this.#session = session;
    this.#schedule();
  }

  send(command: OutboundCommand): void {
    if (this.#stopped) return;
    this.#queue.push(command);
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    this.#queue.length = 0;
  }

  #schedule(): void {
    if (this.#scheduled || this.#sending || this.#session === undefined || this.#queue.length === 0) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    if (this.#stopped || this.#sending || this.#session === undefined) return;
    const batch = this.#queue.splice(0, MAX_BATCH);
    if (batch.length === 0) return;
    this.#sending = true;
    try {
      const response = await this.#fetch(this.#url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'herald-session': this.#session },
        body: JSON.stringify(batch.length === 1 ? batch[0] : batch),
        cache: 'no-store',
      });
      if (this.#stopped) return;
      if (response.ok) {
        const replies: unknown = await response.json();
        if (this.#stopped) return;
        if (Array.isArray(replies)) for (const reply of replies) if (isFrame(reply)) this.#onFrame(reply);
        return;
      }
      const apiError = await readApiError(response);
      if (this.#stopped) return;
      if (response.status === 404 && apiError === 'session_unknown') {
        this.#fail(batch, sdkCodes.disconnected.code, sdkCodes.disconnected.reason);
        this.#onSessionLost();
        return;
      }
      if (response.status === 413) this.#fail(batch, replyErrors.message_too_large.code, replyErrors.message_too_large.message);
      else if (response.status === 429) this.#fail(batch, replyErrors.too_many_requests.code, replyErrors.too_many_requests.message);
      else this.#fail(batch, sdkCodes.transport_closed.code, `command POST answered HTTP ${response.status}`);
    } catch {
      if (!this.#stopped) this.#fail(batch, sdkCodes.transport_closed.code, 'command POST failed');
    } finally {
      this.#sending = false;
      if (!this.#stopped) this.#schedule();
    }
  }

  #fail(batch: readonly OutboundCommand[], code: number, message: string): void {
    for (const command of batch) {
      if (command.id !== undefined && !this.#stopped) this.#onFrame({ id: command.id, error: { code, message } });
    }
  }
}
