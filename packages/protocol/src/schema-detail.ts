/**
 * What a schema check found wrong, in words, for the `detail` of a
 * `bad_request` (API error or reply error 107): the path of the first
 * offending field and why, `/channel: expected string`. It names parts of
 * the request, never echoes a value of it. No Node APIs.
 */
import type { TSchema } from '@sinclair/typebox';
import type { TypeCheck } from '@sinclair/typebox/compiler';

const MAX_DETAIL = 200;

/** `prefix` is the path of the checked value in the whole request (`/params`, `/2`). */
export function schemaDetail(check: TypeCheck<TSchema>, value: unknown, prefix = ''): string | undefined {
  const first = check.Errors(value).First();
  if (first === undefined) return undefined;
  const path = prefix + first.path;
  const why = first.message.charAt(0).toLowerCase() + first.message.slice(1);
  return `${path === '' ? '/' : path}: ${why}`.slice(0, MAX_DETAIL);
}
