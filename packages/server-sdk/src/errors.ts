/**
 * How a call of the server API fails: always a `HeraldApiError`, whose
 * `code` is either an API error code of Herald's registry (docs/errors.md,
 * with the HTTP `status` Herald answered) or one of the SDK's own codes
 * below, for failures where no Herald answer was read.
 */
import type { ApiErrorCode } from '@herald/protocol';

/** The SDK's own codes; `status` is 0 unless an HTTP answer arrived. docs/server-sdk.md lists them. */
export const sdkErrors = {
  /** The request did not reach Herald or the connection broke (DNS, refused, reset, TLS). */
  network_error: { message: 'could not reach Herald' },
  /** No complete answer within `timeoutMs`. */
  timeout: { message: 'no answer from Herald within the timeout' },
  /**
   * An answer that is not Herald's: not JSON, larger or deeper than the
   * SDK reads, a result that does not match the method's schema, or an
   * error status without Herald's error body (a proxy's error page).
   */
  invalid_response: { message: 'the answer is not a Herald API answer' },
} as const;

export type SdkErrorCode = keyof typeof sdkErrors;

export interface HeraldApiErrorInit {
  readonly code: ApiErrorCode | SdkErrorCode;
  /** HTTP status of the answer; 0 when there was none. */
  readonly status: number;
  readonly message: string;
  readonly detail?: string | undefined;
  /** Seconds, from `Retry-After` (429 `too_many_requests`). */
  readonly retryAfter?: number | undefined;
  readonly cause?: unknown;
}

/** A failed call. Never carries the API key, nor the request body. */
export class HeraldApiError extends Error {
  /** An API error code (docs/errors.md) or an SDK code (`network_error`, `timeout`, `invalid_response`). */
  readonly code: ApiErrorCode | SdkErrorCode;
  /** HTTP status of the answer; 0 when no answer was read (`network_error`, `timeout`). */
  readonly status: number;
  /** What in the request was wrong (`/channel: expected string`), or what was wrong with the answer, when known. */
  readonly detail: string | undefined;
  /** Seconds to wait before trying again, from `Retry-After`: set on 429 `too_many_requests`. */
  readonly retryAfter: number | undefined;
  /** The method called (`publish`, …). */
  readonly method: string;

  constructor(method: string, init: HeraldApiErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'HeraldApiError';
    this.method = method;
    this.code = init.code;
    this.status = init.status;
    this.detail = init.detail;
    this.retryAfter = init.retryAfter;
  }
}

export function sdkError(method: string, code: SdkErrorCode, status: number, detail?: string, cause?: unknown): HeraldApiError {
  return new HeraldApiError(method, { code, status, message: sdkErrors[code].message, detail, cause });
}
