/**
 * TOTP (RFC 6238) for the console's second factor, through otplib (no
 * hand-written HOTP/TOTP), and recovery codes.
 *
 * Guarantees:
 * - Secrets are 20 bytes (160 bits) from a CSPRNG (otplib's generateSecret:
 *   `crypto.getRandomValues`), Base32, SHA-1, 6 digits, 30-second steps: the
 *   parameters every authenticator app reads from an otpauth:// URI.
 * - A code is accepted within ±1 step of the server's clock, and only for a
 *   step after the last accepted one (`afterTimeStep`; the store takes the
 *   step atomically, so of two concurrent uses of one code one wins).
 * - The QR code is made here (uqr, SVG), never by a remote service.
 * - Recovery codes: ten of 80 random bits each (16 Base32 characters in four
 *   groups), shown once; the store keeps only SHA-256(admin, code), and each
 *   works once.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { AdminStore } from './admin-store.ts';

// otplib and uqr load at first use: a server whose admins never use TOTP does not load them (docs/performance.md, footprint).
let otplib: Promise<typeof import('otplib')> | undefined;
const loadOtplib = () => (otplib ??= import('otplib'));
let uqr: Promise<typeof import('uqr')> | undefined;
const loadUqr = () => (uqr ??= import('uqr'));

export const TOTP_PERIOD_S = 30;
export const TOTP_DIGITS = 6;
export const RECOVERY_CODES = 10;

const CODE = /^[0-9]{6}$/;

export async function newTotpSecret(): Promise<string> {
  return (await loadOtplib()).generateSecret({ length: 20 });
}

/** The otpauth:// URI an authenticator app reads (from the QR code or typed in). */
export async function totpUri(issuer: string, admin: string, secret: string): Promise<string> {
  return (await loadOtplib()).generateURI({ issuer, label: admin, secret, digits: TOTP_DIGITS, period: TOTP_PERIOD_S });
}

/** The URI as an SVG QR code in a data: URL (the console's CSP allows data: images). */
export async function qrDataUrl(text: string): Promise<string> {
  const svg = (await loadUqr()).renderSVG(text, { ecc: 'M', border: 2, pixelSize: 6 });
  return 'data:image/svg+xml;base64,' + Buffer.from(svg).toString('base64');
}

/** The time step of a moment (epoch milliseconds). */
export function totpStep(nowMs: number): number {
  return Math.floor(nowMs / 1000 / TOTP_PERIOD_S);
}

/**
 * The time step a code belongs to when it is valid for `secret` within ±1
 * step of `nowMs` and after `afterStep` (0: any); undefined otherwise.
 */
export async function checkTotp(secret: string, code: string, nowMs: number, afterStep: number): Promise<number | undefined> {
  if (!CODE.test(code)) return undefined;
  const epoch = Math.floor(nowMs / 1000);
  const { verify } = await loadOtplib();
  try {
    const result = await verify({
      secret,
      token: code,
      epoch,
      period: TOTP_PERIOD_S,
      digits: TOTP_DIGITS,
      epochTolerance: TOTP_PERIOD_S,
      ...(afterStep > 0 ? { afterTimeStep: afterStep } : {}),
    });
    return result.valid && 'timeStep' in result ? result.timeStep : undefined;
  } catch {
    // otplib refuses an afterTimeStep beyond the window (the clock went back past the last accepted step): no code passes.
    return undefined;
  }
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** Ten new recovery codes, e.g. `K7QF-2M9X-PA4D-ZT3H`. */
export function newRecoveryCodes(): string[] {
  return Array.from({ length: RECOVERY_CODES }, () => {
    const bits = BigInt('0x' + randomBytes(10).toString('hex'));
    let text = '';
    for (let i = 15; i >= 0; i--) text += BASE32[Number((bits >> BigInt(5 * i)) & 31n)];
    return text.match(/.{4}/g)!.join('-');
  });
}

/** A typed recovery code in its canonical form (case, spaces and dashes ignored), or undefined when it cannot be one. */
export function normalRecoveryCode(input: string): string | undefined {
  const bare = input.toUpperCase().replace(/[\s-]/g, '');
  return /^[A-Z2-7]{16}$/.test(bare) ? bare : undefined;
}

/** What the store keeps of a recovery code: SHA-256 over the admin's name and the code. */
export function recoveryCodeHash(admin: string, code: string): string {
  return createHash('sha256').update(`herald-recovery\0${admin}\0${normalRecoveryCode(code) ?? ''}`).digest('hex');
}

export interface ResetOutcome {
  /** Whether a TOTP secret (confirmed or pending) was removed. */
  readonly totp: boolean;
  /** Sessions of the admin ended. */
  readonly sessions: number;
  /** Passkeys of the admin removed. */
  readonly passkeys: number;
}

/**
 * Removes every second factor of an admin (TOTP secret, recovery codes,
 * passkeys) and ends the admin's sessions: the console's and the CLI's
 * reset-mfa, for an admin who lost the device.
 */
export async function resetMfa(store: AdminStore, name: string): Promise<ResetOutcome> {
  const totp = await store.deleteTotp(name);
  let passkeys = 0;
  for (const passkey of await store.listPasskeys(name)) if (await store.deletePasskey(name, passkey.id)) passkeys++;
  const sessions = await store.deleteSessionsOf(name);
  return { totp, sessions, passkeys };
}
