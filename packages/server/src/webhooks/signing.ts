/**
 * Webhook signatures: HMAC-SHA256 of the raw request body, hex, one per
 * configured key. Headers:
 *
 *     herald-webhook-key-id: k2
 *     herald-webhook-signature: k2=<hex>, k1=<hex>
 *
 * A receiver finds its key id in the signature header, computes
 * HMAC-SHA256(secret, raw body) and compares in constant time. During a
 * rotation (two keys configured) both signatures are sent, so receivers
 * holding either secret verify.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface SigningKey {
  readonly id: string;
  readonly secret: string;
}

export const KEY_ID_HEADER = 'herald-webhook-key-id';
export const SIGNATURE_HEADER = 'herald-webhook-signature';
export const BATCH_ID_HEADER = 'herald-webhook-id';

export function sign(body: string, secret: string): string {
  return createHmac('sha256', secret).update(body).digest('hex');
}

/** The signature header's value for a body. */
export function signatureHeader(body: string, keys: readonly SigningKey[]): string {
  return keys.map((key) => `${key.id}=${sign(body, key.secret)}`).join(', ');
}

/** Receiver side (tests, docs): true when the header holds a valid signature by `key` over `body`. */
export function verifySignature(body: string, header: string | undefined, key: SigningKey): boolean {
  if (header === undefined) return false;
  const expected = Buffer.from(sign(body, key.secret), 'hex');
  for (const part of header.split(',')) {
    const [id, hex] = part.trim().split('=');
    if (id !== key.id || hex === undefined || !/^[0-9a-f]{64}$/.test(hex)) continue;
    if (timingSafeEqual(Buffer.from(hex, 'hex'), expected)) return true;
  }
  return false;
}
