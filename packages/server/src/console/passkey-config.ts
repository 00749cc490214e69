/**
 * The relying party of the console's passkeys (`admin.console.passkeys`),
 * checked once at start (preflight.ts: `herald check-config` says the same
 * as `herald serve`):
 * - the RP id is a domain name, never an IP address (browsers refuse them),
 *   and not a public suffix ("com", "co.uk", "github.io": a passkey there
 *   would be usable by every site under it); `localhost` is allowed;
 * - every origin is https (http only for `localhost` and `*.localhost`,
 *   which browsers treat as secure contexts), and its host is the RP id or
 *   ends with `.` + the RP id (the RP id is a registrable suffix of it).
 * The public-suffix list is tldts's (the same list browsers use).
 */
import { isIP } from 'node:net';
import type { Config } from '../config/schema.ts';

// tldts loads only when passkeys are configured (docs/performance.md, footprint).
let tldts: Promise<typeof import('tldts')> | undefined;
const loadTldts = () => (tldts ??= import('tldts'));

export interface PasskeySettings {
  readonly rpId: string;
  readonly rpName: string;
  /** Origins ceremonies may come from (`scheme://host[:port]`). */
  readonly origins: readonly string[];
  readonly challengeTtlMs: number;
}

function isLocalhost(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost');
}

/** Why `rpId` cannot be a relying-party id, or undefined when it can. */
async function rpIdProblem(rpId: string): Promise<string | undefined> {
  if (isIP(rpId) !== 0 || /^[0-9.]+$/.test(rpId)) return `"${rpId}" is an IP address; browsers accept only a domain name as RP id (use "localhost" on this machine)`;
  if (rpId !== rpId.toLowerCase()) return `"${rpId}" must be lower case`;
  if (rpId.startsWith('.') || rpId.endsWith('.') || rpId.includes('..')) return `"${rpId}" is not a domain name`;
  if (isLocalhost(rpId)) return undefined;
  const parsed = (await loadTldts()).parse(rpId, { allowPrivateDomains: true });
  if (parsed.domain === null) return `"${rpId}" is a public suffix (like "com" or "co.uk"); use the console's domain, e.g. "example.com"`;
  return undefined;
}

/** Why `origin` cannot carry passkeys of `rpId`, or undefined when it can. */
function originProblem(origin: string, rpId: string): string | undefined {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return `"${origin}" is not an origin like https://herald-admin.example.com`;
  }
  const host = url.hostname.toLowerCase();
  if (url.protocol === 'http:' && !isLocalhost(host)) return `"${origin}" is plain http; browsers allow passkeys only on https (or http://localhost)`;
  if (host !== rpId && !host.endsWith(`.${rpId}`)) return `the RP id "${rpId}" is not a registrable suffix of the host "${host}" of "${origin}": set rpId to "${host}" or a parent domain of it`;
  return undefined;
}

/** The relying party when passkeys are on (rpId set), else undefined. Call after `passkeyProblems` found none. */
export function passkeySettings(config: Config): PasskeySettings | undefined {
  const p = config.admin.console.passkeys;
  if (p.rpId === undefined) return undefined;
  const origins = p.origins.length > 0 ? p.origins : config.admin.console.origin === undefined ? [] : [config.admin.console.origin];
  return { rpId: p.rpId, rpName: p.rpName, origins: origins.map((o) => new URL(o).origin), challengeTtlMs: p.challengeTtlMs };
}

/** Problems of `admin.console.passkeys`, each naming its field. */
export async function passkeyProblems(config: Config): Promise<string[]> {
  const p = config.admin.console.passkeys;
  const problems: string[] = [];
  if (p.rpId === undefined) {
    if (p.origins.length > 0) problems.push('/admin/console/passkeys/rpId: origins are set but rpId is not; passkeys need both (e.g. rpId "example.com")');
    return problems;
  }
  const rpProblem = await rpIdProblem(p.rpId);
  if (rpProblem !== undefined) {
    problems.push(`/admin/console/passkeys/rpId: ${rpProblem}`);
    return problems;
  }
  const origins = p.origins.length > 0 ? p.origins : config.admin.console.origin === undefined ? [] : [config.admin.console.origin];
  if (origins.length === 0) {
    problems.push('/admin/console/passkeys/origins: list the origins the console is opened from (e.g. ["https://herald-admin.example.com"]); admin.console.origin is not set either');
  }
  const field = p.origins.length > 0 ? '/admin/console/passkeys/origins' : '/admin/console/origin';
  origins.forEach((origin, i) => {
    const problem = originProblem(origin, p.rpId!);
    if (problem !== undefined) problems.push(`${field}${p.origins.length > 0 ? `/${i}` : ''}: ${problem}`);
  });
  return problems;
}
