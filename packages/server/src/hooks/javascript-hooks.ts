/**
 * JavaScript hooks: the operator's file answers connect, subscribe, publish
 * and rpc (docs/hooks.md, "JavaScript hooks"), run by sandbox-pool.ts in
 * QuickJS processes. Implements `Hooks` (hooks.ts) with the proxy hooks'
 * decisions: the value a function returns is the answer a proxy backend
 * would send (`{result: …}` or `{error: …}`; `undefined` is `{result: {}}`),
 * checked by the same schemas (hook-answers.ts) after the size and depth
 * checks. Refresh is not a JavaScript hook.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { readJson } from '@herald/protocol/json';
import type { JavascriptHooksConfig } from '../config/schema.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import { checkAnswer, connectDecision, publishDecision, reportHookCall, rpcDecision, subscribeDecision, type HookAnswer } from './hook-answers.ts';
import type {
  ConnectDecision,
  ConnectHookRequest,
  ForwardedRequest,
  HookConnection,
  HookEvent,
  Hooks,
  PublishDecision,
  PublishHookRequest,
  RefreshDecision,
  RpcDecision,
  RpcHookRequest,
  SubscribeDecision,
  SubscribeHookRequest,
} from './hooks.ts';
import type { SandboxPool } from './sandbox-pool.ts';

/** The function of the file that answers each event. */
export const HOOK_FUNCTIONS = { connect: 'onConnect', subscribe: 'onSubscribe', publish: 'onPublish', rpc: 'onRpc' } as const;
type ScriptedEvent = keyof typeof HOOK_FUNCTIONS;

export interface JavascriptHooksOptions {
  readonly config: JavascriptHooksConfig;
  readonly pool: SandboxPool;
  readonly maxAnswerBytes: number;
  readonly maxJsonDepth: number;
  /** Id of the node the calls are made for (diagnostics events). */
  readonly node: string;
}

type Failure = { readonly failed: string };

export class JavascriptHooks implements Hooks {
  readonly connectWithoutToken: boolean;
  readonly #config: JavascriptHooksConfig;
  readonly #pool: SandboxPool;
  readonly #events: ReadonlySet<string>;
  readonly #namespaces: ReadonlyMap<string, ReadonlySet<string>>;
  readonly #maxAnswerBytes: number;
  readonly #maxJsonDepth: number;
  readonly #node: string;

  constructor(options: JavascriptHooksOptions) {
    const { config, pool } = options;
    this.#config = config;
    this.#pool = pool;
    this.#events = new Set(config.events);
    this.#namespaces = new Map(config.namespaces.map((ns) => [ns.name, new Set<string>(ns.events)]));
    const missing = [...new Set([...config.events, ...config.namespaces.flatMap((ns) => ns.events)])].filter((event) => !pool.functions.has(HOOK_FUNCTIONS[event]));
    if (missing.length > 0) throw new Error(`hooks.javascript: ${config.file} does not export ${missing.map((event) => HOOK_FUNCTIONS[event]).join(', ')} (hooks.javascript.events lists ${missing.join(', ')})`);
    this.connectWithoutToken = config.withoutToken;
    this.#maxAnswerBytes = options.maxAnswerBytes;
    this.#maxJsonDepth = options.maxJsonDepth;
    this.#node = options.node;
  }

  has(event: HookEvent, namespace: string): boolean {
    if (event === 'refresh') return false;
    if (namespace !== '' && event !== 'connect') {
      const own = this.#namespaces.get(namespace);
      if (own !== undefined) return own.has(event);
    }
    return this.#events.has(event);
  }

  capture(_headers: IncomingHttpHeaders): ForwardedRequest | undefined {
    return undefined;
  }

  async connect(request: ConnectHookRequest): Promise<ConnectDecision> {
    const answer = await this.#call('connect', { ...connection(request), ...(request.name === undefined ? {} : { name: request.name }), token_present: request.tokenPresent });
    return 'failed' in answer ? this.#unavailable() : connectDecision(answer);
  }

  refresh(_request: HookConnection): Promise<RefreshDecision> {
    return Promise.resolve({ outcome: 'unavailable', failOpen: false });
  }

  async subscribe(request: SubscribeHookRequest): Promise<SubscribeDecision> {
    const answer = await this.#call('subscribe', { ...connection(request), channel: request.channel, namespace: request.namespace });
    return 'failed' in answer ? this.#unavailable() : subscribeDecision(answer);
  }

  async publish(request: PublishHookRequest): Promise<PublishDecision> {
    const answer = await this.#call('publish', { ...connection(request), channel: request.channel, namespace: request.namespace, data: request.data });
    return 'failed' in answer ? this.#unavailable() : publishDecision(answer);
  }

  async rpc(request: RpcHookRequest): Promise<RpcDecision> {
    const answer = await this.#call('rpc', { ...connection(request), method: request.method, data: request.data });
    // An rpc has no answer to go on with: it never fails open.
    return 'failed' in answer ? { outcome: 'unavailable', failOpen: false } : rpcDecision(answer);
  }

  close(): Promise<void> {
    return this.#pool.close();
  }

  #unavailable(): { readonly outcome: 'unavailable'; readonly failOpen: boolean } {
    return { outcome: 'unavailable', failOpen: this.#config.failure === 'open' };
  }

  /** One call in a sandbox; resolves to the checked answer or to why it failed. Never rejects. */
  async #call(event: ScriptedEvent, fields: Record<string, unknown>): Promise<HookAnswer | Failure> {
    const started = performance.now();
    const outcome = await this.#run(event, fields);
    reportHookCall(diagnostics.hookSandbox, this.#node, event, outcome, started);
    return outcome;
  }

  async #run(event: ScriptedEvent, fields: Record<string, unknown>): Promise<HookAnswer | Failure> {
    let input: string;
    try {
      input = JSON.stringify({ event, ...fields });
    } catch {
      return { failed: 'request_not_serializable' };
    }
    if (Buffer.byteLength(input) > this.#config.maxInputBytes) return { failed: 'request_too_large' };
    const outcome = await this.#pool.run(HOOK_FUNCTIONS[event], input, this.#config.timeoutMs, this.#maxAnswerBytes);
    if ('failed' in outcome) return outcome;
    if (outcome.answer === null) return { result: {} };
    // Characters were bounded in the sandbox; the bound is on bytes.
    if (Buffer.byteLength(outcome.answer) > this.#maxAnswerBytes) return { failed: 'answer_too_large' };
    const read = readJson(outcome.answer, this.#maxJsonDepth);
    if (!read.ok) return { failed: `answer_${read.error}` };
    return checkAnswer(event, read.value) ?? { failed: 'answer_schema' };
  }
}

/** The fields every event carries (no headers or cookies: JavaScript hooks are given none). */
function connection(c: HookConnection): Record<string, unknown> {
  return { client: c.client, user: c.user, transport: c.transport, address: c.address, ...(c.connInfo === undefined ? {} : { conn_info: c.connInfo }), ...(c.app === undefined ? {} : { app: c.app }) };
}
