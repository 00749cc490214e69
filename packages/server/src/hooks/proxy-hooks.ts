/**
 * Proxy hooks: each event is a signed JSON POST to the application's
 * backend (docs/hooks.md), through undici with a keep-alive agent. Targets
 * come only from config; redirects are never followed; every call has a
 * timeout, a bounded answer size and depth, a schema, and a bound on calls
 * in flight per process. Implements `Hooks` (hooks.ts).
 */
import { createHmac } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, request } from 'undici';
import { parseCookie } from 'cookie';
import { readJson } from '@herald/protocol/json';
import type { HookTargetConfig, HooksConfig } from '../config/schema.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import { checkAnswer, connectDecision, publishDecision, reportHookCall, rpcDecision, subscribeDecision, type HookAnswer } from './hook-answers.ts';
import type {
  ConnectDecision,
  ConnectHookRequest,
  ForwardedRequest,
  HookConnection,
  HookEvent,
  Hooks,
  NamespacedHookEvent,
  PublishDecision,
  PublishHookRequest,
  RefreshDecision,
  RpcDecision,
  RpcHookRequest,
  SubscribeDecision,
  SubscribeHookRequest,
} from './hooks.ts';

/** Headers of every call (docs/hooks.md, "Signing"). */
export const SIGNATURE_HEADER = 'x-herald-signature';
export const TIMESTAMP_HEADER = 'x-herald-timestamp';
export const EVENT_HEADER = 'x-herald-event';

export interface ProxyHooksOptions {
  readonly config: HooksConfig;
  /** The signing secret of each target (config object → secret), read by the composition root. */
  readonly secrets: ReadonlyMap<HookTargetConfig, string>;
  readonly maxJsonDepth: number;
  /** Id of the node the calls are made for (diagnostics events). */
  readonly node: string;
  readonly now?: () => number;
}

/** One configured endpoint, with its budget. */
class Target {
  readonly config: HookTargetConfig;
  readonly secret: string;
  readonly headers: readonly string[];
  readonly cookies: readonly string[];
  inFlight = 0;
  constructor(config: HookTargetConfig, secret: string) {
    this.config = config;
    this.secret = secret;
    this.headers = config.forwardHeaders.map((name) => name.toLowerCase()).filter((name) => name !== 'cookie');
    this.cookies = config.forwardCookies;
  }
}

type Failure = { readonly failed: string };

/** What a call came to: the checked answer, or why it failed. */
type CallOutcome = HookAnswer | Failure;

/** Signs `body` at `timestamp` (unix seconds): hex HMAC-SHA256 of `${timestamp}.${body}`. */
export function signHookBody(secret: string, timestamp: number, body: string): string {
  return 'v1=' + createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/** Drops an answer body nobody reads (undici reports the abort as an error event: swallowed here). */
function discard(body: { on(event: 'error', listener: () => void): unknown; destroy(): unknown }): void {
  body.on('error', () => undefined);
  body.destroy();
}

export class ProxyHooks implements Hooks {
  readonly connectWithoutToken: boolean;
  readonly #global = new Map<HookEvent, Target>();
  /** Per namespace: a target, or null where the namespace turns the event off. */
  readonly #namespaces = new Map<string, Map<NamespacedHookEvent, Target | null>>();
  readonly #forwardHeaders: readonly string[];
  readonly #forwardCookies: readonly string[];
  readonly #agent: Agent;
  readonly #maxAnswerBytes: number;
  readonly #maxJsonDepth: number;
  readonly #node: string;
  readonly #now: () => number;
  #closed = false;

  constructor(options: ProxyHooksOptions) {
    const { config, secrets } = options;
    const target = (c: HookTargetConfig): Target => {
      const secret = secrets.get(c);
      if (secret === undefined) throw new Error(`hooks: no secret for ${c.url}`);
      return new Target(c, secret);
    };
    for (const event of ['connect', 'refresh', 'subscribe', 'publish', 'rpc'] as const) {
      const c = config[event];
      if (c !== undefined) this.#global.set(event, target(c));
    }
    for (const ns of config.namespaces) {
      const events = new Map<NamespacedHookEvent, Target | null>();
      for (const event of ['subscribe', 'publish', 'rpc'] as const) {
        const c = ns[event];
        if (c !== undefined) events.set(event, c === false ? null : target(c));
      }
      this.#namespaces.set(ns.name, events);
    }
    this.connectWithoutToken = config.connect?.withoutToken === true;
    const all = [...this.#global.values(), ...[...this.#namespaces.values()].flatMap((m) => [...m.values()].filter((t) => t !== null))];
    this.#forwardHeaders = [...new Set(all.flatMap((t) => t.headers))];
    this.#forwardCookies = [...new Set(all.flatMap((t) => t.cookies))];
    this.#maxAnswerBytes = config.maxAnswerBytes;
    this.#maxJsonDepth = options.maxJsonDepth;
    this.#node = options.node;
    this.#now = options.now ?? Date.now;
    this.#agent = new Agent({ keepAliveTimeout: 30_000, connections: 128, headersTimeout: 0, bodyTimeout: 0 });
  }

  #target(event: HookEvent, namespace: string): Target | undefined {
    if (namespace !== '' && event !== 'connect' && event !== 'refresh') {
      const override = this.#namespaces.get(namespace)?.get(event);
      if (override !== undefined) return override ?? undefined;
    }
    return this.#global.get(event);
  }

  has(event: HookEvent, namespace: string): boolean {
    return this.#target(event, namespace) !== undefined;
  }

  capture(headers: IncomingHttpHeaders): ForwardedRequest | undefined {
    if (this.#forwardHeaders.length === 0 && this.#forwardCookies.length === 0) return undefined;
    const forwarded: Record<string, string> = {};
    for (const name of this.#forwardHeaders) {
      const value = headers[name];
      if (value !== undefined) forwarded[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    const cookies: Record<string, string> = {};
    if (this.#forwardCookies.length > 0 && typeof headers.cookie === 'string') {
      const parsed = parseCookie(headers.cookie);
      for (const name of this.#forwardCookies) {
        const value = Object.hasOwn(parsed, name) ? parsed[name] : undefined;
        if (value !== undefined) cookies[name] = value;
      }
    }
    return { headers: forwarded, cookies };
  }

  async connect(request: ConnectHookRequest): Promise<ConnectDecision> {
    const target = this.#target('connect', '');
    if (target === undefined) return { outcome: 'allow' };
    const body = { ...this.#connection(target, request), ...(request.name === undefined ? {} : { name: request.name }), token_present: request.tokenPresent };
    const answer = await this.#call('connect', target, body);
    return 'failed' in answer ? this.#unavailable(target) : connectDecision(answer);
  }

  async refresh(request: HookConnection): Promise<RefreshDecision> {
    const target = this.#target('refresh', '');
    if (target === undefined) return { outcome: 'unavailable', failOpen: false };
    const answer = await this.#call('refresh', target, this.#connection(target, request));
    if ('failed' in answer) return this.#unavailable(target);
    if ('error' in answer || answer.result.expired === true) return { outcome: 'deny', code: 3003, message: 'token expired' };
    const r = answer.result;
    return { outcome: 'allow', expiresAt: r.expire_at === undefined ? undefined : r.expire_at * 1000, ...('info' in r ? { info: r.info } : {}) };
  }

  async subscribe(request: SubscribeHookRequest): Promise<SubscribeDecision> {
    const target = this.#target('subscribe', request.namespace);
    if (target === undefined) return { outcome: 'allow' };
    const answer = await this.#call('subscribe', target, { ...this.#connection(target, request), channel: request.channel });
    return 'failed' in answer ? this.#unavailable(target) : subscribeDecision(answer);
  }

  async publish(request: PublishHookRequest): Promise<PublishDecision> {
    const target = this.#target('publish', request.namespace);
    if (target === undefined) return { outcome: 'allow' };
    const answer = await this.#call('publish', target, { ...this.#connection(target, request), channel: request.channel, data: request.data });
    return 'failed' in answer ? this.#unavailable(target) : publishDecision(answer);
  }

  async rpc(request: RpcHookRequest, namespace: string): Promise<RpcDecision> {
    const target = this.#target('rpc', namespace);
    if (target === undefined) return { outcome: 'unavailable', failOpen: false };
    const answer = await this.#call('rpc', target, { ...this.#connection(target, request), method: request.method, data: request.data });
    // An rpc has no answer to go on with: it never fails open.
    return 'failed' in answer ? { outcome: 'unavailable', failOpen: false } : rpcDecision(answer);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#agent.close().catch(() => undefined);
  }

  #unavailable(target: Target): { readonly outcome: 'unavailable'; readonly failOpen: boolean } {
    return { outcome: 'unavailable', failOpen: target.config.failure === 'open' };
  }

  /** The fields every request carries, with only this hook's allowlisted headers and cookies. */
  #connection(target: Target, c: HookConnection): Record<string, unknown> {
    const headers: Record<string, string> = {};
    const cookies: Record<string, string> = {};
    const f = c.forwarded;
    if (f !== undefined) {
      for (const name of target.headers) if (Object.hasOwn(f.headers, name)) headers[name] = f.headers[name]!;
      for (const name of target.cookies) if (Object.hasOwn(f.cookies, name)) cookies[name] = f.cookies[name]!;
    }
    return {
      client: c.client,
      user: c.user,
      transport: c.transport,
      address: c.address,
      ...(c.connInfo === undefined ? {} : { conn_info: c.connInfo }),
      ...(c.app === undefined ? {} : { app: c.app }),
      headers,
      cookies,
    };
  }

  /** One signed POST; resolves to the checked answer or to why it failed. Never rejects. */
  async #call(event: HookEvent, target: Target, fields: Record<string, unknown>): Promise<CallOutcome> {
    const started = performance.now();
    const outcome = await this.#post(event, target, fields);
    reportHookCall(diagnostics.hookCall, this.#node, event, outcome, started);
    return outcome;
  }

  async #post(event: HookEvent, target: Target, fields: Record<string, unknown>): Promise<CallOutcome> {
    if (this.#closed) return { failed: 'closed' };
    if (target.inFlight >= target.config.maxInFlight) return { failed: 'in_flight_limit' };
    let body: string;
    try {
      body = JSON.stringify({ event, ...fields });
    } catch {
      return { failed: 'request_not_serializable' };
    }
    const timestamp = Math.floor(this.#now() / 1000);
    target.inFlight++;
    const signal = AbortSignal.timeout(target.config.timeoutMs);
    try {
      const response = await request(target.config.url, {
        method: 'POST',
        dispatcher: this.#agent,
        signal,
        body,
        headers: {
          'content-type': 'application/json',
          [EVENT_HEADER]: event,
          [TIMESTAMP_HEADER]: String(timestamp),
          [SIGNATURE_HEADER]: signHookBody(target.secret, timestamp, body),
        },
      });
      if (response.statusCode < 200 || response.statusCode > 299) {
        discard(response.body);
        return { failed: `status_${response.statusCode}` };
      }
      const declared = Number(response.headers['content-length']);
      if (Number.isFinite(declared) && declared > this.#maxAnswerBytes) {
        discard(response.body);
        return { failed: 'answer_too_large' };
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > this.#maxAnswerBytes) {
          discard(response.body);
          return { failed: 'answer_too_large' };
        }
        chunks.push(chunk);
      }
      const text = Buffer.concat(chunks).toString('utf8');
      const read = readJson(text, this.#maxJsonDepth);
      if (!read.ok) return { failed: `answer_${read.error}` };
      const answer = checkAnswer(event, read.value);
      return answer ?? { failed: 'answer_schema' };
    } catch (error) {
      return { failed: signal.aborted ? 'timeout' : ((error as { code?: string }).code ?? 'request_error').toLowerCase() };
    } finally {
      target.inFlight--;
    }
  }
}
