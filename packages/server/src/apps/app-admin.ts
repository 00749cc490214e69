/**
 * Apps as the console and `herald apps` change them: the config's apps
 * (read only: change them in the config file) plus the store's
 * (app-store.ts). Ids and keys are unique across both; secrets and keys are
 * generated with a CSPRNG; a secret is answered only by `create` and
 * `rotateSecret` (shown once), never by a view.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { Value } from '@sinclair/typebox/value';
import type { AppLimits, Config } from '../config/schema.ts';
import { defaultAppId } from './apps.ts';
import { AppSettingsChangeSchema, AppSettingsSchema, type AppRecord, type AppSettings, type AppSettingsChange, type AppStore } from './app-store.ts';

export const APP_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const APP_KEY_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
/** Fields a create may give beside the settings. */
const CREATE_ONLY = ['id', 'key'] as const;

export interface AppWebhookView {
  readonly url: string;
  readonly events: readonly string[];
  readonly channelPrefix?: string | undefined;
}

/** An app as the console and the CLI show it: everything but the secret. */
export interface AppView {
  readonly id: string;
  readonly key: string;
  readonly name: string;
  readonly enabled: boolean;
  readonly clientEvents: boolean;
  readonly userAuthentication: boolean;
  readonly subscriptionCount: boolean;
  /** Null: the server's cors.origins. */
  readonly allowedOrigins: readonly string[] | null;
  readonly limits: AppLimits;
  readonly webhooks: readonly AppWebhookView[];
  /** `config`: in the config file or the environment (change it there); `store`: made by the console or `herald apps`. */
  readonly source: 'config' | 'store';
  /** Whether its channels are the native protocol's unprefixed ones (only a config app can be). */
  readonly default: boolean;
  /** Epoch ms; null for config apps. */
  readonly createdAt: number | null;
  readonly updatedAt: number | null;
}

/** A refusal, with the error code the console answers (the CLI prints the message). */
export class AppActionError extends Error {
  readonly code: 'invalid_input' | 'not_found';
  constructor(code: 'invalid_input' | 'not_found', message: string) {
    super(message);
    this.code = code;
  }
}

/** A new app secret: 32 hex characters (128 bits) from the CSPRNG. */
export function generateSecret(): string {
  return randomBytes(16).toString('hex');
}

/** A new app key: 20 hex characters, as Pusher's. */
export function generateKey(): string {
  return randomBytes(10).toString('hex');
}

/** A new numeric app id (as Pusher's), none of `taken`. */
export function generateId(taken: ReadonlySet<string>): string {
  for (;;) {
    const id = String(randomInt(1_000_000, 10_000_000));
    if (!taken.has(id)) return id;
  }
}

function problem(errors: Iterable<{ path: string; message: string }>): string | undefined {
  // The path may hold a name the caller made up (an unknown field): cut, so answers and the audit log stay small.
  for (const error of errors) return `${error.path === '' ? 'body' : error.path.slice(1, 101)}: ${error.message}`;
  return undefined;
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new AppActionError('invalid_input', `${what} must be a JSON object`);
  return value as Record<string, unknown>;
}

/**
 * The settings of a change, checked against the schema; `limits` given in
 * part are completed from `current` (a change of one limit keeps the others).
 */
export function parseSettingsChange(value: unknown, current?: AppSettings): AppSettingsChange {
  const raw = { ...object(value, 'the change') };
  if (raw['limits'] !== undefined && typeof raw['limits'] === 'object' && raw['limits'] !== null && !Array.isArray(raw['limits'])) {
    raw['limits'] = { ...current?.limits, ...(raw['limits'] as Record<string, unknown>) };
  }
  const change = Value.Default(AppSettingsChangeSchema, Value.Clone(raw));
  const wrong = problem(Value.Errors(AppSettingsChangeSchema, change));
  if (wrong !== undefined) throw new AppActionError('invalid_input', wrong);
  return change as AppSettingsChange;
}

function settingsOf(given: Record<string, unknown>, id: string): AppSettings {
  const settings = Value.Default(AppSettingsSchema, Value.Clone({ name: id, ...given }));
  const wrong = problem(Value.Errors(AppSettingsSchema, settings));
  if (wrong !== undefined) throw new AppActionError('invalid_input', wrong);
  return settings as AppSettings;
}

export interface AppAdminOptions {
  readonly config: Config;
  readonly store: AppStore;
  readonly now?: () => number;
  /** Tells every node an app changed (the console: the `apps_changed` control command; the CLI: apps/apps-notice.ts). Without it nodes see the change at their next poll. */
  readonly announce?: (id: string) => Promise<void>;
}

export class AppAdmin {
  readonly #config: Config;
  readonly #store: AppStore;
  readonly #now: () => number;
  readonly #announce: (id: string) => Promise<void>;

  constructor(options: AppAdminOptions) {
    this.#config = options.config;
    this.#store = options.store;
    this.#now = options.now ?? Date.now;
    this.#announce = options.announce ?? (async () => {});
  }

  /** Config apps first (in config order), then stored apps by id. */
  async list(): Promise<AppView[]> {
    const stored = await this.#store.list();
    const configIds = new Set(this.#config.apps.list.map((a) => a.id));
    return [...this.#configViews(), ...stored.filter((r) => !configIds.has(r.id)).map((r) => this.#view(r))];
  }

  async get(id: string): Promise<AppView> {
    const fromConfig = this.#configViews().find((a) => a.id === id);
    if (fromConfig !== undefined) return fromConfig;
    const record = await this.#store.get(id);
    if (record === undefined) throw new AppActionError('not_found', `no app with id "${id}"`);
    return this.#view(record);
  }

  /** A new stored app; its secret is answered here once. `input`: optional id and key, and settings. */
  async create(input: unknown): Promise<{ app: AppView; secret: string }> {
    const raw = { ...object(input, 'the app') };
    const id = raw['id'];
    const key = raw['key'];
    for (const field of CREATE_ONLY) delete raw[field];
    if (id !== undefined && (typeof id !== 'string' || !APP_ID_PATTERN.test(id))) throw new AppActionError('invalid_input', 'id: 1-64 characters of A-Z a-z 0-9 _ -');
    if (key !== undefined && (typeof key !== 'string' || !APP_KEY_PATTERN.test(key))) throw new AppActionError('invalid_input', 'key: 1-128 characters of A-Z a-z 0-9 _ -');
    const stored = await this.#store.list();
    const ids = new Set([...this.#config.apps.list.map((a) => a.id), ...stored.map((a) => a.id)]);
    const keys = new Set([...this.#config.apps.list.map((a) => a.key), ...stored.map((a) => a.key)]);
    const appId = (id as string | undefined) ?? generateId(ids);
    const appKey = (key as string | undefined) ?? generateKey();
    if (ids.has(appId)) throw new AppActionError('invalid_input', `id: an app with id "${appId}" exists${this.#isConfig(appId) ? ' (in the config)' : ''}`);
    if (keys.has(appKey)) throw new AppActionError('invalid_input', `key: another app has the key "${appKey}"`);
    const now = this.#now();
    const secret = generateSecret();
    const record: AppRecord = { ...settingsOf(raw, appId), id: appId, key: appKey, secret, createdAt: now, updatedAt: now };
    const outcome = await this.#store.create(record);
    if (outcome === 'id_taken') throw new AppActionError('invalid_input', `id: an app with id "${appId}" exists`);
    if (outcome === 'key_taken') throw new AppActionError('invalid_input', `key: another app has the key "${appKey}"`);
    await this.#tell(appId);
    return { app: this.#view(record), secret };
  }

  async update(id: string, change: unknown): Promise<AppView> {
    this.#refuseConfig(id);
    const current = await this.#store.get(id);
    if (current === undefined) throw new AppActionError('not_found', `no app with id "${id}"`);
    const settings = parseSettingsChange(change, current);
    const updated = await this.#store.update(id, { settings }, this.#now());
    if (updated === undefined) throw new AppActionError('not_found', `no app with id "${id}"`);
    await this.#tell(id);
    return this.#view(updated);
  }

  /** A new secret, answered here once; the old one is refused from the next reload on (signatures made with it fail). */
  async rotateSecret(id: string): Promise<{ app: AppView; secret: string }> {
    this.#refuseConfig(id);
    const secret = generateSecret();
    const updated = await this.#store.update(id, { secret }, this.#now());
    if (updated === undefined) throw new AppActionError('not_found', `no app with id "${id}"`);
    await this.#tell(id);
    return { app: this.#view(updated), secret };
  }

  async delete(id: string): Promise<AppView> {
    this.#refuseConfig(id);
    const current = await this.#store.get(id);
    if (current === undefined || !(await this.#store.delete(id))) throw new AppActionError('not_found', `no app with id "${id}"`);
    await this.#tell(id);
    return this.#view(current);
  }

  /** The change is stored: a failed announcement only delays it to the nodes' next poll. */
  async #tell(id: string): Promise<void> {
    await this.#announce(id).catch(() => undefined);
  }

  #isConfig(id: string): boolean {
    return this.#config.apps.list.some((a) => a.id === id);
  }

  #refuseConfig(id: string): void {
    if (this.#isConfig(id)) throw new AppActionError('invalid_input', `app "${id}" is defined in the config (or the environment): change it there`);
  }

  #configViews(): AppView[] {
    const defaultId = defaultAppId(this.#config);
    return this.#config.apps.list.map((entry) => ({
      id: entry.id,
      key: entry.key,
      name: entry.name ?? entry.id,
      enabled: entry.enabled,
      clientEvents: entry.clientEvents,
      userAuthentication: entry.userAuthentication,
      subscriptionCount: entry.subscriptionCount,
      allowedOrigins: entry.allowedOrigins ?? null,
      limits: entry.limits,
      webhooks: entry.webhooks,
      source: 'config',
      default: entry.id === defaultId,
      createdAt: null,
      updatedAt: null,
    }));
  }

  #view(record: AppRecord): AppView {
    return {
      id: record.id,
      key: record.key,
      name: record.name,
      enabled: record.enabled,
      clientEvents: record.clientEvents,
      userAuthentication: record.userAuthentication,
      subscriptionCount: record.subscriptionCount,
      allowedOrigins: record.allowedOrigins,
      limits: record.limits,
      webhooks: record.webhooks,
      source: 'store',
      default: false,
      createdAt: record.createdAt,
      updatedAt: record.updatedAt,
    };
  }
}
