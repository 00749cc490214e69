/**
 * Pusher's signatures on the socket, exactly as Pusher defines them
 * (docs/pusher.md, "Authorisation"): `auth` is `key:signature`, the
 * signature the lowercase hex HMAC-SHA256, under the app's secret, of
 *
 * - `socket_id:channel` for private (and private-encrypted, private-cache) channels,
 * - `socket_id:channel:channel_data` for presence channels,
 * - `socket_id::user::user_data` for `pusher:signin`.
 *
 * The key must be the app's own key; signatures are compared in constant
 * time. The `pusher` server SDKs' authorizeChannel / authenticateUser make
 * these.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { App } from '../apps/apps.ts';

/** Longest `auth` value looked at (a key of 128 characters, a colon, 64 hex digits). */
const MAX_AUTH_CHARS = 256;

/** Whether `auth` is `app.key:HMAC-SHA256(app.secret, signed)`; constant time over the signature. */
export function verifyAuth(app: App, auth: unknown, signed: string): boolean {
  if (typeof auth !== 'string' || auth.length > MAX_AUTH_CHARS) return false;
  const colon = auth.indexOf(':');
  if (colon < 0) return false;
  const expected = createHmac('sha256', app.secret).update(signed).digest();
  const given = Buffer.from(auth.slice(colon + 1), 'hex');
  // Different lengths (not 64 hex digits) never match; the comparison itself runs over equal lengths.
  const signatureOk = given.length === expected.length && timingSafeEqual(given, expected);
  return signatureOk && auth.slice(0, colon) === app.key;
}

/** What a channel subscription signs. */
export function channelSigned(socketId: string, channel: string, channelData: string | undefined): string {
  return channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
}

/** What a user sign-in signs. */
export function userSigned(socketId: string, userData: string): string {
  return `${socketId}::user::${userData}`;
}
