/**
 * Codes the SDK adds to the protocol's registries (packages/protocol/src/codes.ts).
 *
 * Connection and subscription events carry a `code`: either a Herald
 * disconnect code (3000–4999, from the server), a WebSocket close code
 * (1000–2999), or one of the SDK's own codes below (0–99), used when the
 * SDK itself made the decision. Errors (`HeraldError.code`) carry a reply
 * error code (100–199, from the server) or an SDK code.
 *
 * What to do after a code is decided here, from the code's range: see
 * `closeAction`.
 */
import { disconnects, shouldReconnect } from '@herald/protocol';

export const sdkCodes = {
  /** `connecting`: the application called `connect()`. */
  connect_called: { code: 0, reason: 'connect called' },
  /** `disconnected`: the application called `disconnect()`. */
  disconnect_called: { code: 1, reason: 'disconnect called' },
  /** `connecting`: the transport dropped without a Herald code (network, proxy, every transport failed). */
  transport_closed: { code: 2, reason: 'transport closed' },
  /** `connecting`: no frame from the server within its ping interval plus `maxServerPingDelayMs`. */
  no_ping: { code: 3, reason: 'no ping from server' },
  /** `unsubscribed`: the application called `unsubscribe()`. */
  unsubscribe_called: { code: 4, reason: 'unsubscribe called' },
  /** Error: no reply within `timeoutMs`. */
  timeout: { code: 5, reason: 'timeout' },
  /** Error: the client is disconnected, or the connection was lost before the reply. */
  disconnected: { code: 6, reason: 'client disconnected' },
  /** Error event: the `getToken` callback failed (the SDK retries with backoff). */
  token_error: { code: 7, reason: 'getToken failed' },
  /** Error event: one transport could not connect; the SDK tries the next one. */
  transport_failed: { code: 8, reason: 'transport could not connect' },
  /** Error event, then `disconnected`: the server speaks another major protocol version than this SDK (terminal). */
  protocol_mismatch: { code: 9, reason: 'protocol version mismatch' },
} as const;

export type SdkCodeName = keyof typeof sdkCodes;

/** An error of a command: a reply error from the server, or an SDK code. */
export class HeraldError extends Error {
  readonly code: number;
  /** What the server said was wrong with the command (`/params/channel: expected string`), when it said. */
  readonly detail: string | undefined;
  constructor(code: number, message: string, detail?: string) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    this.detail = detail;
  }
}

export function sdkError(name: SdkCodeName): HeraldError {
  const entry = sdkCodes[name];
  return new HeraldError(entry.code, entry.reason);
}

/**
 * What the client does after its connection ended with `code`:
 * - `reconnect`: with backoff (and resubscribe with recovery);
 * - `refresh-token`: 3003, get a fresh token from `getToken`, then reconnect;
 * - `stop`: a terminal code (3500–3999, 4500–4999, WebSocket 1002/1003/1007/1008/1009):
 *   the same attempt would fail again, so the client goes to `disconnected`.
 */
export type CloseAction = 'reconnect' | 'refresh-token' | 'stop';

export function closeAction(code: number): CloseAction {
  if (code === disconnects.token_expired.code) return 'refresh-token';
  if (code >= 0 && code < 100) return 'reconnect';
  return shouldReconnect(code) ? 'reconnect' : 'stop';
}

/** Reply error codes after which a subscribe is retried (with backoff) rather than given up. */
export function isTemporaryReplyError(code: number): boolean {
  return code === 100 || code === 109 || code === 111 || code === 119 || (code >= 0 && code < 100);
}

/**
 * How the SSE and long-poll open endpoints answer failures (HTTP status and
 * API error name, docs/errors.md), as the disconnect code the SDK acts on.
 * `channelsRefused`: the failure may be about a channel requested at open;
 * the SDK opens again without channels and subscribes one by one, so each
 * subscription gets its own error.
 */
export interface OpenFailure {
  readonly code: number;
  readonly reason: string;
  readonly channelsRefused: boolean;
}

export function openFailure(status: number, apiError: string | undefined, requestedChannels: boolean): OpenFailure {
  if (status === 401) {
    const entry = apiError === 'token_expired' ? disconnects.token_expired : disconnects.invalid_token;
    return { code: entry.code, reason: entry.reason, channelsRefused: false };
  }
  if (requestedChannels && (status === 403 || (status === 400 && apiError !== 'invalid_json'))) {
    return { code: sdkCodes.transport_closed.code, reason: `open refused (${apiError ?? status})`, channelsRefused: true };
  }
  // Without channels a 403 is about the connection: anonymous where no namespace allows it.
  if (status === 403 && (apiError === 'forbidden' || apiError === 'anonymous_not_allowed' || apiError === 'connection_denied')) {
    return { code: disconnects.permission_denied.code, reason: disconnects.permission_denied.reason, channelsRefused: false };
  }
  // 404 (no such endpoint, e.g. a proxy), 429, 5xx, or anything unexpected: the transport failed.
  return { code: sdkCodes.transport_closed.code, reason: `HTTP ${status}${apiError === undefined ? '' : ' ' + apiError}`, channelsRefused: false };
}
