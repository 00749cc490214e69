/**
 * Resolves a channel name to its namespace options and checks what a
 * connection may do with it. Pure functions of the frozen config.
 */
import type { Config, NamespaceConfig, NamespaceEntry } from '../config/schema.ts';
import { isChannelNameError, parseChannel, type ReplyErrorName } from '../protocol/index.ts';

export interface ResolvedChannel {
  readonly channel: string;
  readonly namespace: string;
  readonly options: NamespaceConfig;
}

export class ChannelRules {
  readonly #namespaces = new Map<string, NamespaceConfig>();
  readonly #maxNameBytes: number;
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

  resolve(channel: unknown): ResolvedChannel | ReplyErrorName {
    const parsed = parseChannel(channel, this.#maxNameBytes);
    if (isChannelNameError(parsed)) return 'invalid_channel';
    const options = this.#namespaces.get(parsed.namespace);
    if (options === undefined) return 'unknown_namespace';
    return { channel: parsed.channel, namespace: parsed.namespace, options };
  }
}
