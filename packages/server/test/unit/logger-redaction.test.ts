/**
 * Log redaction (docs/security.md "Process hygiene"): a secret handed to the
 * logger anywhere a log line can carry it never reaches the output: keys at
 * any depth, arrays, headers, error messages and error properties, URLs with
 * credentials or token query parameters, the message text, child bindings.
 * What is not secret still reaches the line.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/observability/pino-logger.ts';

function capture(): { stream: Writable; lines: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString('utf8'));
      callback();
    },
  });
  return { stream, lines: () => chunks.join('') };
}

describe('log redaction', () => {
  it('no secret reaches the output, wherever it is', () => {
    const secrets: string[] = [];
    const secret = (): string => {
      const value = 'S3CRET' + randomBytes(12).toString('hex');
      secrets.push(value);
      return value;
    };
    const { stream, lines } = capture();
    const logger = createLogger('debug', stream);

    // keys, at every depth, and in arrays
    logger.info({ token: secret(), apiKey: secret(), hmacSecret: secret(), password: secret(), secret: secret() }, 'top level');
    logger.info({ deeper: { a: { token: secret() } } }, 'three levels');
    logger.info({ a: { b: { c: { d: { e: { f: { password: secret(), subscriptionToken: secret(), client_secret: secret() } } } } } } }, 'deep');
    logger.warn({ list: [{ token: secret() }, [{ auth: { access_token: secret() } }]], tokens: [secret(), secret()] }, 'arrays');
    logger.info({ config: { auth: { hmacSecret: secret(), privateKey: secret() }, engine: { redisUrl: `redis://default:${secret()}@redis.internal:6379/0` } } }, 'config');

    // headers, as a request object or on their own
    logger.info(
      {
        req: { method: 'GET', url: `/connection/sse?token=${secret()}&channel=chat:x`, headers: { authorization: `Bearer ${secret()}`, cookie: `herald=${secret()}`, 'x-api-key': secret(), 'herald-session': secret() } },
        response: { headers: { 'set-cookie': [`sid=${secret()}; HttpOnly`] } },
        headers: { Authorization: `Basic ${secret()}`, 'Proxy-Authorization': secret() },
      },
      'request',
    );

    // URLs with credentials or token query parameters, under innocent keys
    logger.info(
      {
        target: `https://user:${secret()}@hooks.example.com/path`,
        redis: `rediss://:${secret()}@cache:6380`,
        jwks: `https://idp.example.com/jwks?api_key=${secret()}&x=1`,
        nested: { urls: [`http://h/?access_token=${secret()}`, `wss://h/ws?session=${secret()}#x`] },
        value: `eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ${secret()}.c2lnbmF0dXJl`,
      },
      'urls',
    );

    // errors: message, own properties, causes, nested errors, errors logged alone
    const withProps = Object.assign(new Error(`connect failed: redis://:${secret()}@10.0.0.1:6379`), {
      code: 'ECONNREFUSED',
      config: { headers: { authorization: `Bearer ${secret()}` } },
    });
    logger.error({ err: withProps }, 'error with properties');
    logger.error({ err: new Error(`fetch https://x/?token=${secret()} answered 500; sent Authorization: Bearer ${secret()}`) }, 'error message');
    logger.error({ what: { error: new Error(`password=${secret()}`) } }, 'nested error');
    logger.error(new Error(`token ${'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJh' + secret()}.sig`));
    logger.error({ err: new Error('outer', { cause: new Error(`inner redis://u:${secret()}@h`) }) }, 'cause');

    // the message itself, and child bindings
    logger.info(`connecting to redis://:${secret()}@redis:6379`);
    logger.info({ n: 1 }, `retrying https://h/?token=${secret()}`);
    logger.child({ token: secret(), user: 'bob' }).info({ deeper: { apiKey: secret() } }, 'child');

    const output = lines();
    for (const value of secrets) assert.ok(!output.includes(value), `a secret leaked: ${output.split('\n').find((line) => line.includes(value))}`);
    // what is not secret stays
    for (const kept of ['redis.internal:6379', 'hooks.example.com', 'channel=chat:x', 'ECONNREFUSED', 'connect failed', '"user":"bob"', 'idp.example.com/jwks', 'x=1']) {
      assert.ok(output.includes(kept), `"${kept}" should stay in the log`);
    }
  });

  it('a huge or cyclic object is logged bounded, without throwing', () => {
    const { stream, lines } = capture();
    const logger = createLogger('info', stream);
    const cyclic: Record<string, unknown> = { name: 'loop' };
    cyclic['self'] = cyclic;
    let deep: Record<string, unknown> = { token: 'S3CRETdeep' };
    for (let i = 0; i < 10000; i++) deep = { next: deep };
    logger.info({ cyclic, deep, wide: Array.from({ length: 100000 }, (_, i) => ({ i })) }, 'bounded');
    const output = lines();
    assert.ok(output.includes('bounded'));
    assert.ok(!output.includes('S3CRETdeep'));
    assert.ok(output.length < 200000, `log line of ${output.length} characters`);
  });
});
