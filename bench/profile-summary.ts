/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, a `.cpuprofile` file):
 * self time per package and per function, and the time spent with a
 * package anywhere on the stack ("inclusive"), optionally only inside a
 * time window.
 *
 *   node bench/profile-summary.ts PROFILE [--window=FROM-TO] [--top=25]
 *
 * FROM and TO are CLOCK_MONOTONIC microseconds (the clock of the profile's
 * timestamps, and of `process.hrtime`): bench/publish.ts prints the window
 * of each measured phase. Packages are `node_modules` packages by name,
 * Herald's own sources as `herald:<package>/<folder>`, Node's internals as
 * `node:<module>`, and V8's pseudo-frames as they are named
 * (`(garbage collector)`, `(program)`, `(idle)`). The last table gives
 * each function's inclusive time (itself and what it called).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: number[];
}
interface Profile {
  readonly nodes: ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: number[];
  readonly timeDeltas: number[];
}

export function packageOf(frame: CallFrame): string {
  const url = frame.url;
  if (url === '') return frame.functionName.startsWith('(') ? frame.functionName : '(native)';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const rest = url.slice(modules + 14).split('/');
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? url);
  }
  const own = /\/packages\/([^/]+)\/(?:src|dist)\/([^/]+)/.exec(url);
  if (own !== null) return `herald:${own[1] ?? ''}/${(own[2] ?? '').replace(/\.[jt]s$/, '')}`;
  if (url.startsWith('node:')) return url.split('/')[0] ?? url;
  return url;
}

function functionKey(frame: CallFrame): string {
  return `${frame.functionName || '(anonymous)'} ${packageOf(frame)}${frame.url === '' ? '' : `:${String(frame.lineNumber + 1)}`}`;
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { window: { type: 'string' }, top: { type: 'string', default: '25' } },
  });
  const file = positionals[0];
  if (file === undefined) throw new Error('usage: node bench/profile-summary.ts PROFILE [--window=FROM-TO] [--top=25]');
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const [from, to] = values.window === undefined ? [-Infinity, Infinity] : values.window.split('-').map(Number);
  const top = Number(values.top);

  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const selfByPackage = new Map<string, number>();
  const selfByFunction = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const inclusiveByFunction = new Map<string, number>();
  const add = (map: Map<string, number>, key: string, us: number): void => {
    map.set(key, (map.get(key) ?? 0) + us);
  };
  let total = 0;
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    const next = profile.timeDeltas[i + 1];
    if (next === undefined || at < (from ?? -Infinity) || at > (to ?? Infinity)) continue;
    const node = byId.get(profile.samples[i] ?? -1);
    if (node === undefined) continue;
    const frame = node.callFrame;
    if (frame.functionName === '(idle)') continue;
    total += next;
    const pkg = packageOf(frame);
    add(selfByPackage, pkg, next);
    add(selfByFunction, functionKey(frame), next);
    const seen = new Set<string>();
    const seenFunctions = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const callFrame = byId.get(id)?.callFrame ?? { functionName: '', url: '', lineNumber: 0 };
      const p = packageOf(callFrame);
      if (!seen.has(p)) {
        seen.add(p);
        add(inclusive, p, next);
      }
      const f = functionKey(callFrame);
      if (!seenFunctions.has(f)) {
        seenFunctions.add(f);
        add(inclusiveByFunction, f, next);
      }
    }
  }
  const table = (title: string, map: Map<string, number>): string => {
    const rows = [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
    return [`${title}:`, ...rows.map(([key, us]) => `  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}`)].join('\n');
  };
  console.log(
    [
      `${file}: ${(total / 1000).toFixed(0)} ms of CPU samples (idle excluded)${values.window === undefined ? '' : ` in window ${values.window}`}`,
      '',
      table('self time by package', selfByPackage),
      '',
      table('inclusive time by package (on the stack)', inclusive),
      '',
      table('self time by function', selfByFunction),
      '',
      table('inclusive time by function (on the stack)', inclusiveByFunction),
    ].join('\n'),
  );
}

main();
