/**
 * The `Date` header's value for answers Herald writes itself (the SSE
 * opening, the lean long-poll layer), made once per second as Node's own
 * answers make theirs.
 */
let dateSecond = -1;
let dateText = '';

/** The current time as an HTTP date (`Mon, 07 Dec 2026 15:40:58 GMT`), the same text within one second. */
export function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}
