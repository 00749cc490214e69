/**
 * Herald server SDK, for backends: typed calls of the HTTP server API
 * (`HeraldApi`, failures as `HeraldApiError`) and connection/subscription
 * token minting. Reference: docs/server-sdk.md.
 */
export { HeraldApi, type HeraldApiOptions, type HistoryOptions, type DisconnectOptions, type PublishOptions } from './herald-api.ts';
export { HeraldApiError, sdkErrors, type SdkErrorCode, type HeraldApiErrorInit } from './errors.ts';
export { mintConnectionToken, mintSubscriptionToken, MIN_HMAC_SECRET_CHARS, type TokenOptions, type SubscriptionTokenOptions, type TokenAlgorithm } from './tokens.ts';
export { apiSchemas, apiMethodNames, type ApiMethodName, type ApiRequest, type ApiResult, type ApiErrorBody } from '@herald/protocol/api';
export type { ApiErrorCode } from '@herald/protocol';
