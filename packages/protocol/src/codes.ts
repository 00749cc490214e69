/**
 * The three code registries of the Herald protocol. Every error a client or a
 * backend can see comes from here; `docs/errors.md` documents each entry and
 * `packages/protocol/test/errors-doc.test.ts` fails when the two drift.
 *
 * - API errors: answers of the HTTP server API, with their HTTP status.
 * - Reply errors: the `error` of a reply to a client command.
 * - Disconnect codes: why the server closed a connection. The range tells a
 *   client what to do: 3000–3499 reconnect (with backoff), 3500–3999 do not
 *   reconnect. On WebSocket the code is the close code; on SSE and long
 *   polling it arrives in a `disconnect` push.
 *
 * No Node APIs here: the client SDK shares this module.
 */

/**
 * Messages are the fixed text of their code. What in a request was wrong
 * (the field and why, the channel rule that failed) goes in an error's
 * `detail`, beside the code; see docs/errors.md.
 */
export interface ApiErrorEntry {
  readonly status: number;
  readonly message: string;
}

export const apiErrors = {
  bad_request: { status: 400, message: 'request body does not match the method schema' },
  invalid_input: { status: 400, message: 'a field of the request is invalid' },
  invalid_json: { status: 400, message: 'request body is not valid JSON' },
  invalid_utf8: { status: 400, message: 'request body is not valid UTF-8' },
  json_too_deep: { status: 400, message: 'request body nests arrays and objects deeper than the limit' },
  invalid_channel: { status: 400, message: 'channel name is invalid' },
  unknown_namespace: { status: 400, message: 'channel namespace is not configured' },
  not_available: { status: 400, message: 'feature is not enabled for this namespace' },
  unauthorized: { status: 401, message: 'missing or invalid credentials' },
  token_expired: { status: 401, message: 'connection token expired' },
  unauthenticated: { status: 401, message: 'sign in first: no valid console session' },
  login_failed: { status: 401, message: 'wrong name or password' },
  mfa_failed: { status: 401, message: 'wrong, expired or already used code' },
  forbidden: { status: 403, message: 'the credentials lack the scope or role for this request' },
  mfa_required: { status: 403, message: 'finish signing in first: this console session still needs a second factor or enrolment' },
  csrf_failed: { status: 403, message: 'request refused: foreign origin or missing CSRF token' },
  anonymous_not_allowed: { status: 403, message: 'anonymous access is not allowed in this namespace: connect with a token' },
  subscription_token_required: { status: 403, message: 'a private channel needs a subscription token: subscribe by command after opening' },
  origin_not_allowed: { status: 403, message: 'origin not allowed' },
  connection_denied: { status: 403, message: 'the application refused the connection (connect hook)' },
  not_found: { status: 404, message: 'no such endpoint' },
  session_unknown: { status: 404, message: 'connection session is unknown or expired' },
  method_not_allowed: { status: 405, message: 'HTTP method not allowed here' },
  payload_too_large: { status: 413, message: 'request body exceeds the size limit' },
  unsupported_media_type: { status: 415, message: 'request body must be application/json' },
  too_many_requests: { status: 429, message: 'rate limit exceeded' },
  connection_limit: { status: 429, message: 'too many connections' },
  login_locked: { status: 429, message: 'too many failed sign-ins: try again later' },
  passkey_failed: { status: 401, message: 'the passkey was not accepted' },
  internal: { status: 500, message: 'internal server error' },
  unavailable: { status: 503, message: 'server is shutting down or degraded' },
  hook_unavailable: { status: 503, message: 'the application backend did not answer (connect hook)' },
} as const satisfies Record<string, ApiErrorEntry>;

export type ApiErrorCode = keyof typeof apiErrors;

export interface ReplyErrorEntry {
  readonly code: number;
  readonly message: string;
}

export const replyErrors = {
  internal: { code: 100, message: 'internal server error' },
  unauthorized: { code: 101, message: 'unauthorized' },
  unknown_namespace: { code: 102, message: 'channel namespace is not configured' },
  permission_denied: { code: 103, message: 'permission denied' },
  method_not_found: { code: 104, message: 'method not found' },
  already_subscribed: { code: 105, message: 'already subscribed' },
  limit_exceeded: { code: 106, message: 'limit exceeded' },
  bad_request: { code: 107, message: 'bad request' },
  not_available: { code: 108, message: 'not available' },
  token_expired: { code: 109, message: 'token expired' },
  not_subscribed: { code: 110, message: 'not subscribed' },
  too_many_requests: { code: 111, message: 'too many requests' },
  invalid_channel: { code: 112, message: 'invalid channel name' },
  message_too_large: { code: 113, message: 'message too large' },
  already_connected: { code: 114, message: 'already connected' },
  not_connected: { code: 115, message: 'connect first' },
  unavailable: { code: 116, message: 'temporarily unavailable' },
  json_too_deep: { code: 117, message: 'command nests arrays and objects deeper than the limit' },
  anonymous_not_allowed: { code: 118, message: 'anonymous access is not allowed in this namespace' },
  hook_unavailable: { code: 119, message: 'the application backend did not answer' },
  rpc_not_configured: { code: 120, message: 'no rpc hook is configured for this method' },
} as const satisfies Record<string, ReplyErrorEntry>;

export type ReplyErrorName = keyof typeof replyErrors;

export interface DisconnectEntry {
  readonly code: number;
  readonly reason: string;
}

export const disconnects = {
  shutdown: { code: 3001, reason: 'server shutting down' },
  internal: { code: 3002, reason: 'internal server error' },
  token_expired: { code: 3003, reason: 'token expired' },
  slow: { code: 3004, reason: 'slow consumer: outbound queue limit reached' },
  write_error: { code: 3005, reason: 'write error' },
  insufficient_state: { code: 3006, reason: 'insufficient state' },
  force_reconnect: { code: 3007, reason: 'force reconnect' },
  no_pong: { code: 3008, reason: 'no activity within two ping intervals' },
  too_many_requests: { code: 3009, reason: 'inbound message rate above the hard limit' },
  session_expired: { code: 3010, reason: 'long-poll session expired' },
  hook_unavailable: { code: 3011, reason: 'the application backend did not answer' },
  invalid_token: { code: 3500, reason: 'invalid token' },
  bad_request: { code: 3501, reason: 'bad request' },
  stale: { code: 3502, reason: 'stale: no connect command in time' },
  force_disconnect: { code: 3503, reason: 'disconnected by the server' },
  permission_denied: { code: 3504, reason: 'permission denied' },
  message_too_large: { code: 3505, reason: 'message too large' },
  connection_limit: { code: 3506, reason: 'connection limit reached' },
  revoked: { code: 3507, reason: 'token or user revoked' },
} as const satisfies Record<string, DisconnectEntry>;

export type DisconnectName = keyof typeof disconnects;

/** True when a client should reconnect (with backoff) after this code. */
export function shouldReconnect(code: number): boolean {
  if (code >= 3000 && code < 3500) return true;
  if (code >= 4000 && code < 4500) return true;
  if (code >= 3500 && code < 4000) return false;
  if (code >= 4500 && code < 5000) return false;
  // WebSocket-level closes (1000–2999): a protocol or size violation is the
  // client's own fault and repeats; anything else is transient.
  return !(code === 1002 || code === 1003 || code === 1007 || code === 1008 || code === 1009);
}
