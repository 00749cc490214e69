/**
 * Admin passwords: argon2id through Node's own `crypto.argon2` (no native
 * addon), stored as a PHC string that carries its parameters
 * (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so the parameters can be
 * raised later: a login whose hash has other parameters than
 * PASSWORD_PARAMS is rehashed (`needsRehash`).
 *
 * Guarantees:
 * - Parameters are OWASP's Password Storage Cheat Sheet's first choice for
 *   argon2id: 19 MiB of memory, 2 passes, parallelism 1; a 16-byte random
 *   salt and a 32-byte tag.
 * - Length is checked before any hashing: MIN_PASSWORD_CHARS..MAX_PASSWORD_CHARS
 *   characters (and at most MAX_PASSWORD_BYTES of UTF-8); a longer input is
 *   refused at once.
 * - Hashes are compared with `timingSafeEqual`. `verifyUnknown` does the
 *   same work as a wrong password (a hash with the current parameters of a
 *   random password made once), so an unknown name costs what a known one
 *   does.
 * - At most `concurrency` hashes run at once (they use libuv's thread pool
 *   and 19 MiB each); callers beyond `queue` waiting get PasswordBusyError
 *   instead of piling up memory.
 */
import { argon2, randomBytes, timingSafeEqual } from 'node:crypto';

export interface Argon2Params {
  /** KiB */
  readonly memory: number;
  readonly passes: number;
  readonly parallelism: number;
}

/** OWASP Password Storage Cheat Sheet (argon2id, first configuration). */
export const PASSWORD_PARAMS: Argon2Params = { memory: 19456, passes: 2, parallelism: 1 };

export const MIN_PASSWORD_CHARS = 12;
export const MAX_PASSWORD_CHARS = 256;
export const MAX_PASSWORD_BYTES = 1024;
const SALT_BYTES = 16;
const TAG_BYTES = 32;

const PHC = /^\$argon2id\$v=19\$m=([0-9]{1,7}),t=([0-9]{1,3}),p=([0-9]{1,3})\$([A-Za-z0-9+/]{11,88})\$([A-Za-z0-9+/]{22,172})$/;

export class PasswordBusyError extends Error {
  constructor() {
    super('too many password checks at once');
    this.name = 'PasswordBusyError';
  }
}

/** Why a new password is refused, or undefined when it is acceptable. */
export function passwordProblem(password: string): string | undefined {
  const chars = [...password].length;
  if (chars < MIN_PASSWORD_CHARS) return `a password needs at least ${MIN_PASSWORD_CHARS} characters`;
  if (chars > MAX_PASSWORD_CHARS || Buffer.byteLength(password) > MAX_PASSWORD_BYTES) return `a password has at most ${MAX_PASSWORD_CHARS} characters (${MAX_PASSWORD_BYTES} bytes)`;
  return undefined;
}

/** Whether a password offered at login is worth hashing at all (the length limits, cheaply). */
export function passwordInBounds(password: string): boolean {
  return password.length <= MAX_PASSWORD_CHARS * 2 && Buffer.byteLength(password) <= MAX_PASSWORD_BYTES && [...password].length <= MAX_PASSWORD_CHARS;
}

function b64(buffer: Buffer): string {
  return buffer.toString('base64').replace(/=+$/, '');
}

function derive(password: string, salt: Buffer, params: Argon2Params): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    argon2('argon2id', { message: password, nonce: salt, parallelism: params.parallelism, tagLength: TAG_BYTES, memory: params.memory, passes: params.passes }, (error, key) => {
      if (error !== null) reject(error);
      else resolve(key);
    });
  });
}

function parse(encoded: string): { params: Argon2Params; salt: Buffer; hash: Buffer } | undefined {
  const match = PHC.exec(encoded);
  if (match === null) return undefined;
  const params = { memory: Number(match[1]), passes: Number(match[2]), parallelism: Number(match[3]) };
  if (params.memory < 8 * params.parallelism || params.passes < 1 || params.parallelism < 1 || params.memory > 4 * 1024 * 1024) return undefined;
  return { params, salt: Buffer.from(match[4]!, 'base64'), hash: Buffer.from(match[5]!, 'base64') };
}

export interface PasswordHasherOptions {
  readonly params?: Argon2Params;
  /** Hashes running at once (default 2). */
  readonly concurrency?: number;
  /** Callers waiting beyond those (default 64); more get PasswordBusyError. */
  readonly queue?: number;
}

export class PasswordHasher {
  readonly params: Argon2Params;
  readonly #concurrency: number;
  readonly #queueLimit: number;
  #running = 0;
  readonly #waiting: (() => void)[] = [];
  #dummy: Promise<string> | undefined;

  constructor(options: PasswordHasherOptions = {}) {
    this.params = options.params ?? PASSWORD_PARAMS;
    this.#concurrency = options.concurrency ?? 2;
    this.#queueLimit = options.queue ?? 64;
  }

  async #slot<T>(run: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#concurrency) {
      if (this.#waiting.length >= this.#queueLimit) throw new PasswordBusyError();
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#running++;
    }
    try {
      return await run();
    } finally {
      const next = this.#waiting.shift();
      if (next === undefined) this.#running--;
      else next();
    }
  }

  /** A PHC string for a new password (check passwordProblem first). */
  hash(password: string): Promise<string> {
    return this.#slot(async () => {
      const salt = randomBytes(SALT_BYTES);
      const p = this.params;
      const tag = await derive(password, salt, p);
      return `$argon2id$v=19$m=${p.memory},t=${p.passes},p=${p.parallelism}$${b64(salt)}$${b64(tag)}`;
    });
  }

  /** Whether `password` matches `encoded`, and whether the hash should be redone with the current parameters. */
  verify(password: string, encoded: string): Promise<{ ok: boolean; needsRehash: boolean }> {
    return this.#slot(async () => {
      const parsed = parse(encoded);
      if (parsed === undefined || !passwordInBounds(password)) {
        // Same work as a real check, then no.
        await derive(password.slice(0, MAX_PASSWORD_CHARS), randomBytes(SALT_BYTES), this.params);
        return { ok: false, needsRehash: false };
      }
      const tag = await derive(password, parsed.salt, parsed.params);
      const ok = tag.length === parsed.hash.length && timingSafeEqual(tag, parsed.hash);
      const p = parsed.params;
      const needsRehash = ok && (p.memory !== this.params.memory || p.passes !== this.params.passes || p.parallelism !== this.params.parallelism || parsed.hash.length !== TAG_BYTES);
      return { ok, needsRehash };
    });
  }

  /** Makes the stand-in hash of verifyUnknown now (at start), so that no login pays for it. */
  warm(): Promise<string> {
    this.#dummy ??= this.hash(randomBytes(24).toString('base64url'));
    return this.#dummy;
  }

  /** The work of a wrong password, for a name that has no account (always false). */
  async verifyUnknown(password: string): Promise<false> {
    const dummy = await this.warm();
    await this.verify(password, dummy);
    return false;
  }
}

/** A password for `herald admin create` without one: 24 random characters (144 bits). */
export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}
