/**
 * The native protocol per app (docs/pusher.md, "Channels shared with the
 * native protocol"): every native transport path also exists under
 * `/apps/{appId}` (`/apps/{id}/connection/websocket`, `…/sse`,
 * `…/poll/open`, `…/poll`, `…/command`, `…/close`). Unprefixed paths and
 * `/apps/{defaultId}/…` are the default app (the server's own channels and
 * tokens). On another app's paths the connection's channels are the app's
 * (appChannel) and its tokens are HS256 JWTs signed with the app's secret:
 * the server's auth.* settings do not apply there.
 */
import type { ApiErrorCode } from '@herald/protocol';
import { createJwtVerifier, type TokenVerifier } from '../auth/jwt.ts';
import type { App, AppRegistry } from '../apps/apps.ts';

/** What a connection opened on a non-default app's path carries (Client.scope). */
export interface AppScope {
  readonly app: App;
  /** Verifies connection and subscription tokens with the app's secret (HS256 only). */
  readonly tokens: TokenVerifier;
}

export type AppPathMatch =
  /** `rest` is the unprefixed path; `scope` undefined for the default app. */
  | { readonly rest: string; readonly scope: AppScope | undefined; readonly refused?: undefined }
  | { readonly refused: ApiErrorCode; readonly rest: string };

const PREFIX = '/apps/';
const CONNECTION = '/connection/';
/** Longest app id looked up (ids are short; a longer segment is simply unknown). */
const MAX_ID_CHARS = 128;

export interface AppPathOptions {
  /** auth.leewayMs. */
  readonly leewayMs: number;
  /** limits.maxJsonDepth. */
  readonly maxJsonDepth: number;
}

export class AppPaths {
  readonly #apps: AppRegistry;
  readonly #options: AppPathOptions;
  /**
   * One verifier per app object: an app is frozen and a changed app (a
   * rotated secret) is a new object, so a changed app gets a new verifier
   * and the old one goes with the old object. Cleared on AppRegistry.onChange.
   */
  #scopes = new WeakMap<App, AppScope>();

  constructor(apps: AppRegistry, options: AppPathOptions) {
    this.#apps = apps;
    this.#options = options;
    apps.onChange(() => {
      this.#scopes = new WeakMap();
    });
  }

  /**
   * The app of a path `/apps/{id}/connection/…`: undefined when `path` is
   * not of that shape (the caller answers as before: 404 or another route),
   * `refused` for an unknown (not_found) or disabled (forbidden) app;
   * `rest` is the unprefixed path.
   */
  match(path: string): AppPathMatch | undefined {
    if (!path.startsWith(PREFIX)) return undefined;
    const slash = path.indexOf('/', PREFIX.length);
    if (slash === -1 || !path.startsWith(CONNECTION, slash)) return undefined;
    const id = path.slice(PREFIX.length, slash);
    const rest = path.slice(slash);
    const app = id.length === 0 || id.length > MAX_ID_CHARS ? undefined : this.#apps.byId(id);
    if (app === undefined) return { refused: 'not_found', rest };
    if (!app.enabled) return { refused: 'forbidden', rest };
    if (app.channelPrefix === '') return { rest, scope: undefined };
    return { rest, scope: this.#scope(app) };
  }

  #scope(app: App): AppScope {
    let scope = this.#scopes.get(app);
    if (scope === undefined) {
      scope = { app, tokens: lazyVerifier(app.secret, this.#options) };
      this.#scopes.set(app, scope);
    }
    return scope;
  }
}

/** The jose-based verifier (auth/jwt.ts) for one app secret, built at its first token. */
function lazyVerifier(secret: string, options: AppPathOptions): TokenVerifier {
  let built: Promise<TokenVerifier> | undefined;
  const verifier = (): Promise<TokenVerifier> =>
    (built ??= createJwtVerifier({ algorithms: ['HS256'], hmacSecret: secret, leewayMs: options.leewayMs, maxJsonDepth: options.maxJsonDepth }));
  return {
    async verifyConnectionToken(token) {
      return (await verifier()).verifyConnectionToken(token);
    },
    async verifySubscriptionToken(token, user, channel) {
      return (await verifier()).verifySubscriptionToken(token, user, channel);
    },
  };
}
