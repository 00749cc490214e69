/**
 * Resolves a channel name to its namespace options and checks what a
 * connection may do with it. Pure functions of the frozen config.
 */
import type { Config, NamespaceConfig, NamespaceEntry } from '../config/schema.ts';
import { describeChannelNameError, isChannelNameError, parseChannel } from '@herald/protocol';

export interface ResolvedChannel {
  readonly channel: string;
  readonly namespace: string;
  readonly options: NamespaceConfig;
}

/** Why a channel name cannot be used: the reply error, and for a broken name the rule in words. */
export type ChannelRefusal = { readonly reply: 'invalid_channel'; readonly detail: string } | { readonly reply: 'unknown_namespace'; readonly detail?: undefined };

/** Most resolved channels kept; the whole set is dropped when full (the rules never change, so any answer kept is right). */
const RESOLVED_KEPT = 1024;

export class ChannelRules {
  readonly #namespaces = new Map<string, NamespaceConfig>();
  readonly #maxNameBytes: number;
  /** Channels resolved lately (frozen answers, at most RESOLVED_KEPT): a reconnect storm names the same channels thousands of times. */
  readonly #resolved = new Map<string, ResolvedChannel>();
  /** True when some namespace accepts anonymous connections. */
  readonly anonymousAllowed: boolean;

  constructor(config: Config['channels']) {
    this.#maxNameBytes = config.maxNameBytes;
    this.#namespaces.set('', config.defaults);
    for (const ns of config.namespaces as readonly NamespaceEntry[]) {
      const { name, ...options } = ns;
      this.#namespaces.set(name, Object.freeze({ ...config.defaults, ...options }));
    }
    this.anonymousAllowed = [...this.#namespaces.values()].some((o) => o.allowAnonymous);
  }

  /** A namespace's options ('' is the default namespace), or undefined when the config has no such namespace. */
  namespaceOptions(namespace: string): NamespaceConfig | undefined {
    return this.#namespaces.get(namespace);
  }

  resolve(channel: unknown): ResolvedChannel | ChannelRefusal {
    if (typeof channel === 'string') {
      const known = this.#resolved.get(channel);
      if (known !== undefined) return known;
    }
    const parsed = parseChannel(channel, this.#maxNameBytes);
    if (isChannelNameError(parsed)) return { reply: 'invalid_channel', detail: describeChannelNameError(parsed, this.#maxNameBytes) };
    const options = this.#namespaces.get(parsed.namespace);
    if (options === undefined) return { reply: 'unknown_namespace' };
    const resolved: ResolvedChannel = Object.freeze({ channel: parsed.channel, namespace: parsed.namespace, options });
    if (this.#resolved.size >= RESOLVED_KEPT) this.#resolved.clear();
    this.#resolved.set(parsed.channel, resolved);
    return resolved;
  }
}
