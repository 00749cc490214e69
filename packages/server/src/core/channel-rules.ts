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

/**
 * Most resolved channels kept; the whole set is dropped when full (the rules
 * never change, so any answer kept is right). Above the channels an
 * application publishes to in turn (a channel per user or per document: the
 * publish benchmark's 10 000), not below: with 1024, every publish there
 * missed, parsed the name again and refilled the set (a miss about 10 times
 * a hit's cost). At most a few MiB at names of a few dozen bytes.
 */
const RESOLVED_KEPT = 16384;

/**
 * Pusher's cache channels (docs/pusher.md): their last event is sent to each
 * new subscriber. Every such name is a default-namespace name (no `:`).
 */
export function isCacheChannel(name: string): boolean {
  return name.startsWith('cache-') || name.startsWith('private-cache-') || name.startsWith('presence-cache-');
}

export class ChannelRules {
  readonly #namespaces = new Map<string, NamespaceConfig>();
  /** The default namespace's options with the cache channels' history TTL (pusher.cacheTtlMs). */
  readonly #cache: NamespaceConfig;
  readonly #maxNameBytes: number;
  /** Channels resolved lately (frozen answers, at most RESOLVED_KEPT): a reconnect storm names the same channels thousands of times. */
  readonly #resolved = new Map<string, ResolvedChannel>();
  /** True when some namespace accepts anonymous connections. */
  readonly anonymousAllowed: boolean;

  /** `cacheTtlMs`: the history TTL of cache channels (pusher.cacheTtlMs); the default namespace's when absent. */
  constructor(config: Config['channels'], cacheTtlMs?: number) {
    this.#maxNameBytes = config.maxNameBytes;
    this.#namespaces.set('', config.defaults);
    this.#cache = cacheTtlMs === undefined ? config.defaults : Object.freeze({ ...config.defaults, historyTtlMs: cacheTtlMs });
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

  /**
   * The options of a default-namespace channel by its (app-local) name: the
   * default namespace's, with pusher.cacheTtlMs as the history TTL of a
   * cache channel. Every reader and writer of a channel (Pusher triggers,
   * client events and cache replays, native publishes, history and
   * recovery) uses these, so none trims the stream at another TTL.
   */
  defaultOptions(name: string): NamespaceConfig {
    return isCacheChannel(name) ? this.#cache : this.#namespaces.get('')!;
  }

  resolve(channel: unknown): ResolvedChannel | ChannelRefusal {
    if (typeof channel === 'string') {
      const known = this.#resolved.get(channel);
      if (known !== undefined) return known;
    }
    const parsed = parseChannel(channel, this.#maxNameBytes);
    if (isChannelNameError(parsed)) return { reply: 'invalid_channel', detail: describeChannelNameError(parsed, this.#maxNameBytes) };
    const options = parsed.namespace === '' ? this.defaultOptions(parsed.channel) : this.#namespaces.get(parsed.namespace);
    if (options === undefined) return { reply: 'unknown_namespace' };
    const resolved: ResolvedChannel = Object.freeze({ channel: parsed.channel, namespace: parsed.namespace, options });
    if (this.#resolved.size >= RESOLVED_KEPT) this.#resolved.clear();
    this.#resolved.set(parsed.channel, resolved);
    return resolved;
  }
}
