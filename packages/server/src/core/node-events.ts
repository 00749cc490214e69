/**
 * What a Node reports to whoever turns its life into events (webhooks): per
 * connection, per subscription and per presence entry, exactly as they
 * happen on this node. The receiver derives the cluster-wide transitions
 * (channel occupied, member added once per user); the Node knows nothing
 * of other nodes or of HTTP.
 *
 * Guarantees: calls are synchronous and never throw into the Node (an
 * implementation catches its own errors); for one channel on this node,
 * `channelSubscribed` and `channelUnsubscribed` alternate, starting with
 * subscribed; `presenceJoined` and `presenceLeft` pair up per connection
 * and channel; `clientConnected` precedes `clientDisconnected` per connection.
 */
import type { ClientInfo } from '@herald/protocol';

export interface NodeEvents {
  /** A connection authenticated (or was accepted anonymously). */
  clientConnected(info: ClientInfo, transport: string): void;
  /** A connected connection closed, with its disconnect code and reason. */
  clientDisconnected(info: ClientInfo, transport: string, code: number, reason: string): void;
  /** The first local subscriber of a channel arrived on this node. */
  channelSubscribed(channel: string): void;
  /** The last local subscriber of a channel left this node. */
  channelUnsubscribed(channel: string): void;
  /** A connection entered a presence channel's member list. */
  presenceJoined(channel: string, info: ClientInfo): void;
  /** A connection left a presence channel's member list. */
  presenceLeft(channel: string, info: ClientInfo): void;
  /** A publication was accepted on this node (data is its JSON text). */
  published(channel: string, dataJson: string, info: ClientInfo | undefined): void;
}
