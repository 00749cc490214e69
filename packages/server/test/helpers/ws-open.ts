/**
 * Helpers for WebSocket connections opened in the upgrade request
 * (`connect=1`, docs/protocol.md "WebSocket"): the URL. (The raw upgrade
 * request: packages/server/test/security/raw-http.ts `upgradeHead`.)
 */
/** `ws://…/connection/websocket?connect=1&…` with each parameter (repeated for arrays). */
export function openUrl(base: string, params: Record<string, string | readonly string[] | undefined>): string {
  const url = new URL(base);
  url.searchParams.set('connect', '1');
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
    for (const one of typeof value === 'string' ? [value] : value) url.searchParams.append(name, one);
  }
  return url.toString();
}
