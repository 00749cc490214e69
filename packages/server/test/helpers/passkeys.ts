/**
 * Passkey test helpers: a software authenticator that makes the WebAuthn
 * answers a real one would, and the ones no real one can (another RP id
 * hash, missing UP/UV flags, a counter of the test's choice), signed with
 * a P-256 key of its own; and a console client on `localhost` (browsers
 * refuse IP addresses as RP ids) with a free port known before the server
 * starts, so the passkey origins can name it.
 *
 * Structures are encoded with @simplewebauthn/server's CBOR helper; the
 * server under test decodes and verifies them with the same library, as it
 * does a browser's.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { createServer } from 'node:net';
import { isoCBOR } from '@simplewebauthn/server/helpers';
import { call, PASSWORD, type Answer } from './console.ts';

export const FLAG_UP = 0x01;
export const FLAG_UV = 0x04;
const FLAG_AT = 0x40;

/** A TCP port that was free a moment ago (the server binds it right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function b64url(data: Buffer | Uint8Array | string): string {
  return Buffer.from(data).toString('base64url');
}

function sha256(data: Buffer | string): Buffer {
  return createHash('sha256').update(data).digest();
}

export interface AssertionOptions {
  readonly challenge: string;
  readonly origin: string;
  /** The RP id whose SHA-256 goes in the authenticator data. */
  readonly rpId: string;
  /** Default UP | UV. */
  readonly flags?: number;
  /** Default: one more than the last. */
  readonly counter?: number;
  /** Default: the user handle given at registration; null leaves it out. */
  readonly userHandle?: string | null;
}

/** One credential of a software authenticator (ES256). */
export class SoftCredential {
  readonly id = b64url(randomBytes(32));
  readonly #privateKey: KeyObject;
  readonly #publicKey: KeyObject;
  counter = 0;
  userHandle: string | undefined;

  constructor() {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.#privateKey = privateKey;
    this.#publicKey = publicKey;
  }

  #cosePublicKey(): Uint8Array {
    const jwk = this.#publicKey.export({ format: 'jwk' });
    return isoCBOR.encode(
      new Map<number, number | Uint8Array>([
        [1, 2],
        [3, -7],
        [-1, 1],
        [-2, new Uint8Array(Buffer.from(jwk.x!, 'base64url'))],
        [-3, new Uint8Array(Buffer.from(jwk.y!, 'base64url'))],
      ]),
    );
  }

  #clientData(type: string, challenge: string, origin: string): Buffer {
    return Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin: false }));
  }

  /** The answer to creation options (attestation "none"), as @simplewebauthn/browser's startRegistration gives it. */
  registration(options: { challenge: string; user: { id: string } }, origin: string, rpId: string, flags = FLAG_UP | FLAG_UV): Record<string, unknown> {
    this.userHandle = options.user.id;
    const rawId = Buffer.from(this.id, 'base64url');
    const idLength = Buffer.alloc(2);
    idLength.writeUInt16BE(rawId.length);
    const authData = Buffer.concat([sha256(rpId), Buffer.from([flags | FLAG_AT]), Buffer.alloc(4), Buffer.alloc(16), idLength, rawId, Buffer.from(this.#cosePublicKey())]);
    const attestationObject = isoCBOR.encode(new Map<string, unknown>([['fmt', 'none'], ['attStmt', new Map()], ['authData', new Uint8Array(authData)]]) as Map<string, never>);
    return {
      id: this.id,
      rawId: this.id,
      type: 'public-key',
      response: {
        clientDataJSON: b64url(this.#clientData('webauthn.create', options.challenge, origin)),
        attestationObject: b64url(attestationObject),
        transports: ['internal'],
      },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    };
  }

  /** The answer to request options, signed; every field may be set wrong on purpose. */
  assertion(o: AssertionOptions): Record<string, unknown> {
    const counter = o.counter ?? this.counter + 1;
    if (counter > this.counter) this.counter = counter;
    const count = Buffer.alloc(4);
    count.writeUInt32BE(counter);
    const authData = Buffer.concat([sha256(o.rpId), Buffer.from([o.flags ?? FLAG_UP | FLAG_UV]), count]);
    const clientData = this.#clientData('webauthn.get', o.challenge, o.origin);
    const signature = sign('sha256', Buffer.concat([authData, sha256(clientData)]), this.#privateKey);
    const userHandle = o.userHandle === undefined ? this.userHandle : o.userHandle;
    return {
      id: this.id,
      rawId: this.id,
      type: 'public-key',
      response: {
        clientDataJSON: b64url(clientData),
        authenticatorData: b64url(authData),
        signature: b64url(signature),
        ...(userHandle === null || userHandle === undefined ? {} : { userHandle }),
      },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    };
  }
}

/** A console client on `http://localhost:PORT`: Host and Origin say localhost, cookies kept by name. */
export class LocalhostConsole {
  readonly port: number;
  readonly origin: string;
  readonly cookies = new Map<string, string>();
  csrf: string | undefined;

  constructor(port: number, origin = `http://localhost:${port}`) {
    this.port = port;
    this.origin = origin;
  }

  headers(): Record<string, string> {
    const cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    return {
      host: new URL(this.origin).host,
      origin: this.origin,
      ...(cookie === '' ? {} : { cookie }),
      ...(this.csrf === undefined ? {} : { 'x-csrf-token': this.csrf }),
    };
  }

  #keep(answer: Answer): Answer {
    for (const set of answer.headers['set-cookie'] ?? []) {
      const [pair, ...attributes] = set.split(';');
      const [name, value] = pair!.split('=') as [string, string];
      const expired = attributes.some((a) => /^\s*max-age=0$/i.test(a) || /^\s*expires=Thu, 01 Jan 1970/i.test(a));
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    if (answer.status === 200 && typeof answer.body === 'object' && answer.body !== null && typeof answer.body.csrf === 'string') this.csrf = answer.body.csrf;
    return answer;
  }

  async request(method: string, path: string, body?: unknown): Promise<Answer> {
    return this.#keep(await call(this.port, `/console${path}`, { method, headers: this.headers(), ...(body === undefined ? {} : { body }) }));
  }

  post(path: string, body: unknown = {}): Promise<Answer> {
    return this.request('POST', path, body);
  }

  get(path: string): Promise<Answer> {
    return this.request('GET', path);
  }

  login(name: string, password = PASSWORD): Promise<Answer> {
    return this.post('/api/login', { name, password });
  }

  /** Password, then (when the session waits for it) `credential` as the second factor. */
  async loginWith(name: string, credential: SoftCredential, rpId: string): Promise<Answer> {
    const first = await this.login(name);
    if (first.status !== 200 || first.body.stage !== 'second_factor') return first;
    const options = await this.post('/api/login/passkey/options');
    if (options.status !== 200) return options;
    return this.post('/api/login/passkey/verify', { response: credential.assertion({ challenge: options.body.options.challenge, origin: this.origin, rpId }) });
  }

  /** Registers `credential` for the signed-in admin through the console's endpoints. */
  async register(credential: SoftCredential, rpId: string, name?: string): Promise<Answer> {
    const options = await this.post('/api/passkeys/register/options');
    if (options.status !== 200) return options;
    return this.post('/api/passkeys/register/verify', { ...(name === undefined ? {} : { name }), response: credential.registration(options.body.options, this.origin, rpId) });
  }
}
