/**
 * `npm run build` (and `npm ci`, through `prepare`): builds every workspace
 * package into its `dist/`: JavaScript and `.d.ts` from TypeScript (`tsc -b`,
 * project references: protocol first; the server's and the protocol's
 * JavaScript then reprinted in ASCII by esbuild), and the client SDK's browser bundles
 * with esbuild: `herald-client.js` (ESM, minified) and
 * `herald-client.global.js` (a plain script tag: `window.Herald`). Prints
 * the bundle sizes, raw and gzipped (the numbers in the README). Writes the
 * config file's JSON Schema into the server package
 * (`herald/config.schema.json`, the file a config's `"$schema"` names).
 * Bundles the admin console (packages/console: Preact, uPlot) into the
 * server package's `console-dist/`: `index.html` and `assets/` with hashed
 * names, no inline script or style (the console's CSP has no
 * `unsafe-inline`), served by packages/server/src/console/console-static.ts.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';
import ts from 'typescript';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const tsc = require.resolve('typescript/bin/tsc');
const projects = ['protocol', 'client', 'server-sdk', 'server'].map((name) => `packages/${name}/tsconfig.build.json`);
execFileSync(process.execPath, [tsc, '-b', ...projects], { cwd: root, stdio: 'inherit' });

// The server's JavaScript (its package and the protocol's) reprinted, not minified: without comments (TypeScript's
// printer), in ASCII (esbuild: other characters as \u escapes). A module's source stays in the heap of the process
// that loaded it, and one character outside Latin-1 (an arrow in a comment) stores a whole file at two bytes per
// character: 1 MiB of an idle server's heap (docs/performance.md, "Footprint, sixth pass"). The .d.ts files keep
// their docs.
for (const name of ['protocol', 'server']) {
  const dist = `${root}packages/${name}/dist/`;
  for (const file of readdirSync(dist, { recursive: true, encoding: 'utf8' })) {
    if (!file.endsWith('.js')) continue;
    const source = ts.createSourceFile(file, readFileSync(dist + file, 'utf8'), ts.ScriptTarget.Latest, false, ts.ScriptKind.JS);
    const code = ts.createPrinter({ removeComments: true }).printFile(source);
    writeFileSync(dist + file, esbuild.transformSync(code, { loader: 'js', format: 'esm', charset: 'ascii' }).code);
  }
}

// After tsc: the schema module imports @herald/protocol, whose dist/ now exists (for a run without the herald-source condition).
const { renderConfigJsonSchema } = await import('../packages/server/src/config/json-schema.ts');
writeFileSync(`${root}packages/server/config.schema.json`, renderConfigJsonSchema());

const client = `${root}packages/client/`;
const common: esbuild.BuildOptions = {
  entryPoints: [`${client}src/index.ts`],
  bundle: true,
  platform: 'browser',
  target: 'es2022',
  minify: true,
  legalComments: 'none',
  conditions: ['herald-source'],
  logLevel: 'warning',
};
await esbuild.build({ ...common, format: 'esm', outfile: `${client}dist/herald-client.js` });
await esbuild.build({ ...common, format: 'iife', globalName: 'Herald', outfile: `${client}dist/herald-client.global.js` });
for (const name of ['herald-client.js', 'herald-client.global.js']) {
  const text = readFileSync(`${client}dist/${name}`);
  const gzipped = gzipSync(text, { level: 9 }).length;
  process.stdout.write(`packages/client/dist/${name}: ${text.length} bytes minified, ${gzipped} bytes gzipped (${(gzipped / 1024).toFixed(1)} KiB)\n`);
}

// The admin console: one ESM bundle and one stylesheet with content hashes, named by index.html.
const consoleDist = `${root}packages/server/console-dist/`;
rmSync(consoleDist, { recursive: true, force: true });
mkdirSync(`${consoleDist}assets`, { recursive: true });
const consoleBuild = await esbuild.build({
  entryPoints: [`${root}packages/console/src/main.tsx`],
  bundle: true,
  platform: 'browser',
  target: 'es2022',
  format: 'esm',
  minify: true,
  legalComments: 'none',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: `${consoleDist}assets`,
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'warning',
});
const consoleOutputs = Object.entries(consoleBuild.metafile.outputs);
const consoleScript = consoleOutputs.find(([, output]) => output.entryPoint !== undefined)?.[0];
const consoleStyle = consoleOutputs.find(([name]) => name.endsWith('.css'))?.[0];
if (consoleScript === undefined || consoleStyle === undefined) throw new Error('console build: no script or stylesheet in the output');
writeFileSync(
  `${consoleDist}index.html`,
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Herald console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/${basename(consoleStyle)}">
<script type="module" src="assets/${basename(consoleScript)}"></script>
</head>
<body>
<div id="app"></div>
<noscript>The Herald console needs JavaScript.</noscript>
</body>
</html>
`,
);
for (const [name, output] of consoleOutputs) {
  const gzipped = gzipSync(readFileSync(`${root}${name}`), { level: 9 }).length;
  process.stdout.write(`${name}: ${output.bytes} bytes minified, ${gzipped} bytes gzipped\n`);
}
