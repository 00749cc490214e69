/**
 * The chat example (examples/chat), served by Herald itself in development
 * mode, from a clone of the repository only (an installed `herald` package
 * has no examples and never serves it): the page, its script and the client
 * SDK (packages/client) bundled on the fly with esbuild (a devDependency,
 * loaded only when a bundle is asked for),
 * and a token endpoint that mints short-lived HS256 connection tokens with
 * the server's own secret for any user name. That endpoint is why the demo
 * never runs in production mode: it hands out identities.
 *
 *   GET  /examples/chat/                  the page
 *   GET  /examples/chat/chat.css          its style
 *   GET  /examples/chat/chat.js           examples/chat/chat.ts, bundled (imports ./herald-client.js)
 *   GET  /examples/chat/herald-client.js  packages/client/src/index.ts, bundled and minified (ESM)
 *   POST /examples/chat/token {user}      → {token, ttl}
 *   GET  /examples/chat/rooms             → {rooms}: the rooms someone is in now
 *
 * Rooms are channels `<namespace>:<room>`; pages announce a room they open
 * on `<namespace>:@rooms`, so the room list is shared by every page.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { SignJWT } from 'jose';
import { Type, type Static } from '@sinclair/typebox';
import type { Config } from '../config/schema.ts';
import { sendApiError } from '../transports/http-connection.ts';

export const DEMO_PREFIX = '/examples/chat';
/** Lifetime of a demo token: short, so the page shows token refresh at work. */
export const DEMO_TOKEN_TTL_SECONDS = 600;

// The same depth from packages/server/src/app and packages/server/dist/app: the clone's root.
const cloneRoot = new URL('../../../../', import.meta.url);
const exampleDir = new URL('examples/chat/', cloneRoot);
const clientEntry = fileURLToPath(new URL('packages/client/src/index.ts', cloneRoot));
const chatEntry = fileURLToPath(new URL('chat.ts', exampleDir));

/** True in a clone of the repository (the examples and the SDK sources are there); never inside node_modules. */
export function demoAvailable(): boolean {
  return !fileURLToPath(import.meta.url).split(/[\\/]/).includes('node_modules') && existsSync(exampleDir) && existsSync(clientEntry);
}

export interface DemoOptions {
  /** Serve the demo outside development mode (tests only; it mints tokens for anyone). */
  readonly enabled?: boolean;
  /** Channels with subscribers whose name starts with a prefix (the node's `channels`), for the room list. */
  readonly channels?: (prefix: string) => Record<string, unknown>;
}

/**
 * Bundles the client SDK (packages/client/src/index.ts) for browsers: one
 * ESM file, no dependencies (the protocol package inlined).
 */
export async function bundleClient(minify = true): Promise<string> {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: [clientEntry],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['herald-source'],
    minify,
    legalComments: 'none',
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}

/** The page's script; its import of the SDK becomes `./herald-client.js`, the bundle served beside it. */
async function bundleChat(): Promise<string> {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: [chatEntry],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
    plugins: [
      {
        name: 'herald-client-external',
        setup(build) {
          build.onResolve({ filter: /^@herald\/client$/ }, () => ({ path: './herald-client.js', external: true }));
        },
      },
    ],
  });
  return result.outputFiles[0]!.text;
}

/** The namespace the page chats in: `chat` when configured, else development mode's `public`. */
function demoNamespace(config: Config): string {
  const names = config.channels.namespaces.map((n) => n.name);
  if (names.includes('chat')) return 'chat';
  if (names.includes('public')) return 'public';
  return 'chat';
}

function hmacSecret(config: Config): string | undefined {
  if (!config.auth.algorithms.includes('HS256')) return undefined;
  if (config.auth.hmacSecret !== undefined) return config.auth.hmacSecret;
  if (config.auth.hmacSecretFile === undefined) return undefined;
  try {
    return readFileSync(config.auth.hmacSecretFile, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The token endpoint's body; checked as is by the app's validator (packages/server/src/app/http-input.ts). */
const TokenBody = Type.Object({ user: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,32}$' }) }, { additionalProperties: false });
/** What the page accepts as a room name (it lowercases what users type). */
const roomPattern = /^[a-z0-9_.-]{1,40}$/;

/** Registers the demo routes when in development mode (or `enabled`). Returns whether it did. */
export function registerDemo(app: FastifyInstance, config: Config, options: DemoOptions = {}): boolean {
  if (config.mode !== 'development' && options.enabled !== true) return false;
  if (!demoAvailable()) return false;
  const namespace = demoNamespace(config);
  const bundles = new Map<string, Promise<string>>();
  const cached = (name: string, build: () => Promise<string>): Promise<string> => {
    let bundle = bundles.get(name);
    if (bundle === undefined) {
      bundle = build();
      bundles.set(name, bundle);
      // A failed build (esbuild missing, a syntax error) is retried on the next request.
      bundle.catch(() => bundles.delete(name));
    }
    return bundle;
  };
  const file = (name: string) => readFileSync(new URL(name, exampleDir), 'utf8');
  const sendBundle = async (reply: FastifyReply, name: string, build: () => Promise<string>) => {
    try {
      const text = await cached(name, build);
      return reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(text);
    } catch (error) {
      app.log.error({ err: error, bundle: name }, 'demo: bundling failed (is the esbuild devDependency installed?)');
      return sendApiError(reply, 'unavailable');
    }
  };

  app.get(DEMO_PREFIX, (_request, reply) => reply.redirect(DEMO_PREFIX + '/'));
  app.get(DEMO_PREFIX + '/', (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('cache-control', 'no-cache')
      .send(file('index.html').replace('{{namespace}}', namespace)),
  );
  app.get(DEMO_PREFIX + '/chat.css', (_request, reply) => reply.type('text/css; charset=utf-8').header('cache-control', 'no-cache').send(file('chat.css')));
  app.get(DEMO_PREFIX + '/chat.js', (_request, reply) => sendBundle(reply, 'chat', bundleChat));
  app.get(DEMO_PREFIX + '/herald-client.js', (_request, reply) => sendBundle(reply, 'client', () => bundleClient(true)));

  app.get(DEMO_PREFIX + '/rooms', (_request, reply) => {
    const prefix = `${namespace}:`;
    const rooms = Object.keys(options.channels?.(prefix) ?? {})
      .map((channel) => channel.slice(prefix.length))
      .filter((name) => roomPattern.test(name))
      .sort();
    return reply.header('cache-control', 'no-store').send({ rooms });
  });

  const secret = hmacSecret(config);
  const key = secret === undefined ? undefined : new TextEncoder().encode(secret);
  app.post<{ Body: Static<typeof TokenBody> }>(DEMO_PREFIX + '/token', { schema: { body: TokenBody } }, async (request, reply) => {
    const user = request.body.user;
    if (key === undefined) return sendApiError(reply, 'unavailable');
    let jwt = new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(user)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + DEMO_TOKEN_TTL_SECONDS);
    if (config.auth.audience !== undefined) jwt = jwt.setAudience(config.auth.audience);
    if (config.auth.issuer !== undefined) jwt = jwt.setIssuer(config.auth.issuer);
    const token = await jwt.sign(key);
    return reply.header('cache-control', 'no-store').send({ token, ttl: DEMO_TOKEN_TTL_SECONDS });
  });
  app.log.info({ path: DEMO_PREFIX + '/', namespace }, 'development mode: chat demo served');
  return true;
}
