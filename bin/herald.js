#!/usr/bin/env node
// Entry point for `npx herald` / an installed `herald`: Node 24 runs the TypeScript sources directly.
// Plain JavaScript that any Node can parse: the version is checked before the sources are loaded.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`Herald needs Node 24; run it through npm scripts or install Node 24 (this is Node ${process.version})\n`);
  process.exit(1);
}
await import('../src/cli/main.ts');
