/**
 * Webhook delivery: takes events, writes them to the outbox (one entry per
 * matching endpoint) and POSTs them in signed batches.
 *
 * Guarantees:
 * - An event is in the outbox before any attempt to send it; it leaves the
 *   outbox only when its endpoint answered 2xx (delivered) or it became a
 *   dead letter. Delivery is at least once: a batch whose answer was lost is
 *   sent again, with the same event ids.
 * - Per endpoint one batch is in flight at a time and batches go in outbox
 *   order (with an outbox shared by several nodes, the Redis one, across
 *   the nodes: the endpoint's lease says which node sends); while the oldest entries wait for a retry, newer ones wait behind
 *   them: events of a channel arrive in the order they happened.
 * - Retried (exponential backoff with jitter, `Retry-After` honoured when
 *   longer) on timeouts, connection errors, 408, 429 and 5xx, for
 *   `retryForMs` after the event; then, and at once on any other answer
 *   (a redirect is never followed), kept as dead letters.
 * - Bounded: at most `batchMaxEvents` entries per endpoint in memory, one
 *   request per endpoint, response bodies never read; at most `maxPending`
 *   entries pending, beyond which new events are dropped and counted. A
 *   slow or dead receiver costs nothing on the message path.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from '../core/logger.ts';
import { namespaceOf, type WebhookEvent, type WebhookEventName } from './events.ts';
import type { NewEntry, OutboxEntry, WebhookOutbox } from './outbox.ts';
import { BATCH_ID_HEADER, KEY_ID_HEADER, SIGNATURE_HEADER, signatureHeader, type SigningKey } from './signing.ts';

export interface WebhookEndpoint {
  readonly name: string;
  readonly url: string;
  readonly events: ReadonlySet<WebhookEventName>;
  /** Channel events only of these namespaces; undefined: all. */
  readonly namespaces?: ReadonlySet<string> | undefined;
  /** Herald's signing keys, newest first; one or two (none with a `format` of its own). */
  readonly keys: readonly SigningKey[];
  /** Another wire format than Herald's (a Pusher app's webhooks: pusher/pusher-webhooks.ts); undefined: Herald's (docs/hooks.md). */
  readonly format?: WebhookFormat | undefined;
  /** Most entries of this endpoint pending (an app's URL: its share of the outbox); beyond it its new events are dropped. Undefined: only `maxPending`. */
  readonly maxPending?: number | undefined;
}

/**
 * A wire format other than Herald's. The outbox keeps every event as
 * Herald's JSON with the server-internal channel name, whatever the
 * endpoint; the format says which channels its endpoint takes and writes
 * the request of a batch when it is sent (so a retried batch is written
 * anew from the same stored events).
 */
export interface WebhookFormat {
  /** Whether the endpoint takes events of this server-internal channel (undefined: an event without a channel). */
  takes(channel: string | undefined): boolean;
  /** The body of a batch, from its events' stored JSON, in order; undefined when none is for the receiver (nothing is sent; the batch counts as delivered). */
  body(events: readonly string[], timeMs: number): string | undefined;
  /** The request's headers beside content-type and user-agent (its signature). */
  headers(body: string): Record<string, string>;
}

export type WebhookOutcome = 'delivered' | 'retried' | 'dead' | 'dropped';

export interface DispatcherOptions {
  readonly outbox: WebhookOutbox;
  readonly endpoints: readonly WebhookEndpoint[];
  readonly batchWindowMs: number;
  readonly batchMaxEvents: number;
  readonly timeoutMs: number;
  readonly retryForMs: number;
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  readonly maxPending: number;
  readonly pollIntervalMs: number;
  readonly userAgent: string;
  readonly logger: Logger;
  readonly now?: () => number;
  /** Counts per outcome (metrics). */
  readonly onOutcome?: (endpoint: string, outcome: WebhookOutcome, count: number) => void;
}

interface EndpointState {
  /** Replaced when the endpoint changes (replaceEndpoints); a batch in flight keeps the one it started with. */
  endpoint: WebhookEndpoint;
  timer: NodeJS.Timeout | undefined;
  inFlight: AbortController | undefined;
  /** Asked for while a flush ran: look again right after it. */
  again: boolean;
}

/** Seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(value: string | null, now: number): number | undefined {
  if (value === null || value === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export class WebhookDispatcher {
  readonly #options: DispatcherOptions;
  readonly #outbox: WebhookOutbox;
  readonly #now: () => number;
  readonly #states = new Map<string, EndpointState>();
  readonly #poll: NodeJS.Timeout;
  #pending: number;
  /** Pending entries per endpoint, as this process last counted them (refreshed from the outbox at each poll). */
  #pendingBy = new Map<string, number>();
  #closed = false;

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#outbox = options.outbox;
    this.#now = options.now ?? Date.now;
    for (const endpoint of options.endpoints) this.#states.set(endpoint.name, { endpoint, timer: undefined, inFlight: undefined, again: false });
    this.#pending = 0;
    void this.#countPending();
    const configured = new Set(this.#states.keys());
    const outbox = options.outbox;
    void (async () => {
      const orphans = (await outbox.endpoints()).filter((name) => !configured.has(name));
      if (orphans.length > 0) options.logger.warn({ endpoints: orphans }, 'webhook outbox holds events for endpoints the config no longer names; they wait until the endpoint returns');
    })().catch((error: unknown) => options.logger.warn({ err: error }, 'webhook outbox not readable'));
    this.#poll = setInterval(() => {
      void this.#countPending();
      for (const name of this.#states.keys()) this.#schedule(name, 0);
    }, options.pollIntervalMs);
    this.#poll.unref();
    for (const name of this.#states.keys()) this.#schedule(name, 0);
  }

  async #countPending(): Promise<void> {
    try {
      this.#pending = (await this.#outbox.counts()).pending;
      this.#pendingBy = new Map(Object.entries(await this.#outbox.pendingByEndpoint()));
    } catch {
      // Not readable now: the last count stays until the next poll.
    }
  }

  #addPending(name: string, count: number): void {
    this.#pending += count;
    this.#pendingBy.set(name, Math.max(0, (this.#pendingBy.get(name) ?? 0) + count));
  }

  /**
   * Replaces the endpoints whose names start with `group` (an app's, when
   * the app changed): a kept name takes its new definition from its next
   * batch on (the one in flight finishes as it started), new ones start,
   * gone ones stop (their pending entries stay in the outbox, as for an
   * endpoint a newer config no longer names).
   */
  replaceEndpoints(group: string, endpoints: readonly WebhookEndpoint[]): void {
    const next = new Map(endpoints.filter((endpoint) => endpoint.name.startsWith(group)).map((endpoint) => [endpoint.name, endpoint]));
    for (const [name, state] of this.#states) {
      if (!name.startsWith(group) || next.has(name)) continue;
      clearTimeout(state.timer);
      state.inFlight?.abort();
      this.#states.delete(name);
    }
    for (const [name, endpoint] of next) {
      const state = this.#states.get(name);
      if (state !== undefined) {
        state.endpoint = endpoint;
        continue;
      }
      this.#states.set(name, { endpoint, timer: undefined, inFlight: undefined, again: false });
      this.#schedule(name, 0);
    }
  }

  /** Whether any endpoint takes events of this name (callers skip building events nobody wants). */
  wants(name: WebhookEventName): boolean {
    for (const state of this.#states.values()) if (state.endpoint.events.has(name)) return true;
    return false;
  }

  /** Entries pending and dead, for metrics. */
  counts(): { pending: number; dead: number } | Promise<{ pending: number; dead: number }> {
    return this.#outbox.counts();
  }

  /** Entries were added to the outbox for `endpoint` by someone else (the Redis transitions): its batch goes after the window. */
  appended(endpoint: string, count: number): void {
    this.#addPending(endpoint, count);
    this.#schedule(endpoint, this.#options.batchWindowMs);
  }

  /** Events refused because the outbox was full (the Redis transitions count them in their script). */
  dropped(endpoint: string, count: number): void {
    this.#options.onOutcome?.(endpoint, 'dropped', count);
  }

  /** Endpoints taking events of this name and (for channel events) this channel's namespace; `name|max` for one with a cap of its own (maxPending). */
  endpointsFor(name: WebhookEventName, channel: string | undefined): string[] {
    const names: string[] = [];
    for (const { endpoint } of this.#states.values()) {
      if (takes(endpoint, name, channel)) names.push(endpoint.maxPending === undefined ? endpoint.name : `${endpoint.name}|${endpoint.maxPending}`);
    }
    return names;
  }

  /** Writes the event to the outbox for every endpoint that takes it, then schedules their batches. Never throws. */
  emit(event: WebhookEvent): void {
    if (this.#closed) return;
    const entries: NewEntry[] = [];
    let json: string | undefined;
    for (const state of this.#states.values()) {
      const endpoint = state.endpoint;
      if (!takes(endpoint, event.name, event.channel)) continue;
      if (this.#pending + entries.length >= this.#options.maxPending || (endpoint.maxPending !== undefined && (this.#pendingBy.get(endpoint.name) ?? 0) >= endpoint.maxPending)) {
        this.#options.onOutcome?.(endpoint.name, 'dropped', 1);
        continue;
      }
      json ??= JSON.stringify(event);
      entries.push({ endpoint: endpoint.name, eventId: event.id, event: json });
    }
    if (entries.length === 0) return;
    const refused = (error: unknown): void => {
      for (const entry of entries) this.#addPending(entry.endpoint, -1);
      this.#options.logger.error({ err: error, event: event.name }, 'webhook event not written to the outbox (dropped)');
      for (const entry of entries) this.#options.onOutcome?.(entry.endpoint, 'dropped', 1);
    };
    for (const entry of entries) this.#addPending(entry.endpoint, 1);
    try {
      const stored = this.#outbox.append(entries, this.#now());
      if (stored instanceof Promise) {
        stored.then(() => {
          for (const entry of entries) this.#schedule(entry.endpoint, this.#options.batchWindowMs);
        }, refused);
        return;
      }
    } catch (error) {
      refused(error);
      return;
    }
    for (const entry of entries) this.#schedule(entry.endpoint, this.#options.batchWindowMs);
  }

  #schedule(name: string, delayMs: number): void {
    const state = this.#states.get(name);
    if (state === undefined || this.#closed || state.timer !== undefined) return;
    if (state.inFlight !== undefined) {
      state.again = true;
      return;
    }
    state.timer = setTimeout(() => {
      state.timer = undefined;
      void this.#flush(state);
    }, delayMs);
    state.timer.unref();
  }

  async #flush(state: EndpointState): Promise<void> {
    if (this.#closed || state.inFlight !== undefined) return;
    const name = state.endpoint.name;
    // Held from reading the head until the batch is settled: no second flush of this endpoint meanwhile.
    const controller = new AbortController();
    state.inFlight = controller;
    state.again = false;
    let again: number | undefined;
    try {
      again = await this.#send(state, controller);
    } catch (error) {
      this.#options.logger.error({ err: error, endpoint: name }, 'webhook outbox not readable or not updated (the batch will be sent again)');
    } finally {
      state.inFlight = undefined;
    }
    if (state.again) again = Math.min(again ?? this.#options.batchWindowMs, this.#options.batchWindowMs);
    if (again !== undefined) this.#schedule(name, again);
  }

  /** One batch of the endpoint, if it is due and this node holds the lease; answers when to look again (undefined: at the next poll). */
  async #send(state: EndpointState, controller: AbortController): Promise<number | undefined> {
    const name = state.endpoint.name;
    const head = await this.#outbox.head(name, this.#options.batchMaxEvents);
    // Another node holds the endpoint's lease: it sends; the poll looks again.
    if (head === undefined) return undefined;
    const now = this.#now();
    const first = head[0];
    if (first === undefined || first.nextAt > now) {
      await this.#outbox.release?.(name);
      return first === undefined ? undefined : Math.min(first.nextAt - now, this.#options.pollIntervalMs);
    }
    const batch = head.filter((entry) => entry.nextAt <= now);
    const result = await this.#post(state.endpoint, batch, controller);
    if (this.#closed) return undefined;
    await this.#settle(name, batch, result);
    await this.#outbox.release?.(name);
    return 0;
  }

  async #post(
    endpoint: WebhookEndpoint,
    batch: readonly OutboxEntry[],
    controller: AbortController,
  ): Promise<{ ok: true } | { ok: false; retry: boolean; reason: string; retryAfter?: number | undefined }> {
    const batchId = randomUUID();
    const format = endpoint.format;
    const body =
      format === undefined
        ? '{"id":' + JSON.stringify(batchId) + ',"time_ms":' + this.#now() + ',"events":[' + batch.map((entry) => entry.event).join(',') + ']}'
        : format.body(
            batch.map((entry) => entry.event),
            this.#now(),
          );
    if (body === undefined) return { ok: true };
    const timer = setTimeout(() => controller.abort(), this.#options.timeoutMs);
    try {
      const response = await fetch(endpoint.url, {
        method: 'POST',
        body,
        redirect: 'manual',
        signal: controller.signal,
        headers: {
          // Exactly this: the `pusher` SDK's verifier accepts no parameters after it.
          'content-type': 'application/json',
          'user-agent': this.#options.userAgent,
          [BATCH_ID_HEADER]: batchId,
          ...(format === undefined ? { [KEY_ID_HEADER]: endpoint.keys[0]!.id, [SIGNATURE_HEADER]: signatureHeader(body, endpoint.keys) } : format.headers(body)),
        },
      });
      // The body is never read: a receiver cannot make Herald hold its answer.
      await response.body?.cancel().catch(() => undefined);
      const status = response.status;
      if (status >= 200 && status < 300) return { ok: true };
      const retry = status === 408 || status === 429 || status >= 500;
      const reason = status >= 300 && status < 400 ? `redirect ${status} not followed` : `status ${status}`;
      return { ok: false, retry, reason, retryAfter: retryAfterMs(response.headers.get('retry-after'), this.#now()) };
    } catch (error) {
      const reason = controller.signal.aborted ? `no answer within ${this.#options.timeoutMs} ms` : `connection failed (${(error as { cause?: { code?: string } }).cause?.code ?? 'network error'})`;
      return { ok: false, retry: true, reason };
    } finally {
      clearTimeout(timer);
    }
  }

  async #settle(name: string, batch: readonly OutboxEntry[], result: { ok: true } | { ok: false; retry: boolean; reason: string; retryAfter?: number | undefined }): Promise<void> {
    const seqs = batch.map((entry) => entry.seq);
    const now = this.#now();
    if (result.ok) {
      await this.#outbox.delivered(seqs);
      this.#addPending(name, -seqs.length);
      this.#options.onOutcome?.(name, 'delivered', seqs.length);
      return;
    }
    const attempts = Math.max(...batch.map((entry) => entry.attempts)) + 1;
    if (!result.retry) {
      await this.#bury(name, seqs, result.reason, now);
      return;
    }
    const base = Math.min(this.#options.backoffMaxMs, this.#options.backoffMinMs * 2 ** Math.min(attempts - 1, 30));
    // Jitter: between half and the whole delay, so receivers coming back are not hit by every sender at once.
    let delay = base / 2 + Math.random() * (base / 2);
    if (result.retryAfter !== undefined) delay = Math.max(delay, result.retryAfter);
    const nextAt = now + Math.round(delay);
    const expired = batch.filter((entry) => nextAt > entry.createdAt + this.#options.retryForMs).map((entry) => entry.seq);
    const retried = batch.filter((entry) => nextAt <= entry.createdAt + this.#options.retryForMs).map((entry) => entry.seq);
    if (expired.length > 0) await this.#bury(name, expired, `${result.reason}; retried for ${this.#options.retryForMs} ms`, now);
    if (retried.length > 0) {
      await this.#outbox.retryLater(retried, nextAt, attempts);
      this.#options.onOutcome?.(name, 'retried', retried.length);
      this.#options.logger.warn({ endpoint: name, reason: result.reason, attempts, retryInMs: nextAt - now, events: retried.length }, 'webhook batch failed; retrying');
    }
  }

  async #bury(name: string, seqs: readonly number[], reason: string, now: number): Promise<void> {
    await this.#outbox.bury(seqs, reason, now);
    this.#addPending(name, -seqs.length);
    this.#options.onOutcome?.(name, 'dead', seqs.length);
    this.#options.logger.error({ endpoint: name, reason, events: seqs.length }, 'webhook events kept as dead letters (herald webhooks list-dead, replay)');
  }

  /** Stops sending; what is not delivered stays in the outbox (the sqlite outbox: for the next start). */
  close(): void {
    this.#closed = true;
    clearInterval(this.#poll);
    for (const state of this.#states.values()) {
      clearTimeout(state.timer);
      state.inFlight?.abort();
    }
  }
}

/**
 * Whether the endpoint takes an event of this name and (internal) channel.
 * Herald's endpoints take the channels of the native protocol's space only:
 * another app's (`~{id}~…`, apps/apps.ts) go to that app's own webhooks, and
 * their server-internal names never leave the server; `#…` channels are the
 * Pusher endpoint's own (server-to-user, watchlist), outside both grammars.
 */
function takes(endpoint: WebhookEndpoint, name: WebhookEventName, channel: string | undefined): boolean {
  if (!endpoint.events.has(name)) return false;
  if (endpoint.format !== undefined) return endpoint.format.takes(channel);
  if (channel === undefined) return true;
  const first = channel.charCodeAt(0);
  if (first === 126 /* ~ */ || first === 35 /* # */) return false;
  return endpoint.namespaces === undefined || endpoint.namespaces.has(namespaceOf(channel));
}
