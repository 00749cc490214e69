/**
 * The admin console's static files on the internal listener: `B/` (the
 * page) and `B/assets/<name>` (the bundle and stylesheet, content-hashed),
 * where `B` is the console's base path. The files come from
 * `console-dist/` in the server package, written by scripts/build.ts at
 * install time (`npm ci`) and shipped in the package's tarball, so an
 * installed `herald` serves the console without a build step.
 *
 * Guarantees:
 * - only the files found in `console-dist/` at registration are served,
 *   looked up by exact name in a map (no path from the URL reaches the file
 *   system, so no traversal);
 * - the page carries a strict Content-Security-Policy (same-origin scripts
 *   and styles only, no `unsafe-inline`, `frame-ancestors 'none'`) and
 *   `Cache-Control: no-store`; hashed assets are `immutable`;
 * - without a built `console-dist/` (a clone where the build did not run)
 *   the routes answer 404 `not_found` and one warning says how to build.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { sendApiError } from '../transports/http-connection.ts';

export interface ConsoleStaticOptions {
  /** The console's base path (`admin.console.basePath`): `/console`, or `/` for the root. */
  readonly basePath: string;
  /** Where the built files are; defaults to the server package's `console-dist/`. */
  readonly dir?: string | URL;
  /** Told once when the console has not been built. */
  readonly warn?: (message: string) => void;
}

/** The console's policy: what it loads is its own bundle, stylesheet and API; uPlot's styles go through the CSSOM, which this allows. */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "object-src 'none'",
].join('; ');

const TYPES: Readonly<Record<string, string>> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

interface Asset {
  readonly type: string;
  readonly body: Buffer;
}

/** The default location: `console-dist/` beside `src/` and `dist/` in the server package. */
export const CONSOLE_DIST = new URL('../../console-dist/', import.meta.url);

/** `/console/` → `/console`; `/` or `` → ``. */
export function normalizeBasePath(basePath: string): string {
  const trimmed = basePath.replace(/\/+$/, '');
  return trimmed === '' ? '' : trimmed.startsWith('/') ? trimmed : `/${trimmed}`;
}

function load(dir: URL): { page: Buffer | undefined; assets: Map<string, Asset> } {
  const assets = new Map<string, Asset>();
  const pageFile = new URL('index.html', dir);
  if (!existsSync(pageFile)) return { page: undefined, assets };
  const assetDir = new URL('assets/', dir);
  if (existsSync(assetDir)) {
    for (const entry of readdirSync(assetDir, { withFileTypes: true })) {
      const type = TYPES[extname(entry.name)];
      if (!entry.isFile() || type === undefined) continue;
      assets.set(entry.name, { type, body: readFileSync(new URL(entry.name, assetDir)) });
    }
  }
  return { page: readFileSync(pageFile), assets };
}

export function registerConsoleStatic(app: FastifyInstance, options: ConsoleStaticOptions): void {
  const base = normalizeBasePath(options.basePath);
  const dir = options.dir === undefined ? CONSOLE_DIST : typeof options.dir === 'string' ? pathToFileURL(options.dir.endsWith('/') ? options.dir : `${options.dir}/`) : options.dir;
  const { page, assets } = load(dir);
  if (page === undefined) options.warn?.(`the console is not built (no ${new URL('index.html', dir).pathname}): run "npm run build"`);

  if (base !== '') {
    // `B` → `B/`: the page's relative asset and API URLs need the slash.
    app.get(base, (_request, reply) => reply.code(308).header('location', `${base}/`).header('cache-control', 'no-store').send());
  }
  app.get(`${base}/`, (_request, reply) => {
    if (page === undefined) return sendApiError(reply, 'not_found');
    return reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .header('content-security-policy', CONSOLE_CSP)
      .header('x-frame-options', 'DENY')
      .send(page);
  });
  app.get<{ Params: { name: string } }>(`${base}/assets/:name`, (request, reply) => {
    const asset = assets.get(request.params.name);
    if (asset === undefined) return sendApiError(reply, 'not_found');
    return reply.header('content-type', asset.type).header('cache-control', 'public, max-age=31536000, immutable').header('x-content-type-options', 'nosniff').send(asset.body);
  });
}
