/**
 * Whether the console runs, decided once at start from `admin.console.enabled`
 * and where the internal listener is (preflight.ts runs it, so `herald
 * check-config` says the same as `herald serve`).
 *
 * The console's session cookie is `Secure`: browsers keep it only in a
 * secure context, which off loopback means HTTPS. So the console runs on a
 * non-loopback internal address only with TLS on the listener
 * (`admin.tls`) or a TLS proxy in front (`admin.console.behindTlsProxy`,
 * which also needs `admin.console.origin`).
 */
import { isIP } from 'node:net';
import type { Config } from '../config/schema.ts';

export interface ConsoleDecision {
  readonly enabled: boolean;
  /** Why start is refused (`enabled: true` where it cannot be safe). */
  readonly problem?: string;
  /** Why `auto` left it off. */
  readonly warning?: string;
}

/** Whether an address only this machine can reach: a loopback IP or `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (bare === 'localhost' || bare.endsWith('.localhost')) return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) === 6) return bare === '::1' || /^::ffff:127\./.test(bare);
  return false;
}

export function decideConsole(config: Config, tls: boolean): ConsoleDecision {
  const c = config.admin.console;
  if (c.enabled === false) return { enabled: false };
  if (c.behindTlsProxy && c.origin === undefined) {
    return { enabled: false, problem: '/admin/console/origin: behindTlsProxy needs the console\'s origin as browsers see it (e.g. "https://herald-admin.example.com")' };
  }
  const safe = isLoopbackHost(config.admin.host) || tls || c.behindTlsProxy;
  if (safe) return { enabled: true };
  const why = `the internal listener is on ${config.admin.host}, not loopback, without TLS: the console's session cookie would travel in clear text`;
  const fix = 'give the internal listener a certificate (admin.tls.certFile, admin.tls.keyFile), or put a TLS proxy in front and set admin.console.behindTlsProxy and admin.console.origin, or keep admin.host on loopback';
  if (c.enabled === true) return { enabled: false, problem: `/admin/console/enabled: ${why}; ${fix}` };
  return { enabled: false, warning: `admin console off: ${why}; to turn it on, ${fix} (admin.console.enabled: false silences this)` };
}
