/**
 * Herald client SDK: one client object over WebSocket, SSE or long polling,
 * with transport fallback, reconnect with backoff, token refresh and
 * loss-free recovery of subscriptions. Runs in browsers and Node 24; no
 * dependencies beyond Herald's protocol module. Reference: docs/client.md.
 */
export { HeraldClient, endpointsFor, type ClientOptions } from './client.ts';
export { Subscription } from './subscription.ts';
export { HeraldError, sdkCodes, closeAction, type CloseAction, type SdkCodeName } from './codes.ts';
export { backoffCeiling, backoffDelay, type BackoffOptions } from './backoff.ts';
export { PositionTracker, type OffsetVerdict } from './position-tracker.ts';
export { transportNames, type TransportName, type FetchFunction } from './transport.ts';
export { disconnects, replyErrors, shouldReconnect, PROTOCOL_VERSION } from '@herald/protocol';
export type * from './types.ts';
