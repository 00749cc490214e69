/**
 * External services for tests (Redis, …): a test that needs one skips with a
 * loud line when it is missing, and fails instead under
 * HERALD_REQUIRE_SERVICES=1 (CI).
 */
import { Socket } from 'node:net';

export const REDIS_URL = process.env['HERALD_TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/** Resolves true when something answers PING at the Redis URL within five seconds. */
function pingRedis(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(5000, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(Number(port || 6379), hostname, () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

/**
 * Resolves true when Redis answers PING at the URL; asks up to three times,
 * so that a loaded machine (a slow accept, a slow answer) is not taken for a
 * missing Redis, which fails the whole file under HERALD_REQUIRE_SERVICES=1.
 */
export async function redisAvailable(url = REDIS_URL): Promise<boolean> {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    if (await pingRedis(url)) return true;
  }
  return false;
}

/**
 * Returns a reason to skip (and prints it loudly) when the service is
 * missing; throws when services are required.
 */
export function missingService(name: string, available: boolean): string | false {
  if (available) return false;
  const message = `${name} is not available`;
  if (process.env['HERALD_REQUIRE_SERVICES'] === '1') throw new Error(`${message} and HERALD_REQUIRE_SERVICES=1`);
  console.warn(`\n!!! SKIPPING: ${message}; these tests did not run. Set HERALD_REQUIRE_SERVICES=1 to make this a failure.\n`);
  return message;
}
