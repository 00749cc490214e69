/**
 * The single configuration schema: types, defaults, validation, the
 * generated `docs/config.md` and the config file's JSON Schema
 * (`docs/config.schema.json`, from `json-schema.ts`) all come from here.
 * Every option carries its description. Durations are milliseconds, sizes
 * bytes.
 */
import { FormatRegistry, Type, type Static, type TSchema } from '@sinclair/typebox';
import { DEFAULT_MAX_JSON_DEPTH } from '@herald/protocol/json';

/** RFC 3339 date-time (what `toISOString()` writes); TypeBox knows no formats until registered. */
const dateTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/i;
if (!FormatRegistry.Has('date-time')) FormatRegistry.Set('date-time', (value) => dateTime.test(value) && !Number.isNaN(Date.parse(value)));

/** Least length of a secret: the HS256 secret and an API key given in the environment. */
export const MIN_SECRET_CHARS = 32;

const Ms = (def: number, description: string, minimum = 1) =>
  Type.Integer({ default: def, minimum, maximum: 2 ** 31 - 1, description });

export const NamespaceOptions = Type.Object(
  {
    historySize: Type.Integer({
      default: 300,
      minimum: 0,
      maximum: 100000,
      description: 'Publications kept per channel for history and recovery; 0 turns history and positions off.',
    }),
    historyTtlMs: Ms(120000, 'How long a publication stays in history (the recovery window in time).'),
    presence: Type.Boolean({ default: true, description: 'Track who is subscribed (presence and presence_stats).' }),
    joinLeave: Type.Boolean({ default: false, description: 'Send join and leave pushes to subscribers.' }),
    clientPublish: Type.Boolean({ default: false, description: 'Allow connected clients to publish into channels of this namespace.' }),
    private: Type.Boolean({
      default: false,
      description: 'Subscribing needs a subscription token (JWT with `channel` and the connection\'s `sub`) in the subscribe command.',
    }),
    allowAnonymous: Type.Boolean({
      default: false,
      description: 'Allow connections without a token (user id "") to subscribe to this namespace.',
    }),
    writeDelayMs: Type.Integer({
      default: 0,
      minimum: 0,
      maximum: 1000,
      description:
        'Clients that announced batched frames receive this namespace\'s publications after up to this delay, gathered into fewer, larger writes: less server CPU for more latency. 0 writes at once (a backlog is still batched).',
    }),
    conflation: Type.Object(
      {
        enabled: Type.Boolean({
          default: false,
          description:
            'Latest-value channels: a subscriber that falls behind gets only the newest publication per key instead of the backlog, and is never cut as slow for it (docs/protocol.md, "Conflation").',
        }),
        key: Type.Optional(
          Type.String({
            minLength: 1,
            maxLength: 64,
            description: 'Top-level field of the publication data whose value is the conflation key; unset: one key for the whole channel.',
          }),
        ),
        maxKeys: Type.Integer({
          default: 1024,
          minimum: 1,
          maximum: 65536,
          description: 'Most keys held per connection and channel while it is behind; beyond it the oldest pending publication is written out.',
        }),
        lagBytes: Type.Integer({
          default: 65536,
          minimum: 0,
          maximum: 1073741824,
          description: 'Bytes queued to a connection beyond which it is behind: its publications on this namespace are conflated until it drains.',
        }),
      },
      { additionalProperties: false, default: {}, description: 'Conflation of publications for subscribers that fall behind.' },
    ),
  },
  { additionalProperties: false },
);

/** Namespace entries carry no defaults of their own: unset options inherit `channels.defaults`. */
const namespaceOverrides = Object.fromEntries(
  Object.entries(NamespaceOptions.properties).map(([key, schema]) => {
    const { default: _default, ...rest } = schema as TSchema & { default?: unknown };
    return [key, Type.Optional(Type.Unsafe<unknown>(rest))];
  }),
);

export const Namespace = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z0-9_-]{1,64}$', description: 'Namespace name: the part of a channel before the first ":".' }),
    ...namespaceOverrides,
  },
  { additionalProperties: false },
);

export const ApiKey = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 64, description: 'Label for logs and metrics.' }),
    sha256: Type.String({ pattern: '^[0-9a-f]{64}$', description: 'Hex SHA-256 of the key; the key itself is never stored.' }),
    notAfter: Type.Optional(
      Type.String({
        format: 'date-time',
        description: 'ISO 8601 time after which the key is refused: set it on the old key when rotating, for a grace period.',
      }),
    ),
    scopes: Type.Array(Type.Union([Type.Literal('publish'), Type.Literal('read'), Type.Literal('admin')]), {
      minItems: 1,
      uniqueItems: true,
      description: 'publish: publish, broadcast. read: history, presence, channels, info. admin: disconnect, and everything.',
    }),
  },
  { additionalProperties: false },
);

/** One proxy hook: where Herald asks the application (docs/hooks.md). */
const hookTargetProperties = {
  url: Type.String({
    pattern: '^https?://[^\\s]+$',
    maxLength: 2048,
    description: 'Endpoint Herald POSTs the event to (JSON, signed). Only from config: nothing of a client ever goes into it; redirects are not followed.',
  }),
  timeoutMs: Ms(1000, 'Longest wait for the whole answer; then the call has failed and `failure` applies.'),
  maxInFlight: Type.Integer({
    default: 256,
    minimum: 1,
    maximum: 100000,
    description: 'Calls of this hook in flight at once per node (per process); one more fails at once (and `failure` applies) instead of queueing.',
  }),
  failure: Type.Union([Type.Literal('closed'), Type.Literal('open')], {
    default: 'closed',
    description:
      'What a failed call (timeout, backend down, non-2xx, an answer that breaks the schema, in-flight bound reached) means: `closed` refuses (reply error 119, disconnect 3011), `open` goes on as without the hook. rpc always fails closed.',
  }),
  secretFile: Type.Optional(Type.String({ minLength: 1, description: 'File holding the signing secret (HMAC-SHA256, at least 32 characters).' })),
  secretEnv: Type.Optional(
    Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$', description: 'Name of the environment variable holding the signing secret (instead of secretFile).' }),
  ),
  forwardHeaders: Type.Array(Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]{1,64}$' }), {
    default: [],
    maxItems: 32,
    uniqueItems: true,
    description: 'Headers of the client\'s opening request (WebSocket upgrade, SSE GET, long-poll open) forwarded to the hook, by name; nothing else is (`cookie` is never: use forwardCookies).',
  }),
  forwardCookies: Type.Array(Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]{1,64}$' }), {
    default: [],
    maxItems: 32,
    uniqueItems: true,
    description: 'Cookies of the client\'s opening request forwarded to the hook, by name.',
  }),
};

export const HookTarget = Type.Object(hookTargetProperties, { additionalProperties: false });

const hookTarget = (description: string) => Type.Object(hookTargetProperties, { additionalProperties: false, description });
const namespaceHook = (event: string) =>
  Type.Optional(
    Type.Union([hookTarget(`This namespace's ${event} hook.`), Type.Literal(false, { description: `No ${event} hook in this namespace.` })], {
      description: `Replaces hooks.${event} for this namespace; false turns it off here.`,
    }),
  );

export const ConnectHookTarget = Type.Object(
  {
    ...hookTargetProperties,
    withoutToken: Type.Boolean({
      default: false,
      description: 'Connections without a token are asked of the hook too (instead of a token): the answer\'s `user` authenticates them. Off: only connections with a valid token are.',
    }),
  },
  { additionalProperties: false, description: 'Asked when a connection connects: after a valid token (or instead of one with withoutToken); may set the user, the expiry and conn_info, or refuse.' },
);

const JsEvent = Type.Union([Type.Literal('connect'), Type.Literal('subscribe'), Type.Literal('publish'), Type.Literal('rpc')]);
const JsNamespacedEvent = Type.Union([Type.Literal('subscribe'), Type.Literal('publish'), Type.Literal('rpc')]);

/** JavaScript hooks: the operator's file run in QuickJS (WASM) in sandbox processes (docs/hooks.md, "JavaScript hooks"). */
export const JavascriptHooksSchema = Type.Object(
  {
    file: Type.String({
      minLength: 1,
      maxLength: 4096,
      description: 'The hook file: an ES module exporting onConnect, onSubscribe, onPublish and/or onRpc. Read once at start; restart (or reload) to change it.',
    }),
    events: Type.Array(JsEvent, {
      minItems: 1,
      uniqueItems: true,
      description:
        'Events the file handles (its functions onConnect, onSubscribe, onPublish, onRpc must be exported). An event is handled by the JavaScript hook or by a proxy hook (hooks.<event>, global or per namespace), never both: the config is refused.',
    }),
    withoutToken: Type.Boolean({ default: false, description: 'Connections without a token are asked of onConnect too (its `user` authenticates them).' }),
    namespaces: Type.Array(
      Type.Object(
        {
          name: Type.String({ pattern: '^[a-z0-9_-]{1,64}$', description: 'A namespace of channels.namespaces, or an rpc method prefix (`ns:method`).' }),
          events: Type.Array(JsNamespacedEvent, { uniqueItems: true, description: 'Replaces `events` (subscribe, publish, rpc) in this namespace; [] turns them off here.' }),
        },
        { additionalProperties: false },
      ),
      { default: [], maxItems: 1000, description: 'Per-namespace events: the list replaces the global one for subscribe, publish and rpc in that namespace.' },
    ),
    timeoutMs: Ms(50, 'Deadline of one call, run to completion in its sandbox (the interrupt handler stops it; a promise that has not settled by then never will); then `failure` applies. Time spent waiting in the queue is not counted.'),
    memoryBytes: Type.Integer({ default: 33554432, minimum: 1048576, maximum: 1073741824, description: 'Memory limit of each sandbox\'s QuickJS runtime: the file\'s state, the call\'s data and its answer.' }),
    stackBytes: Type.Integer({ default: 262144, minimum: 16384, maximum: 8388608, description: 'Stack limit of each sandbox (deep recursion stops there).' }),
    pool: Type.Integer({ default: 2, minimum: 1, maximum: 64, description: 'Sandbox processes per Herald process; each runs one call at a time.' }),
    maxQueue: Type.Integer({ default: 1024, minimum: 0, maximum: 1000000, description: 'Calls waiting for a sandbox; one more fails at once (`failure` applies, counted as queue_full).' }),
    maxQueueWaitMs: Ms(1000, 'A call that waited longer than this for a sandbox fails (queue_timeout) instead of running.'),
    maxInputBytes: Type.Integer({ default: 262144, minimum: 1024, maximum: 16777216, description: 'Largest event (JSON text) given to a hook; a larger one is a failed call (request_too_large).' }),
    failure: Type.Union([Type.Literal('closed'), Type.Literal('open')], {
      default: 'closed',
      description: 'What a failed call (deadline, memory or stack limit, a throw, an answer that breaks the schema, queue full) means: `closed` refuses (reply error 119, disconnect 3011), `open` goes on as without the hook. rpc always fails closed.',
    }),
    logPerSecond: Type.Integer({ default: 10, minimum: 0, maximum: 10000, description: '`log()` lines per second per sandbox process; more are dropped (the next line says how many).' }),
  },
  { additionalProperties: false, description: 'JavaScript hooks run in a sandbox (QuickJS in WebAssembly, in separate processes with Node\'s permission model).' },
);

export const HooksSchema = Type.Object(
  {
    connect: Type.Optional(ConnectHookTarget),
    refresh: Type.Optional(hookTarget('Asked when a connection expires, instead of the `refresh` push: extends it or ends it (3003).')),
    subscribe: Type.Optional(hookTarget('Asked for every subscription after Herald\'s own checks: allows (with channel info), or refuses with a code.')),
    publish: Type.Optional(hookTarget('Asked for every client publish (never for the server API): allows, refuses with a code, or replaces the data.')),
    rpc: Type.Optional(hookTarget('Answers the `rpc` command; without it rpc gets reply error 120.')),
    namespaces: Type.Array(
      Type.Object(
        {
          name: Type.String({ pattern: '^[a-z0-9_-]{1,64}$', description: 'A namespace of channels.namespaces, or an rpc method prefix (`ns:method`).' }),
          subscribe: namespaceHook('subscribe'),
          publish: namespaceHook('publish'),
          rpc: namespaceHook('rpc'),
        },
        { additionalProperties: false },
      ),
      {
        default: [],
        maxItems: 1000,
        description: 'Per-namespace hooks for subscribe, publish and rpc (method `name:…`): a target replaces the global one for that namespace, `false` turns it off there.',
      },
    ),
    maxAnswerBytes: Type.Integer({
      default: 65536,
      minimum: 256,
      maximum: 16777216,
      description: 'Largest answer read from a hook (a proxy hook\'s body, a JavaScript hook\'s returned value as JSON); a longer one is a failed call (limits.maxJsonDepth bounds its nesting).',
    }),
    javascript: Type.Optional(JavascriptHooksSchema),
    allowPlainHttp: Type.Boolean({
      default: false,
      description:
        'Production mode refuses to start with a plain `http://` hook URL to a host that is not loopback (the call, its tokens and user data, and the answer would cross the network in clear text). true accepts it: a private network you trust, or a TLS sidecar on another address.',
    }),
  },
  { additionalProperties: false, default: {}, title: 'Hooks: proxy and JavaScript (docs/hooks.md)' },
);

/** One OpenID Connect provider of the console (console/oidc.ts, docs/security.md "OpenID Connect"). */
export const OidcProviderSchema = Type.Object(
  {
    id: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,31}$', description: 'Short name of the provider in URLs (B/oidc/ID/start, B/oidc/ID/callback), the audit log and the admin links.' }),
    label: Type.String({ minLength: 1, maxLength: 64, description: 'What the sign-in button says ("Sign in with LABEL").' }),
    issuer: Type.String({
      pattern: '^https?://[^\\s@/?#]+(/[^\\s?#]*)?$',
      maxLength: 512,
      description:
        'Issuer URL, exactly as the provider names itself (discovery reads ISSUER/.well-known/openid-configuration). https only; a plain http:// issuer only on a loopback host and with allowPlainHttpLoopback. Only this config names it: no URL is ever taken from a request.',
    }),
    clientId: Type.String({ minLength: 1, maxLength: 256, description: 'Client id registered at the provider.' }),
    clientSecretFile: Type.Optional(Type.String({ minLength: 1, description: 'File holding the client secret (set this or clientSecretEnv; never the secret itself in the config file).' })),
    clientSecretEnv: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$', description: 'Name of the environment variable holding the client secret (instead of clientSecretFile).' })),
    scopes: Type.Array(Type.String({ pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]{1,64}$' }), {
      default: ['openid', 'email', 'profile'],
      minItems: 1,
      maxItems: 16,
      uniqueItems: true,
      description: 'Scopes asked for; must include "openid" (add the one that brings the groups claim when a rule uses groups).',
    }),
    caFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the certificate authority that signed the provider\'s certificate, when it is not one the system trusts (a private CA).' })),
    allowPlainHttpLoopback: Type.Boolean({ default: false, description: 'Allow a plain http:// issuer on a loopback host (development, tests). Any other http:// issuer is refused.' }),
    nameClaim: Type.Union([Type.Literal('email'), Type.Literal('preferred_username'), Type.Literal('sub')], {
      default: 'email',
      description: 'Claim the console admin\'s name is made from at first sign-in (characters outside A-Z a-z 0-9 _ . @ - become "-"; a name already taken gets ".ID" added). The admin stays linked to the provider\'s subject, not to this name.',
    }),
    groupsClaim: Type.String({ default: 'groups', pattern: '^[A-Za-z0-9_:./-]{1,128}$', description: 'Claim holding the user\'s groups (an array of strings, or one string) for `group` rules.' }),
    requireVerifiedEmail: Type.Boolean({ default: true, description: 'Rules on `email` and `emailDomain` match only when the ID token says email_verified: true.' }),
    roles: Type.Array(
      Type.Object(
        {
          role: Type.Union([Type.Literal('owner'), Type.Literal('operator'), Type.Literal('viewer')], { description: 'Role given when this rule matches.' }),
          subject: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'Matches this exact `sub`.' })),
          email: Type.Optional(Type.String({ minLength: 3, maxLength: 254, description: 'Matches this exact email (case-insensitive).' })),
          emailDomain: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9.-]{1,253}$', description: 'Matches emails of this domain exactly (case-insensitive; not its subdomains).' })),
          group: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'Matches when the groups claim holds this value.' })),
        },
        { additionalProperties: false },
      ),
      {
        minItems: 1,
        maxItems: 64,
        description:
          'Who may sign in, with which role: the first rule that matches gives the role (each rule has exactly one of subject, email, emailDomain, group); no match: refused. Re-evaluated at every sign-in; a changed role ends the admin\'s other sessions.',
      },
    ),
    trustAmrForMfa: Type.Boolean({
      default: false,
      description: 'An ID token whose `amr` holds one of mfaAmrValues counts as the second factor (no TOTP or passkey asked after it). Off: the console\'s own second factor follows when the admin has one or the MFA policy requires it.',
    }),
    mfaAmrValues: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
      default: ['mfa'],
      minItems: 1,
      maxItems: 16,
      uniqueItems: true,
      description: '`amr` values (RFC 8176) that mean the provider did multi-factor authentication, for trustAmrForMfa.',
    }),
  },
  { additionalProperties: false },
);

/** Pusher webhook events (docs/pusher.md). */
export const PUSHER_WEBHOOK_EVENTS = ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event', 'cache_miss', 'subscription_count'] as const;

/** Per-app limits of the Pusher endpoint; refusals use Pusher's codes (docs/pusher.md). */
export const AppLimitsSchema = Type.Object(
  {
    maxConnections: Type.Integer({ default: 0, minimum: 0, description: 'Most connections of this app per node, its Pusher sockets and its native connections on `/apps/{id}/connection/…` together (the default app: its Pusher sockets only); 0: no cap of its own (the server\'s limits still hold). Over it: pusher:error 4100; a native connection: 503 unavailable.' }),
    maxEventPayloadBytes: Type.Integer({ default: 10240, minimum: 1, maximum: 1048576, description: 'Largest `data` of one event (HTTP API trigger and client events), as Pusher (10 KiB). Over it: 413 on the HTTP API; a client event over it is refused with pusher:error 4301 (docs/pusher.md).' }),
    maxChannelNameLength: Type.Integer({ default: 164, minimum: 1, maximum: 255, description: 'Longest channel name, as Pusher (164 characters).' }),
    maxEventNameLength: Type.Integer({ default: 200, minimum: 1, maximum: 1024, description: 'Longest event name, as Pusher (200 characters).' }),
    maxEventChannelsAtOnce: Type.Integer({ default: 100, minimum: 1, maximum: 1000, description: 'Most channels one trigger names, as Pusher (100).' }),
    maxEventBatchSize: Type.Integer({ default: 10, minimum: 1, maximum: 1000, description: 'Most events in one batch_events request, as Pusher (10).' }),
    maxPresenceMembers: Type.Integer({ default: 100, minimum: 1, maximum: 100000, description: 'Most distinct users in one presence channel, as Pusher (100).' }),
    maxPresenceMemberBytes: Type.Integer({ default: 1024, minimum: 1, maximum: 65536, description: 'Largest `user_info` of a presence member (JSON bytes), as Pusher (1 KiB).' }),
    clientEventsPerSecond: Type.Integer({ default: 10, minimum: 1, maximum: 10000, description: 'Client events one connection may send per second, as Pusher (10); more: pusher:error 4301.' }),
    apiRequestsPerSecond: Type.Integer({ default: 0, minimum: 0, description: 'HTTP API requests per second for this app per node; 0: no cap of its own. Over it: 429.' }),
    maxPendingWebhookEvents: Type.Integer({
      default: 10000,
      minimum: 1,
      maximum: 100000000,
      description:
        'Most events pending delivery per webhook URL of this app (a URL that is down holds up to webhooks.retryForMs of them); beyond it new events for that URL are dropped and counted (herald_webhook_events_total{outcome="dropped"}), so one app cannot fill the outbox that every app shares (webhooks.maxPending).',
    }),
  },
  { additionalProperties: false, default: {}, description: 'Limits of this app (docs/pusher.md, "Limits").' },
);

export const AppSchema = Type.Object(
  {
    id: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', description: 'The app id (`/apps/{id}/…` on the HTTP API; Pusher\'s `appId`).' }),
    key: Type.String({ pattern: '^[A-Za-z0-9_-]{1,128}$', description: 'The app key, public (`/app/{key}` on the socket; pusher-js\'s first argument).' }),
    secretFile: Type.Optional(Type.String({ minLength: 1, description: 'File holding the app secret (the HMAC key of signatures; 16 characters at least in production).' })),
    secretEnv: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$', description: 'Name of the environment variable holding the app secret (instead of secretFile).' })),
    name: Type.Optional(Type.String({ maxLength: 128, description: 'A label for people (console, logs).' })),
    enabled: Type.Boolean({ default: true, description: 'A disabled app refuses connections (pusher:error 4003) and API requests (403).' }),
    clientEvents: Type.Boolean({ default: false, description: 'Whether connections may send `client-*` events on private and presence channels.' }),
    userAuthentication: Type.Boolean({ default: true, description: 'Whether `pusher:signin` (user authentication, server-to-user events, the watchlist) is accepted.' }),
    subscriptionCount: Type.Boolean({
      default: false,
      description:
        'Subscription counting (Pusher\'s dashboard switch): subscribers of a non-presence channel get `pusher_internal:subscription_count` with the channel\'s count across nodes when it changes, at most once a second per channel per node (docs/pusher.md).',
    }),
    allowedOrigins: Type.Optional(
      Type.Array(Type.String({ maxLength: 512 }), {
        maxItems: 256,
        description: 'Origins allowed to open this app\'s Pusher sockets and, for an app other than the default one, its native connections on `/apps/{id}/connection/…` (exact origins, `*.example.com` or `https://*.example.com` patterns, `*`); they replace cors.origins there. Unset: the server\'s cors.origins.',
      }),
    ),
    limits: AppLimitsSchema,
    webhooks: Type.Array(
      Type.Object(
        {
          url: Type.String({ pattern: '^https?://[^\\s@/]+(/\\S*)?$', maxLength: 2048, description: 'Where Pusher-format webhooks are POSTed (signed with the app\'s key and secret).' }),
          events: Type.Array(Type.Union(PUSHER_WEBHOOK_EVENTS.map((name) => Type.Literal(name))), { minItems: 1, uniqueItems: true, description: 'Events sent to this URL.' }),
          channelPrefix: Type.Optional(Type.String({ maxLength: 164, description: 'Only events of channels whose name starts with this.' })),
        },
        { additionalProperties: false },
      ),
      { default: [], maxItems: 16, description: 'Pusher webhooks of this app, delivered through the webhook outbox with retries (docs/pusher.md).' },
    ),
  },
  { additionalProperties: false },
);

export const ConfigSchema = Type.Object(
  {
    $schema: Type.Optional(
      Type.String({
        description:
          'The JSON Schema of this file, for editor completion and checks: a path such as `./node_modules/herald/config.schema.json` or a URL. Herald reads nothing from it; allowed at the top level only.',
      }),
    ),
    mode: Type.Union([Type.Literal('development'), Type.Literal('production')], {
      default: 'production',
      description: 'development generates secrets into stateDir and logs loudly that it does; production requires them in config.',
    }),
    stateDir: Type.String({ default: '.herald', description: 'Directory for generated development secrets and the sqlite engine\'s state file (`herald.db`: streams, revocations, API keys of `herald keys`); on the memory and redis engines the API key store is `api-keys.json` here.' }),
    listen: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1', description: 'Address of the public listener.' }),
        port: Type.Integer({ default: 8000, minimum: 0, maximum: 65535, description: 'Port of the public listener; 0 picks a free one (--port, HERALD_PORT).' }),
      },
      { additionalProperties: false, default: {}, title: 'Public listener' },
    ),
    log: Type.Object(
      {
        level: Type.Union(
          ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
          { default: 'info', description: 'pino log level.' },
        ),
      },
      { additionalProperties: false, default: {}, title: 'Logging' },
    ),
    auth: Type.Object(
      {
        algorithms: Type.Array(
          Type.Union([Type.Literal('HS256'), Type.Literal('RS256'), Type.Literal('ES256')]),
          { default: ['HS256'], minItems: 1, uniqueItems: true, description: 'JWT algorithms accepted; the token header never chooses.' },
        ),
        hmacSecret: Type.Optional(
          Type.String({
            minLength: MIN_SECRET_CHARS,
            'x-secret': true,
            description: `HS256 secret, at least ${MIN_SECRET_CHARS} characters. Written in a config file, development mode only: production mode refuses it there; use HERALD_AUTH_HMAC_SECRET or hmacSecretFile.`,
          }),
        ),
        hmacSecretFile: Type.Optional(Type.String({ description: `File holding the HS256 secret (at least ${MIN_SECRET_CHARS} characters; generate one with \`openssl rand -base64 32\`).` })),
        publicKey: Type.Optional(Type.String({ description: 'PEM public key (SPKI) for RS256/ES256.' })),
        publicKeyFile: Type.Optional(Type.String({ description: 'File holding the PEM public key.' })),
        audience: Type.Optional(Type.String({ description: 'Required `aud` claim, when set.' })),
        issuer: Type.Optional(Type.String({ description: 'Required `iss` claim, when set.' })),
        leewayMs: Ms(5000, 'Clock skew tolerated on `exp` and `nbf`.', 0),
        expiryGraceMs: Ms(25000, 'A live connection whose token expired is closed this long after `exp` (code 3003).', 0),
        jwksUrl: Type.Optional(Type.String({ pattern: '^https?://', description: 'JWKS endpoint for RS256/ES256 keys (fetched, cached, refreshed on an unknown `kid`).' })),
        jwksCacheMs: Ms(600000, 'How long fetched JWKS keys are trusted before a refetch.'),
        jwksCooldownMs: Ms(30000, 'Least time between two JWKS fetches caused by unknown `kid`s (bounds what hostile tokens can trigger).', 0),
        revocationRetentionMs: Ms(86400000, 'How long a user revocation (and a token revocation without `exp`) is kept; set it to your longest token lifetime.'),
        cookieName: Type.Optional(
          Type.String({
            pattern: '^[A-Za-z0-9_-]{1,64}$',
            description: 'Cookie carrying the connection token for same-site apps (WebSocket, SSE, long polling); needs cors.origins.',
          }),
        ),
      },
      { additionalProperties: false, default: {}, title: 'Connection tokens' },
    ),
    api: Type.Object(
      {
        keys: Type.Array(ApiKey, { default: [], description: 'Server API keys (hashed). HERALD_API_KEY adds one admin key from the environment.' }),
        maxBodyBytes: Type.Integer({ default: 65536, minimum: 1024, maximum: 16777216, description: 'Largest API request body.' }),
        maxBroadcastChannels: Type.Integer({ default: 1000, minimum: 1, maximum: 100000, description: 'Most channels in one broadcast.' }),
        maxBatchPublishes: Type.Integer({ default: 1000, minimum: 1, maximum: 100000, description: 'Most publishes in one batch (`POST /api/batch`); the whole request also stays within api.maxBodyBytes.' }),
        idempotencyWindowMs: Type.Integer({
          default: 300000,
          minimum: 1000,
          maximum: 86400000,
          description:
            'How long a publish\'s `idempotency_key` is remembered per channel: a retry with the same key within it answers the first result and publishes nothing (docs/protocol.md "Idempotent publish"). At most 100000 keys per process on the memory engine (the oldest forgotten first); on sqlite and Redis every key until its window ends.',
        }),
        rateLimitPerKey: Type.Integer({ default: 6000, minimum: 1, description: 'API requests per key per minute (per node, or cluster-wide with limits.scope "cluster"), then 429.' }),
        rateLimitPerIp: Type.Integer({
          default: 600,
          minimum: 1,
          description: 'API requests per client IP per minute (per node, or cluster-wide with limits.scope "cluster"), counted before the key is checked.',
        }),
      },
      { additionalProperties: false, default: {}, title: 'Server API' },
    ),
    channels: Type.Object(
      {
        defaults: Type.Object(NamespaceOptions.properties, {
          additionalProperties: false,
          default: {},
          description: 'Options of the default namespace (channels without ":") and defaults for every namespace.',
        }),
        namespaces: Type.Array(Namespace, { default: [], description: 'Named namespaces; unset options inherit channels.defaults.' }),
        maxNameBytes: Type.Integer({ default: 255, minimum: 16, maximum: 1024, description: 'Longest channel name.' }),
      },
      { additionalProperties: false, default: {}, title: 'Channels and namespaces' },
    ),
    limits: Type.Object(
      {
        maxMessageBytes: Type.Integer({ default: 65536, minimum: 256, maximum: 16777216, description: 'Largest inbound client message.' }),
        maxJsonDepth: Type.Integer({
          default: DEFAULT_MAX_JSON_DEPTH,
          minimum: 8,
          maximum: 1000,
          description:
            'Deepest nesting of arrays and objects in any JSON input (API bodies, commands on every transport, long-poll bodies, JWT claims), counted over the whole text: `[]` is 1, a command envelope takes 2. Deeper input is refused before it is parsed: HTTP 400 json_too_deep, reply error 117, token 3500. The config file and the key store are held to 64.',
        }),
        maxFragments: Type.Integer({
          default: 1024,
          minimum: 1,
          maximum: 65536,
          description: 'WebSocket frames one message may be split into (its first frame and continuations); one more closes with 1008.',
        }),
        outboundQueueBytes: Type.Integer({
          default: 1048576,
          minimum: 1024,
          maximum: 1073741824,
          description: 'Bytes queued to one connection before it is disconnected as slow (code 3004).',
        }),
        closeGraceMs: Ms(
          5000,
          'Time a closing connection gets to take its last frame (the WebSocket close handshake, the end of an SSE stream, the `disconnect` message a long-poll session keeps for its next poll); then it is cut. A drain waits this long for a long-poll client between two polls.',
        ),
        maxChannelsPerConnection: Type.Integer({ default: 128, minimum: 1, maximum: 100000, description: 'Subscriptions per connection.' }),
        staleMs: Ms(10000, 'Close a connection that has not connected (authenticated) by then (code 3502).'),
        inboundRatePerSecond: Type.Integer({ default: 50, minimum: 1, description: 'Token-bucket refill rate for inbound commands.' }),
        inboundBurst: Type.Integer({ default: 100, minimum: 1, description: 'Token-bucket size for inbound commands.' }),
        scope: Type.Union([Type.Literal('node'), Type.Literal('cluster')], {
          default: 'node',
          description:
            'Where the API rate limits (api.rateLimitPerIp, api.rateLimitPerKey), newConnectionsPerIpPerSecond and maxConnectionsPerIp are counted: `node` (each node counts its own, so N nodes behind a load balancer allow N times the limit) or `cluster` (counted in Redis, shared by every node: redis engine only). maxConnections is always per node (a node\'s capacity). While Redis cannot be reached, `cluster` falls back to per-node counting (docs/operations.md, "Which limit is which").',
        }),
        clusterNodeTtlMs: Ms(
          15000,
          'limits.scope "cluster": how long the connections of a node that stopped (crashed, lost Redis) keep counting against maxConnectionsPerIp on the other nodes; a live node renews its entry every third of it.',
          1000,
        ),
        maxConnections: Type.Integer({ default: 50000, minimum: 1, description: 'Connections in total (always per node: a node\'s capacity); new ones are refused with 503.' }),
        maxConnectionsPerIp: Type.Integer({ default: 1000, minimum: 1, description: 'Connections from one IP (per node, or cluster-wide with limits.scope "cluster"); then 429.' }),
        maxConnectionsPerUser: Type.Integer({ default: 100, minimum: 1, description: 'Connections of one user id (cluster-wide, from node snapshots; an app\'s users apart from the server\'s; Pusher sign-ins count with native connections); then WebSocket closes with 3506, SSE and long polling answer 429 connection_limit, pusher:signin is refused with pusher:error 4302.' }),
        newConnectionsPerIpPerSecond: Type.Integer({ default: 50, minimum: 1, description: 'New connections from one IP per second (per node, or cluster-wide with limits.scope "cluster"); then 429.' }),
        inboundHardPerSecond: Type.Integer({
          default: 500,
          minimum: 1,
          description: 'Commands in one second above which the connection is cut (code 3009).',
        }),
      },
      { additionalProperties: false, default: {}, title: 'Limits' },
    ),
    ping: Type.Object(
      {
        intervalMs: Ms(25000, 'Server ping interval.'),
        maxMissed: Type.Integer({ default: 2, minimum: 1, maximum: 10, description: 'Intervals without client activity before termination (code 3008).' }),
      },
      { additionalProperties: false, default: {}, title: 'Heartbeats' },
    ),
    longPoll: Type.Object(
      {
        pollTimeoutMs: Ms(25000, 'How long a poll waits for messages before answering empty.'),
        sessionTimeoutMs: Ms(40000, 'A long-poll session with no poll in flight for this long is closed.'),
      },
      { additionalProperties: false, default: {}, title: 'Long polling' },
    ),
    http: Type.Object(
      {
        headersTimeoutMs: Ms(10000, 'Time allowed to receive request headers (slowloris guard).'),
        requestTimeoutMs: Ms(30000, 'Time allowed for a whole non-streaming request.'),
        keepAliveTimeoutMs: Ms(5000, 'Idle keep-alive timeout.'),
        leanLongPoll: Type.Boolean({
          default: true,
          description:
            'The long-poll routes (POST /connection/poll, /connection/poll/open and their /apps/{id}/ forms) are answered by a lean HTTP/1.1 layer on llhttp (the WebAssembly build undici ships) instead of node:http: less CPU and memory per poll; a connection goes to node:http at its first other request. Plain HTTP only: with tls.certFile set, node:https serves these routes.',
        }),
        leanPublish: Type.Boolean({
          default: true,
          description:
            'The server API\'s publish routes (POST /api/publish, /api/broadcast, /api/batch with a JSON body and no query string) are answered by the same lean HTTP/1.1 layer as http.leanLongPoll instead of node:http: less CPU per publish; any other request goes to node:http. Plain HTTP only: with tls.certFile set, node:https serves these routes.',
        }),
        leanWebSocket: Type.Boolean({
          default: true,
          description:
            'WebSocket upgrade requests on the connection paths (GET /connection/websocket and its /apps/{id}/ form) are read by the same lean HTTP/1.1 layer as http.leanLongPoll and handed to the WebSocket endpoint without node:http\'s request objects: less CPU per open; every check and answer stays the same. Plain HTTP only: with tls.certFile set, node:https reads them.',
        }),
        leanSse: Type.Boolean({
          default: true,
          description:
            'The SSE stream\'s opening (GET /connection/sse and its /apps/{id}/ form, without a body) is answered by the same lean HTTP/1.1 layer as http.leanLongPoll instead of node:http, and the stream then writes to its socket: less CPU per open (a reconnect storm). Plain HTTP only: with tls.certFile set, node:https serves the stream.',
        }),
        trustedProxies: Type.Array(Type.String({ maxLength: 64 }), {
          default: [],
          description: 'Proxy addresses or CIDRs whose X-Forwarded-For is believed; from anyone else it is ignored.',
        }),
      },
      { additionalProperties: false, default: {}, title: 'HTTP' },
    ),
    engine: Type.Object(
      {
        type: Type.Union([Type.Literal('memory'), Type.Literal('sqlite'), Type.Literal('redis')], {
          default: 'sqlite',
          description:
            'sqlite: one process (or one cluster of workers, whose primary owns the file), streams, revocations and API keys durable in `<stateDir>/herald.db` across restarts; memory: the same without a file, everything lost on restart (tests, or nothing on disk); redis: several Herald nodes sharing Redis (in cluster mode each worker is a node of its own).',
        }),
        sqliteSynchronous: Type.Union([Type.Literal('normal'), Type.Literal('full')], {
          default: 'normal',
          description:
            'sqlite engine: `normal` (WAL, no fsync per commit) keeps every acknowledged publication across a crash of the process, not necessarily across a power loss or OS crash; `full` fsyncs every commit and survives both, at a cost per commit.',
        }),
        sqliteBusyTimeoutMs: Ms(1000, 'sqlite engine: how long a write waits for the state file held by another connection (`herald keys`) before it fails with `unavailable`.'),
        redisUrl: Type.String({
          default: 'redis://127.0.0.1:6379',
          'x-secret': true,
          description:
            'Redis URL for the redis engine: `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS (see engine.redisTls). A password belongs in the URL or HERALD_REDIS_URL; `user` is a Redis ACL user (docs/operations.md, "Redis with TLS and an ACL user").',
        }),
        redisTls: Type.Object(
          {
            caFile: Type.Optional(Type.String({ description: 'PEM CA certificate(s) that signed the Redis server\'s certificate; the system CAs when absent.' })),
            certFile: Type.Optional(Type.String({ description: 'PEM client certificate, for a Redis that authenticates clients by certificate (`tls-auth-clients yes`, its default); with keyFile.' })),
            keyFile: Type.Optional(Type.String({ description: 'PEM private key of certFile.' })),
            serverName: Type.Optional(Type.String({ minLength: 1, maxLength: 253, description: 'Name the server certificate must carry, when it is not the URL\'s host (for example a certificate for a DNS name reached by IP address).' })),
          },
          {
            additionalProperties: false,
            default: {},
            description: 'TLS to Redis: applies to a `rediss://` engine.redisUrl, or to every node of a Redis Cluster whose first seed is `rediss://` (the server certificate is always verified); set with a `redis://` URL it is refused.',
          },
        ),
        redisCluster: Type.Array(Type.String({ pattern: '^rediss?://', maxLength: 1024, 'x-secret': true }), {
          default: [],
          maxItems: 64,
          description:
            'Seed node URLs of a Redis Cluster (e.g. `["redis://10.0.0.1:7000","redis://10.0.0.2:7000"]`; HERALD_REDIS_CLUSTER or --redis-cluster, comma-separated). When given, the redis engine runs on the cluster instead of `redisUrl`: channels fan out over sharded pub/sub and each channel\'s keys share one slot (docs/operations.md "Redis Cluster"). User, password and `rediss://` of the first URL apply to every node.',
        }),
        redisPrefix: Type.String({ default: 'herald', pattern: '^[A-Za-z0-9_:-]{1,64}$', description: 'Prefix of every Redis key and pub/sub channel.' }),
        redisCommandTimeoutMs: Ms(2000, 'Timeout of every Redis call.'),
        presenceTtlMs: Ms(60000, 'Redis presence entries expire unless refreshed (a node refreshes every third of it).'),
        streamMetaTtlMs: Ms(86400000, 'How long a Redis stream keeps its epoch and offset after its last publication.'),
        probeIntervalMs: Ms(
          2000,
          'Interval of the end-to-end delivery probe, on every engine: a probe published through the broker must come back to the node that sent it (redis: over pub/sub; cluster mode: worker → primary → worker).',
        ),
        probeDeadlineMs: Ms(
          5000,
          'Every engine: a probe not delivered back within this time makes the process not ready (`delivery_probe`) until a probe comes back. (The redis engine also reconnects a pub/sub connection whose probe is lost for two intervals.)',
        ),
        unavailableRetryMs: Ms(
          30000,
          'SSE and long polling: how long the server keeps retrying, while the engine is unavailable, a subscription it holds for the client (one named when the connection opened, or one resynchronizing after a gap or a stream reset); then the connection is closed with 3002 (reconnect).',
        ),
      },
      { additionalProperties: false, default: {}, title: 'Engine' },
    ),
    cluster: Type.Object(
      {
        workers: Type.Union([Type.Integer({ minimum: 1, maximum: 1024 }), Type.Literal('auto')], {
          default: 1,
          description:
            'Worker processes sharing the listener (`herald serve --workers N`); "auto" is one per core, 1 runs a single process without a primary. Workers are linked through the primary (on the redis engine through Redis, each worker a node): streams, presence and control are cluster-wide.',
        }),
        heartbeatIntervalMs: Ms(1000, 'How often the primary pings each worker over IPC.'),
        heartbeatTimeoutMs: Ms(10000, 'A worker that has not answered a ping for this long is killed (SIGKILL) and replaced.'),
        restartDelayMs: Ms(500, 'Delay before restarting a crashed worker; doubles with each recent crash of the same worker slot, up to 30 s.', 0),
        crashLoopRestarts: Type.Integer({
          default: 5,
          minimum: 0,
          maximum: 1000,
          description: 'Restarts of one worker slot allowed within crashLoopWindowMs; one more crash is a crash loop: logged as an error, the slot is not restarted.',
        }),
        crashLoopWindowMs: Ms(60000, 'Window in which crashes of one worker slot are counted.'),
        callTimeoutMs: Ms(
          10000,
          "Longest wait of a worker for the primary (publish, history, presence, subscribe, control) and for another worker's answer to a forwarded SSE or long-poll request (a held poll: beyond longPoll.pollTimeoutMs); then the API answers 503 unavailable, a command gets reply error 116.",
        ),
      },
      { additionalProperties: false, default: {}, title: 'Cluster mode' },
    ),
    cors: Type.Object(
      {
        origins: Type.Array(Type.String({ pattern: '^https?://[^/]+$', maxLength: 256 }), {
          default: [],
          description: 'Browser origins allowed (exact match, e.g. "https://app.example.com") on the API, SSE, long polling and the WebSocket upgrade.',
        }),
      },
      { additionalProperties: false, default: {}, title: 'Browser origins' },
    ),
    tls: Type.Object(
      {
        certFile: Type.Optional(Type.String({ description: 'PEM certificate chain; with keyFile, the public listener serves HTTPS and WSS.' })),
        keyFile: Type.Optional(Type.String({ description: 'PEM private key for certFile.' })),
      },
      { additionalProperties: false, default: {}, title: 'TLS' },
    ),
    admin: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1', description: 'Address of the internal listener (metrics, admin).' }),
        port: Type.Integer({ default: 8001, minimum: 0, maximum: 65535, description: 'Port of the internal listener; 0 picks a free one (--admin-port, HERALD_ADMIN_PORT).' }),
        tls: Type.Object(
          {
            certFile: Type.Optional(Type.String({ description: 'PEM certificate chain; with keyFile, the internal listener (metrics, health, the console) serves HTTPS.' })),
            keyFile: Type.Optional(Type.String({ description: 'PEM private key for admin.tls.certFile.' })),
          },
          { additionalProperties: false, default: {}, description: 'TLS of the internal listener (the console\'s session cookie needs a secure context off loopback).' },
        ),
        console: Type.Object(
          {
            enabled: Type.Union([Type.Literal('auto'), Type.Boolean()], {
              default: 'auto',
              description:
                'The admin console on the internal listener (docs/console.md). "auto": on when the internal listener is on a loopback address, has TLS (admin.tls), or behindTlsProxy is set; otherwise off with a warning. true: on, and start refuses a non-loopback admin.host without TLS or behindTlsProxy. false: off.',
            }),
            basePath: Type.String({
              default: '/console',
              pattern: '^(/[A-Za-z0-9._~-]+)+$',
              maxLength: 128,
              description: 'Path under which the console and its API are served (for a reverse proxy that maps a path). The session cookie stays Path=/ (the __Host- prefix requires it).',
            }),
            origin: Type.Optional(
              Type.String({
                pattern: '^https?://[^/]+$',
                maxLength: 256,
                description:
                  'The console\'s origin as browsers see it (e.g. "https://herald-admin.example.com"); state-changing requests must carry exactly this Origin. Unset: the scheme and Host of the request, with Host a loopback name or admin.host. Required with behindTlsProxy.',
              }),
            ),
            behindTlsProxy: Type.Boolean({
              default: false,
              description: 'A TLS-terminating reverse proxy is in front of the internal listener: allows the console on a non-loopback admin.host without admin.tls. Needs origin.',
            }),
            sessionIdleMs: Ms(1800000, 'A console session unused this long ends (idle timeout).', 1000),
            sessionAbsoluteMs: Ms(43200000, 'A console session ends this long after sign-in, used or not (absolute lifetime).', 1000),
            auditRetentionDays: Type.Integer({ default: 90, minimum: 1, maximum: 3650, description: 'Days audit log entries are kept (console actions, sign-ins, admin changes by the CLI and the API); older ones are deleted.' }),
            login: Type.Object(
              {
                accountDelayAfter: Type.Integer({ default: 3, minimum: 1, maximum: 1000, description: 'Failed sign-ins of one account name before each next attempt waits (1 s, doubling up to maxDelayMs).' }),
                accountLockAfter: Type.Integer({ default: 10, minimum: 1, maximum: 10000, description: 'Failed sign-ins of one account name that lock it for lockMs (whether or not the account exists).' }),
                addressDelayAfter: Type.Integer({ default: 10, minimum: 1, maximum: 10000, description: 'Failed sign-ins from one client address (IPv6: its /64) before each next attempt waits.' }),
                addressLockAfter: Type.Integer({ default: 50, minimum: 1, maximum: 100000, description: 'Failed sign-ins from one client address that lock it for lockMs.' }),
                baseDelayMs: Ms(1000, 'First progressive delay; doubles with each further failure.', 0),
                maxDelayMs: Ms(30000, 'Longest progressive delay.', 0),
                lockMs: Ms(900000, 'How long a lock lasts (the owner can lift it: herald admin unlock, or the console).', 1000),
                windowMs: Ms(900000, 'Failures are forgotten this long after the last one.', 1000),
              },
              { additionalProperties: false, default: {}, description: 'Brute-force limits of the console sign-in, shared by every worker (and node, on Redis).' },
            ),
            mfa: Type.Object(
              {
                require: Type.Union(
                  [
                    Type.Literal('none'),
                    Type.Literal('all'),
                    Type.Array(Type.Union([Type.Literal('owner'), Type.Literal('operator'), Type.Literal('viewer')]), { minItems: 1, uniqueItems: true }),
                  ],
                  {
                    default: 'none',
                    description:
                      'Who must sign in with a second factor (TOTP or a passkey): "none", "all" admins, or a list of roles (e.g. ["owner"]). An admin who must and has none enrolled is sent to enrolment right after the password and can do nothing else until it is done. An admin with a factor enrolled is always asked for it.',
                  },
                ),
                totpIssuer: Type.String({
                  default: 'Herald',
                  minLength: 1,
                  maxLength: 64,
                  pattern: '^[^:]+$',
                  description: 'The issuer name authenticator apps show beside the admin\'s name for the console\'s TOTP (e.g. "Herald prod").',
                }),
              },
              { additionalProperties: false, default: {}, description: 'Multi-factor sign-in of the console (docs/security.md).' },
            ),
            passkeys: Type.Object(
              {
                rpId: Type.Optional(
                  Type.String({
                    minLength: 1,
                    maxLength: 253,
                    pattern: '^[A-Za-z0-9.-]+$',
                    description:
                      'Relying-party id of the console\'s passkeys: a domain, the host of every origin or a registrable suffix of it (e.g. "example.com" for https://herald-admin.example.com; "localhost" on this machine). Passkeys are on when this is set. Browsers refuse IP addresses. Changing it later makes every registered passkey unusable.',
                  }),
                ),
                rpName: Type.String({ default: 'Herald', minLength: 1, maxLength: 64, description: 'Name of the relying party the browser shows when a passkey is made.' }),
                origins: Type.Array(Type.String({ pattern: '^https?://[^/]+$', maxLength: 256 }), {
                  default: [],
                  maxItems: 16,
                  description:
                    'Origins the console is opened from, as browsers see them (e.g. "https://herald-admin.example.com"); a passkey ceremony from any other origin is refused. https only, except http://localhost. Empty: admin.console.origin.',
                }),
                challengeTtlMs: Ms(120000, 'A passkey challenge (registration or sign-in) is refused this long after it was issued.', 1000),
              },
              { additionalProperties: false, default: {}, description: 'Passkeys (WebAuthn) for the console: sign-in without a password, and a second factor (docs/security.md).' },
            ),
            oidc: Type.Object(
              {
                providers: Type.Array(OidcProviderSchema, {
                  default: [],
                  maxItems: 16,
                  description: 'OpenID Connect providers admins may sign in with (authorization code flow with PKCE); the redirect URL to register at each is ORIGIN + basePath + /oidc/ID/callback.',
                }),
                flowTimeoutMs: Ms(600000, 'How long a sign-in at a provider may take, from the button to the return (its state, nonce and PKCE verifier are kept this long, single use).', 10000),
                startsPerAddressPerMinute: Type.Integer({
                  default: 20,
                  minimum: 1,
                  maximum: 100000,
                  description:
                    'Sign-ins a client address (IPv6 by its /64) may start (GET B/oidc/ID/start) per minute, counted by each worker, then 429 too_many_requests with Retry-After.',
                }),
                maxPendingFlows: Type.Integer({
                  default: 10000,
                  minimum: 1,
                  maximum: 1000000,
                  description:
                    'Sign-ins started and not yet back (or expired) that the console store keeps at most, all providers and nodes together; at the cap a new start is refused (429 too_many_requests) while the pending ones can still complete.',
                }),
              },
              { additionalProperties: false, default: {}, description: 'Single sign-on through OpenID Connect (docs/security.md, "OpenID Connect").' },
            ),
          },
          { additionalProperties: false, default: {}, description: 'The admin console (docs/console.md).' },
        ),
      },
      { additionalProperties: false, default: {}, title: 'Internal listener' },
    ),
    process: Type.Object(
      {
        allowRoot: Type.Boolean({ default: false, description: 'Let production mode run as root (development mode only warns).' }),
      },
      { additionalProperties: false, default: {}, title: 'Process' },
    ),
    watchdog: Type.Object(
      {
        eventLoopDelayMs: Type.Integer({
          default: 1000,
          minimum: 0,
          maximum: 600000,
          description: 'Longest event-loop delay (within one watchdog interval) before the process is over threshold: a warning with the numbers, /health/ready answers 503, a diagnostic report is written. 0 turns it off.',
        }),
        liveHeapMiB: Type.Union([Type.Integer({ minimum: 0, maximum: 1048576 }), Type.Literal('auto')], {
          default: 'auto',
          description:
            'Live heap (heap used right after the last full garbage collection: what a leak grows) above which the process is over threshold; "auto" is 85 % of V8\'s heap limit (--max-old-space-size), 0 turns it off. In cluster mode a worker that stays over it (or over rssMiB) for recycleAfterMs is replaced.',
        }),
        rssMiB: Type.Integer({
          default: 0,
          minimum: 0,
          maximum: 1048576,
          description:
            'Resident set size above which the process is over threshold; 0 (the default) turns it off. RSS stays high after a burst of connections without any leak until V8 gives memory back, so set it near a container limit, not as a leak detector (liveHeapMiB is that).',
        }),
        intervalMs: Ms(1000, 'How often the watchdog samples event-loop delay, heap and RSS (metrics, the API\'s info, thresholds).', 10),
        settleMs: Ms(10000, 'How long the samples must stay under a threshold before the process is back under it (ready again).', 0),
        recycleAfterMs: Ms(
          60000,
          'Cluster mode: a worker over a memory threshold (liveHeapMiB, rssMiB) for this long is replaced: a new worker starts, then the old one drains (its clients reconnect with 3001 and recover). 0 turns recycling off. A single process only reports.',
          0,
        ),
        reportIntervalMs: Ms(600000, 'At most one diagnostic report (and one heap snapshot) per this interval per process.', 0),
        maxReports: Type.Integer({
          default: 10,
          minimum: 1,
          maximum: 1000,
          description: 'Diagnostic reports kept in <stateDir>/diagnostics (the oldest are deleted).',
        }),
        heapSnapshots: Type.Boolean({
          default: false,
          description: 'Also write a V8 heap snapshot when over a threshold. Off by default: taking one blocks the event loop for seconds and can double the memory used.',
        }),
        maxHeapSnapshots: Type.Integer({ default: 2, minimum: 1, maximum: 100, description: 'Heap snapshots kept in <stateDir>/diagnostics (the oldest are deleted).' }),
        heapSnapshotMaxMiB: Type.Integer({
          default: 512,
          minimum: 1,
          maximum: 1048576,
          description: 'No heap snapshot is taken while the heap is larger than this (a snapshot is about the heap\'s size on disk and needs as much again in memory).',
        }),
      },
      { additionalProperties: false, default: {}, title: 'Watchdog (event loop and memory)' },
    ),
    hooks: HooksSchema,
    webhooks: Type.Object(
      {
        endpoints: Type.Array(
          Type.Object(
            {
              name: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$', description: 'Label of the endpoint: outbox rows, metrics, logs and `herald webhooks` name it.' }),
              url: Type.String({
                pattern: '^https?://[^\\s@/]+(/\\S*)?$',
                maxLength: 2048,
                description: 'Where the batches are POSTed: http or https, no user name or password in the URL. Only this config names targets; redirects are never followed.',
              }),
              events: Type.Array(
                Type.Union(
                  ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_connected', 'client_disconnected', 'publication'].map((name) => Type.Literal(name)),
                ),
                {
                  minItems: 1,
                  uniqueItems: true,
                  default: ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_connected', 'client_disconnected'],
                  description: 'Events sent to this endpoint. `publication` also needs the namespace in webhooks.publicationNamespaces.',
                },
              ),
              namespaces: Type.Optional(
                Type.Array(Type.String({ pattern: '^[a-z0-9_-]{0,64}$' }), {
                  uniqueItems: true,
                  description: 'Only channel events (occupied, vacated, members, publications) of these namespaces ("" is channels without one); unset: all.',
                }),
              ),
              keys: Type.Array(
                Type.Object(
                  {
                    id: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$', description: 'Key id, sent in the herald-webhook-key-id header and beside its signature.' }),
                    secretFile: Type.Optional(Type.String({ description: `File holding the signing secret (at least ${MIN_SECRET_CHARS} characters).` })),
                    secretEnv: Type.Optional(
                      Type.String({ pattern: '^[A-Z_][A-Z0-9_]*$', description: `Name of the environment variable holding the signing secret (at least ${MIN_SECRET_CHARS} characters).` }),
                    ),
                  },
                  { additionalProperties: false },
                ),
                {
                  minItems: 1,
                  maxItems: 2,
                  description: 'Signing keys, newest first; two during a rotation: each request carries both signatures, the first key id in herald-webhook-key-id.',
                },
              ),
            },
            { additionalProperties: false },
          ),
          { default: [], maxItems: 16, description: 'Endpoints that receive webhook batches; none: no events are recorded.' },
        ),
        publicationNamespaces: Type.Array(Type.String({ pattern: '^[a-z0-9_-]{0,64}$' }), {
          default: [],
          uniqueItems: true,
          description: 'Namespaces whose publications become `publication` events ("" is channels without one). Each publication is written to the outbox: keep it to low-rate namespaces.',
        }),
        batchWindowMs: Ms(100, 'Events of one endpoint gathered for this long into one POST.', 0),
        batchMaxEvents: Type.Integer({ default: 100, minimum: 1, maximum: 1000, description: 'Most events in one POST.' }),
        timeoutMs: Ms(5000, 'A POST not answered (status line) within this is a failed attempt (retried).'),
        retryForMs: Ms(300000, 'Failed attempts (timeouts, connection errors, 408, 429, 5xx) are retried with exponential backoff and jitter for this long after the event, then kept as dead letters.'),
        backoffMinMs: Ms(1000, 'First retry delay; doubled per attempt, with jitter; a Retry-After answer is honoured when longer.'),
        backoffMaxMs: Ms(60000, 'Longest retry delay.'),
        maxPending: Type.Integer({
          default: 100000,
          minimum: 1,
          maximum: 100000000,
          description: 'Most outbox entries pending delivery; beyond it new events are dropped and counted (herald_webhook_events_total{outcome="dropped"}).',
        }),
        pollIntervalMs: Ms(1000, 'How often the dispatcher looks at the outbox for rows it was not told of (after a restart, `herald webhooks replay`).'),
      },
      { additionalProperties: false, default: {}, title: 'Webhooks', description: 'Signed event batches to the application (docs/hooks.md, "Webhooks").' },
    ),
    apps: Type.Object(
      {
        list: Type.Array(AppSchema, { default: [], maxItems: 1000, description: 'Apps defined here (more can be created from the console and `herald apps`). HERALD_APP_ID, HERALD_APP_KEY and HERALD_APP_SECRET add one.' }),
        default: Type.Optional(
          Type.String({
            pattern: '^[A-Za-z0-9_-]{1,64}$',
            description: 'The app whose channels are the native protocol\'s unprefixed channels (a Pusher trigger there reaches native subscribers and back); unset: the only app of `list` when there is exactly one.',
          }),
        ),
        pollIntervalMs: Ms(
          2000,
          'How often each node checks the engine\'s store for apps created, changed or deleted that it was not told of (the console and `herald apps` tell every node at once; this is the safety net for a notice that was lost).',
          100,
        ),
      },
      { additionalProperties: false, default: {}, title: 'Apps (multi-tenant; the Pusher endpoint)', description: 'docs/pusher.md.' },
    ),
    pusher: Type.Object(
      {
        activityTimeoutSeconds: Type.Integer({ default: 120, minimum: 10, maximum: 3600, description: 'The `activity_timeout` told to clients in pusher:connection_established: a quiet client pings after it.' }),
        authTimestampWindowSeconds: Type.Integer({ default: 600, minimum: 1, maximum: 86400, description: 'HTTP API requests whose auth_timestamp is further than this from the server\'s clock are refused (401), as Pusher.' }),
        maxApiBodyBytes: Type.Integer({ default: 1048576, minimum: 1024, maximum: 16777216, description: 'Largest HTTP API request body.' }),
        cacheTtlMs: Ms(
          1800000,
          'How long a cache channel (`cache-`, `private-cache-`, `presence-cache-`, on every app) keeps its last event for new subscribers, as Pusher (30 minutes): the history TTL of these channels instead of channels.defaults.historyTtlMs (their history size stays channels.defaults.historySize; native clients of these channels get this TTL too).',
        ),
      },
      { additionalProperties: false, default: {}, title: 'Pusher endpoint', description: 'Settings of the Pusher protocol endpoint for every app (docs/pusher.md).' },
    ),
    shutdown: Type.Object(
      {
        drainTimeoutMs: Ms(30000, 'Longest graceful drain on SIGTERM before exiting anyway.'),
      },
      { additionalProperties: false, default: {}, title: 'Shutdown' },
    ),
  },
  { additionalProperties: false, title: 'Herald configuration' },
);

export type Config = Static<typeof ConfigSchema>;
export type NamespaceConfig = Static<typeof NamespaceOptions>;
export type NamespaceEntry = { readonly name: string } & Partial<NamespaceConfig>;
export type ApiKeyConfig = Static<typeof ApiKey>;
export type ApiScope = ApiKeyConfig['scopes'][number];
export type HookTargetConfig = Static<typeof HookTarget>;
export type ConnectHookConfig = Static<typeof ConnectHookTarget>;
export type HooksConfig = Static<typeof HooksSchema>;
export type JavascriptHooksConfig = Static<typeof JavascriptHooksSchema>;
export type OidcProviderConfig = Static<typeof OidcProviderSchema>;
export type AppConfig = Static<typeof AppSchema>;
export type AppLimits = Static<typeof AppLimitsSchema>;
export type PusherWebhookEvent = (typeof PUSHER_WEBHOOK_EVENTS)[number];
