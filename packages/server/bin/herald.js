#!/usr/bin/env node
// Entry point for `npx herald` and an installed `herald`: the JavaScript built into dist/ (npm run build).
// Plain JavaScript that any Node can parse: the version is checked before anything else is loaded.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`Herald needs Node 24; run it through npm scripts or install Node 24 (this is Node ${process.version})\n`);
  process.exit(1);
}
// While the server loads, the young generation keeps its initial size and the optimizing compilers wait
// (src/cli/startup-heap.ts): 16 MiB less for an idle server.
const { holdYoungGeneration } = await import('../dist/cli/startup-heap.js');
holdYoungGeneration();
await import('../dist/cli/main.js');
