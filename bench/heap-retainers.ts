/**
 * What each of N idle connections holds, from one V8 heap snapshot taken
 * with them open (`bench/connection-memory.ts --keep-snapshot=DIR`): every
 * object is grouped by its kind (type and constructor name, as
 * connection-memory.ts counts them) and by its first strong retainer (that
 * object's kind and the edge's name). Groups with at least 0.9 × N members
 * are per connection; their bytes per connection, largest first, say what
 * a connection costs and who keeps it alive (a closure's context, a
 * listener array, a field of Herald's Client or transport...).
 *
 *   node bench/heap-retainers.ts FILE N [--top=60] [--kind=TEXT]
 *
 * A first retainer is one path among possibly several; read the table as
 * "what holds it", not as a dominator tree.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

const { values, positionals } = parseArgs({
  options: { top: { type: 'string', default: '60' }, kind: { type: 'string' } },
  allowPositionals: true,
  strict: true,
});
const [file, countText] = positionals;
if (file === undefined || countText === undefined) throw new Error('usage: node bench/heap-retainers.ts FILE N [--top=60] [--kind=TEXT]');
const n = Number(countText);
const parsed = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
const meta = parsed.snapshot.meta;
const nodeWidth = meta.node_fields.length;
const edgeWidth = meta.edge_fields.length;
const nodeTypes = meta.node_types[0];
const edgeTypes = meta.edge_types[0];
const TYPE = meta.node_fields.indexOf('type');
const NAME = meta.node_fields.indexOf('name');
const SIZE = meta.node_fields.indexOf('self_size');
const EDGES = meta.node_fields.indexOf('edge_count');
const EDGE_TYPE = meta.edge_fields.indexOf('type');
const EDGE_NAME = meta.edge_fields.indexOf('name_or_index');
const TO = meta.edge_fields.indexOf('to_node');
const { nodes, edges, strings } = parsed;
const count = nodes.length / nodeWidth;

const BY_TYPE_ONLY = new Set(['string', 'concatenated string', 'sliced string', 'number', 'code']);
function kindOf(node: number): string {
  const type = nodeTypes[nodes[node * nodeWidth + TYPE]!] ?? '?';
  return BY_TYPE_ONLY.has(type) ? type : `${type}:${String(strings[nodes[node * nodeWidth + NAME]!]).slice(0, 40)}`;
}

// The first strong edge into each node: its source and the edge's name.
const retainer = new Int32Array(count).fill(-1);
const edgeName: string[] = new Array<string>(count);
let edge = 0;
for (let node = 0; node < count; node++) {
  const edgeCount = nodes[node * nodeWidth + EDGES]!;
  for (let k = 0; k < edgeCount; k++, edge += edgeWidth) {
    const type = edgeTypes[edges[edge + EDGE_TYPE]!];
    if (type === 'weak') continue;
    const to = edges[edge + TO]! / nodeWidth;
    if (retainer[to] !== -1) continue;
    retainer[to] = node;
    const name = edges[edge + EDGE_NAME]!;
    edgeName[to] = type === 'element' || type === 'hidden' ? `[${type}]` : String(strings[name]);
  }
}

const groups = new Map<string, { members: number; bytes: number }>();
for (let node = 0; node < count; node++) {
  const kind = kindOf(node);
  if (values.kind !== undefined && !kind.includes(values.kind)) continue;
  const from = retainer[node]!;
  const key = `${kind}  <- ${from < 0 ? '(root)' : kindOf(from)} .${edgeName[node] ?? ''}`;
  const group = groups.get(key) ?? { members: 0, bytes: 0 };
  group.members++;
  group.bytes += nodes[node * nodeWidth + SIZE]!;
  groups.set(key, group);
}
const rows = [...groups].filter(([, g]) => g.members >= n * 0.9).sort((a, b) => b[1].bytes - a[1].bytes);
let total = 0;
for (const [, g] of rows) total += g.bytes;
console.log(`${file}: ${rows.length} groups with at least ${Math.ceil(n * 0.9)} members, ${(total / n).toFixed(0)} B per connection in all (garbage-free, but not only the connections' own)`);
console.log('| bytes per connection | objects per connection | kind <- first retainer .edge |');
console.log('|---:|---:|---|');
for (const [key, g] of rows.slice(0, Number(values.top))) console.log(`| ${(g.bytes / n).toFixed(0)} | ${(g.members / n).toFixed(2)} | \`${key}\` |`);
