/**
 * A throwaway self-signed certificate for 127.0.0.1 and localhost, made with
 * the `openssl` command (Debian's openssl package): for tests that serve
 * TLS (the listeners, a test OpenID provider). Undefined when openssl is
 * missing: the caller skips loudly (or fails under HERALD_REQUIRE_SERVICES=1).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

export function makeCertificate(dir: string): { certFile: string; keyFile: string } | undefined {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ],
      { stdio: 'pipe', timeout: 30000 },
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  return { certFile, keyFile };
}
