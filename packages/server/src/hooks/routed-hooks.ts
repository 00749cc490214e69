/**
 * Proxy hooks and JavaScript hooks together: each event goes to the one
 * backend that handles it. The config refuses an event handled by both
 * (config/load.ts), so at most one `has` is true for an event and namespace.
 */
import type { IncomingHttpHeaders } from 'node:http';
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

export class RoutedHooks implements Hooks {
  readonly connectWithoutToken: boolean;
  readonly #proxy: Hooks;
  readonly #script: Hooks;

  constructor(proxy: Hooks, script: Hooks) {
    this.#proxy = proxy;
    this.#script = script;
    this.connectWithoutToken = proxy.connectWithoutToken || script.connectWithoutToken;
  }

  #for(event: HookEvent, namespace: string): Hooks {
    return this.#script.has(event, namespace) ? this.#script : this.#proxy;
  }

  has(event: HookEvent, namespace: string): boolean {
    return this.#script.has(event, namespace) || this.#proxy.has(event, namespace);
  }

  capture(headers: IncomingHttpHeaders): ForwardedRequest | undefined {
    return this.#proxy.capture(headers);
  }

  connect(request: ConnectHookRequest): Promise<ConnectDecision> {
    return this.#for('connect', '').connect(request);
  }

  refresh(request: HookConnection): Promise<RefreshDecision> {
    return this.#proxy.refresh(request);
  }

  subscribe(request: SubscribeHookRequest): Promise<SubscribeDecision> {
    return this.#for('subscribe', request.namespace).subscribe(request);
  }

  publish(request: PublishHookRequest): Promise<PublishDecision> {
    return this.#for('publish', request.namespace).publish(request);
  }

  rpc(request: RpcHookRequest, namespace: string): Promise<RpcDecision> {
    return this.#for('rpc', namespace).rpc(request, namespace);
  }

  async close(): Promise<void> {
    await Promise.all([this.#proxy.close(), this.#script.close()]);
  }
}
