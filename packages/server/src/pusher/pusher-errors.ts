/**
 * The Pusher endpoint's error registry (docs/pusher.md, "Error codes"): every
 * `pusher:error` code and every `pusher:subscription_error` it sends, in one
 * place. These belong to the Pusher endpoint only; the native protocol's
 * registries (@herald/protocol) are unchanged.
 *
 * Codes keep Pusher's ranges, which tell pusher-js what to do after the
 * close: 4000–4099 do not reconnect, 4100–4199 reconnect with backoff,
 * 4200–4299 reconnect at once, 4300–4399 other errors (sent without closing
 * the connection). `close: true` entries are sent as `pusher:error` and then
 * the socket is closed with the same code.
 *
 * Messages name the rule, never a value the client sent, a secret or
 * anything about the server.
 */

export interface PusherErrorEntry {
  readonly code: number;
  readonly message: string;
  /** The connection is closed with `code` after the error. */
  readonly close: boolean;
}

export const pusherErrors = {
  app_unknown: { code: 4001, message: 'Application does not exist', close: true },
  app_disabled: { code: 4003, message: 'Application disabled', close: true },
  bad_version: { code: 4006, message: 'Invalid version string format', close: true },
  unsupported_protocol: { code: 4007, message: 'Unsupported protocol version (this server speaks protocol 7)', close: true },
  no_protocol: { code: 4008, message: 'No protocol version supplied', close: true },
  origin_not_allowed: { code: 4009, message: 'Connection is unauthorized: origin not allowed', close: true },
  terminated: { code: 4009, message: 'Connection is unauthorized: the app terminated the connections of this user', close: true },
  app_over_quota: { code: 4100, message: 'Over capacity: the application has reached its connection limit', close: true },
  over_capacity: { code: 4100, message: 'Over capacity', close: true },
  flooding: { code: 4100, message: 'Over capacity: too many messages from this connection', close: true },
  shutdown: { code: 4200, message: 'Server shutting down, reconnect', close: true },
  pong_timeout: { code: 4201, message: 'Pong reply not received', close: true },
  bad_message: { code: 4300, message: 'Invalid message (a JSON object with an "event" string, at most the size limit)', close: false },
  client_event_rate: { code: 4301, message: 'Client event rejected due to rate limit', close: false },
  client_event_too_large: { code: 4301, message: 'Client event rejected: data larger than the app\'s limit', close: false },
  client_event_refused: { code: 4301, message: 'Client event rejected: only on private and presence channels you are subscribed to, when the app enables client events', close: false },
  signin_refused: { code: 4302, message: 'Sign-in refused: invalid signature or user data', close: false },
  signin_user_limit: { code: 4302, message: 'Sign-in refused: this user holds the most connections allowed (limits.maxConnectionsPerUser)', close: false },
} as const satisfies Record<string, PusherErrorEntry>;

export type PusherErrorName = keyof typeof pusherErrors;

/**
 * Refusals of one subscription: sent as `pusher:subscription_error` on the
 * channel (pusher-js emits it on the channel object), the connection stays.
 * `status` is what an auth endpoint would have answered (pusher-js shows it).
 */
export const subscriptionErrors = {
  bad_channel: { status: 400, message: 'Invalid channel name (A-Z a-z 0-9 _ - = @ , . ; up to the app\'s length limit)' },
  auth_required: { status: 401, message: 'Auth signature required to subscribe to this channel' },
  bad_signature: { status: 401, message: 'Invalid auth signature' },
  bad_channel_data: { status: 400, message: 'Invalid channel_data (a JSON object with a user_id string, signed with the channel)' },
  too_many_channels: { status: 429, message: 'Too many channels subscribed on this connection' },
  presence_full: { status: 403, message: 'Presence channel has reached its member limit' },
  member_too_large: { status: 413, message: 'Presence user_info larger than the app\'s limit' },
  not_signed_in: { status: 401, message: 'Sign in as this user to subscribe to its server-to-user channel' },
  unavailable: { status: 503, message: 'Subscription failed on the server, retry later' },
} as const satisfies Record<string, { readonly status: number; readonly message: string }>;

export type SubscriptionErrorName = keyof typeof subscriptionErrors;

/** The `pusher:error` frame of a registry entry. */
export function pusherErrorFrame(name: PusherErrorName): string {
  const entry = pusherErrors[name];
  return JSON.stringify({ event: 'pusher:error', data: { code: entry.code, message: entry.message } });
}

/** The `pusher:subscription_error` frame of a refused subscription (Pusher's and pusher-js's shape). */
export function subscriptionErrorFrame(channel: string, name: SubscriptionErrorName): string {
  const entry = subscriptionErrors[name];
  return JSON.stringify({ event: 'pusher:subscription_error', channel, data: { type: 'AuthError', error: entry.message, status: entry.status } });
}
