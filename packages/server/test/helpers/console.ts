/**
 * Console test helpers: admins created in a state file the way `herald
 * admin create` does (the file opened as a tool beside the running server),
 * and raw HTTP requests to the internal listener with full control of
 * Origin, Host, cookies and bodies.
 */
import { createHmac } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';
import type { AdminRole } from '../../src/console/admin-store.ts';
import { startHerald, type TestHerald } from './herald.ts';
import { startPusherHerald, type PusherHerald, type TestApp } from './pusher-socket.ts';

export const PASSWORD = 'correct horse battery staple';

export interface ConsoleHerald {
  readonly h: TestHerald;
  readonly stateDir: string;
  /** The internal listener's port (the console). */
  readonly port: number;
  close(): Promise<void>;
}

/** A Herald with a state directory of its own and `admin.console` merged from `consoleConfig`; close() removes the directory. */
export async function startConsoleHerald(consoleConfig: Record<string, unknown> = {}): Promise<ConsoleHerald> {
  const stateDir = mkdtempSync(join(tmpdir(), 'herald-console-'));
  const h = await startHerald({ stateDir, admin: { console: consoleConfig } });
  return {
    h,
    stateDir,
    port: h.server.adminPort,
    async close() {
      await h.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Creates an admin in the sqlite state file of `stateDir` (a running server sees it at once). */
export async function createAdmin(stateDir: string, name: string, role: AdminRole, password = PASSWORD): Promise<void> {
  const file = openSqliteStore({ stateDir, claim: false, busyTimeoutMs: 5000 });
  try {
    const store = new SqliteAdminStore(file.db);
    const created = await store.createAdmin({ name, role, passwordHash: await new PasswordHasher().hash(password), now: Date.now() });
    if (created === undefined) throw new Error(`admin ${name} exists`);
  } finally {
    file.close();
  }
}

export interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
  readonly body: any;
}

export interface RequestOptions {
  readonly method?: string;
  readonly headers?: Record<string, string>;
  /** An object is sent as JSON; a string or Buffer as it is. */
  readonly body?: unknown;
  /** The client's own address (any of 127.0.0.0/8 on loopback): another client address for the server. */
  readonly localAddress?: string;
}

/** One request on a fresh connection (in cluster mode: any worker). */
export function call(port: number, path: string, options: RequestOptions = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers };
    let payload: Buffer | undefined;
    if (options.body !== undefined) {
      payload = Buffer.isBuffer(options.body) ? options.body : Buffer.from(typeof options.body === 'string' ? options.body : JSON.stringify(options.body));
      headers['content-type'] ??= 'application/json';
      headers['content-length'] = String(payload.length);
    }
    const req = httpRequest({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers, agent: false, ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** A browser-like console client: the console's own Origin, the session cookie, the CSRF token. */
export class ConsoleClient {
  readonly port: number;
  readonly base: string;
  readonly origin: string;
  cookie: string | undefined;
  csrf: string | undefined;

  constructor(port: number, base = '/console') {
    this.port = port;
    this.base = base;
    this.origin = `http://127.0.0.1:${port}`;
  }

  /** The session id from the last Set-Cookie. */
  get sessionId(): string | undefined {
    return this.cookie?.split('=')[1];
  }

  async login(name: string, password = PASSWORD): Promise<Answer> {
    const answer = await this.post('/api/login', { name, password });
    const set = sessionCookie(answer);
    if (set !== undefined) this.cookie = set.split(';')[0];
    if (answer.status === 200) this.csrf = answer.body.csrf;
    return answer;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { origin: this.origin, ...(this.cookie === undefined ? {} : { cookie: this.cookie }), ...(this.csrf === undefined ? {} : { 'x-csrf-token': this.csrf }), ...extra };
  }

  /** Takes the session cookie and CSRF token of a sign-in step's answer (as the browser and the app do). */
  adopt(answer: Answer): Answer {
    const set = sessionCookie(answer);
    if (set !== undefined) this.cookie = set.split(';')[0];
    if (answer.status === 200 && typeof answer.body?.csrf === 'string') this.csrf = answer.body.csrf;
    return answer;
  }

  /** A sign-in step (second factor, enrolment): POST, then adopt its cookie and token. */
  async step(path: string, body?: unknown): Promise<Answer> {
    return this.adopt(await this.post(path, body));
  }

  delete(path: string, body?: unknown, extra: Record<string, string> = {}): Promise<Answer> {
    return call(this.port, this.base + path, { method: 'DELETE', headers: this.headers(extra), ...(body === undefined ? {} : { body }) });
  }

  post(path: string, body?: unknown, extra: Record<string, string> = {}): Promise<Answer> {
    return call(this.port, this.base + path, { method: 'POST', headers: this.headers(extra), ...(body === undefined ? {} : { body }) });
  }

  get(path: string, extra: Record<string, string> = {}): Promise<Answer> {
    return call(this.port, this.base + path, { headers: this.headers(extra) });
  }
}

/** The Set-Cookie of the session cookie in an answer, if any. */
export function sessionCookie(answer: Answer): string | undefined {
  const set = answer.headers['set-cookie'] ?? [];
  return set.find((c) => c.startsWith('__Host-herald_console='));
}

/**
 * RFC 6238 TOTP (SHA-1, 6 digits, 30 s) written out here, apart from the
 * server's otplib, so a test checks the server against the RFC rather than
 * against itself. `step` is the time step (floor(unix seconds / 30)).
 */
export function totpAt(secret: string, step: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of secret.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const key = Buffer.from((bits.match(/.{8}/g) ?? []).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1]! & 0xf;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

/** The current TOTP time step. */
export function stepNow(): number {
  return Math.floor(Date.now() / 30_000);
}

/** Waits, when needed, until at least `margin` ms remain in the current step, so that codes of steps relative to it stay in the server's window during a few requests. */
export async function awayFromStepEdge(marginMs = 8000): Promise<void> {
  while (30_000 - (Date.now() % 30_000) < marginMs) await new Promise((resolve) => setTimeout(resolve, 250));
}

/**
 * A Pusher-apps Herald with the console on and three signed-in admins
 * (owner, operator, viewer: the owner first, since the first admin of a
 * store is made an owner whatever it asks). `close` stops it and removes
 * its state directory.
 */
export async function startAppsConsole(
  apps: readonly TestApp[],
): Promise<{ h: PusherHerald; consoles: Record<'viewer' | 'operator' | 'owner', ConsoleClient>; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-apps-console-'));
  const stateDir = join(dir, 'state');
  const h = await startPusherHerald(apps, { stateDir, admin: { console: { enabled: true } } });
  const consoles = {} as Record<'viewer' | 'operator' | 'owner', ConsoleClient>;
  for (const role of ['owner', 'operator', 'viewer'] as const) {
    await createAdmin(stateDir, role, role);
    consoles[role] = new ConsoleClient(h.server.adminPort);
    const login = await consoles[role].login(role);
    if (login.status !== 200) throw new Error(`console login of ${role} answered ${login.status}`);
  }
  return {
    h,
    consoles,
    async close() {
      await h.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
