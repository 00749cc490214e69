/**
 * `npm run build:client`: bundles the client SDK for browsers into
 * dist/herald-client.js (minified ESM, no dependencies) and prints its size,
 * raw and gzipped (the number in the README). TypeScript users import the
 * sources (src/client/index.ts), which are the types.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { bundleClient } from '../src/app/demo.ts';

const out = new URL('../dist/herald-client.js', import.meta.url);
const text = await bundleClient(true);
mkdirSync(new URL('.', out), { recursive: true });
writeFileSync(out, text);
const bytes = Buffer.byteLength(text);
const gzipped = gzipSync(text, { level: 9 }).length;
process.stdout.write(`dist/herald-client.js: ${bytes} bytes minified, ${gzipped} bytes gzipped (${(gzipped / 1024).toFixed(1)} KiB)\n`);
