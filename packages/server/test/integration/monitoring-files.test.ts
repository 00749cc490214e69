/**
 * deploy/grafana/herald-dashboard.json and deploy/prometheus/herald-alerts.yml
 * against what a running server really exposes: every query and alert
 * expression is parsed with Prometheus' own PromQL grammar
 * (@prometheus-io/lezer-promql), and every metric it selects, every label it
 * matches or groups by, and every label value it compares with must exist in
 * a scrape of the internal listener's /metrics (after some traffic, so that
 * labelled counters have samples). Every Herald metric is on the dashboard,
 * and every alert is explained in docs/operations.md.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { parser } from '@prometheus-io/lezer-promql';
import { disconnects, replyErrors } from '@herald/protocol';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http, unique } from '../helpers/herald-ws.ts';

const root = new URL('../../../../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), 'utf8');

/** Labels Prometheus attaches to every scraped series (the target's), and the series it makes itself. */
const TARGET_LABELS = new Set(['job', 'instance']);
const PROMETHEUS_SERIES = new Map([['up', new Map<string, Set<string>>()]]);
/** Label values a counter may carry that a short test run does not produce: every registered code. */
const REGISTERED_VALUES: Record<string, Record<string, readonly string[]>> = {
  herald_disconnects_total: { code: Object.values(disconnects).map((d) => String(d.code)) },
  herald_command_errors_total: { code: Object.values(replyErrors).map((e) => String(e.code)) },
};
/** Grafana's interval variables, replaced by a duration before parsing; other `$variables` must be the dashboard's own. */
const GRAFANA_INTERVALS = /\$__(?:rate_interval|interval|range)\b/g;

/** Metric name → label name → values seen. */
type Exposition = Map<string, Map<string, Set<string>>>;

/** Reads the Prometheus text format: samples (`name{a="b"} 1`) only; HELP and TYPE lines are skipped. */
function parseExposition(text: string): Exposition {
  const metrics: Exposition = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    assert.ok(match, `an exposition line that is not a sample: ${line}`);
    const labels = metrics.get(match[1]!) ?? new Map<string, Set<string>>();
    metrics.set(match[1]!, labels);
    for (const [, name, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      const values = labels.get(name!) ?? new Set<string>();
      labels.set(name!, values);
      values.add(value!);
    }
  }
  return metrics;
}

interface Matcher {
  readonly label: string;
  readonly op: string;
  readonly value: string;
}
interface Selector {
  readonly metric: string | undefined;
  readonly matchers: readonly Matcher[];
}
interface Analysis {
  readonly selectors: readonly Selector[];
  /** Labels named by `by`, `without`, `on`, `ignoring`, `group_left/right`. */
  readonly groupingLabels: readonly string[];
  readonly syntaxErrors: readonly string[];
}

/** Parses a PromQL expression with Prometheus' grammar and lists what it selects and groups by. */
function analyze(expr: string): Analysis {
  const tree = parser.parse(expr);
  const selectors: Selector[] = [];
  const groupingLabels: string[] = [];
  const syntaxErrors: string[] = [];
  const text = (node: { from: number; to: number } | null) => (node === null ? '' : expr.slice(node.from, node.to));
  tree.iterate({
    enter(ref) {
      if (ref.type.isError) syntaxErrors.push(`at ${ref.from}: "${expr.slice(Math.max(0, ref.from - 20), ref.to + 20)}"`);
      if (ref.name === 'VectorSelector') {
        const node = ref.node;
        const matchers = node.getChild('LabelMatchers');
        const unquoted = matchers?.getChildren('UnquotedLabelMatcher') ?? [];
        // Quoted (UTF-8) names and {__name__=…} selectors would hide a metric name from this check.
        const all = matchers === null ? 0 : matchers.getChildren('UnquotedLabelMatcher').length + matchers.getChildren('QuotedLabelMatcher').length + matchers.getChildren('QuotedLabelName').length;
        if (all !== unquoted.length) syntaxErrors.push(`quoted label matcher in ${text(node)}`);
        selectors.push({
          metric: node.getChild('Identifier') === null ? undefined : text(node.getChild('Identifier')),
          matchers: unquoted.map((m) => ({
            label: text(m.getChild('LabelName')),
            op: text(m.getChild('MatchOp')),
            value: JSON.parse(text(m.getChild('StringLiteral'))) as string,
          })),
        });
      }
      if (ref.name === 'GroupingLabels') for (const label of ref.node.getChildren('LabelName')) groupingLabels.push(text(label));
    },
  });
  return { selectors, groupingLabels, syntaxErrors };
}

/** Every problem of one expression against the exposition; empty when it only uses what exists. */
function problemsOf(where: string, expr: string, exposed: Exposition, variables: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  const substituted = expr.replace(GRAFANA_INTERVALS, '5m').replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)/g, (_, braced: string | undefined, bare: string | undefined) => {
    const name = braced ?? bare!;
    if (!variables.has(name)) problems.push(`${where}: unknown variable $${name}`);
    return 'VARIABLE';
  });
  const { selectors, groupingLabels, syntaxErrors } = analyze(substituted);
  for (const error of syntaxErrors) problems.push(`${where}: PromQL syntax error ${error} in ${expr}`);
  if (selectors.length === 0) problems.push(`${where}: selects no metric: ${expr}`);
  const labelsInExpr = new Set(TARGET_LABELS);
  for (const { metric, matchers } of selectors) {
    if (metric === undefined) {
      problems.push(`${where}: a selector without a metric name in ${expr}`);
      continue;
    }
    const labels = exposed.get(metric) ?? PROMETHEUS_SERIES.get(metric);
    if (labels === undefined) {
      problems.push(`${where}: metric ${metric} is not exposed by the server`);
      continue;
    }
    for (const label of labels.keys()) labelsInExpr.add(label);
    for (const { label, op, value } of matchers) {
      if (TARGET_LABELS.has(label)) continue;
      const seen = labels.get(label);
      if (seen === undefined) {
        problems.push(`${where}: ${metric} has no label ${label}`);
        continue;
      }
      const known = new Set([...seen, ...(REGISTERED_VALUES[metric]?.[label] ?? [])]);
      // Equality, and regexes that are plain alternatives (a|b), compare with values that must exist.
      const values = op === '=' || op === '!=' ? [value] : op === '=~' && /^[\w-]+(\|[\w-]+)*$/.test(value) ? value.split('|') : [];
      for (const v of values) if (!known.has(v)) problems.push(`${where}: ${metric}{${label}} never takes the value "${v}" (seen: ${[...known].join(', ')})`);
    }
  }
  for (const label of groupingLabels) if (!labelsInExpr.has(label)) problems.push(`${where}: groups by ${label}, a label none of its metrics has`);
  return problems;
}

interface Panel {
  readonly id: number;
  readonly type: string;
  readonly title: string;
  readonly datasource?: { readonly uid: string };
  readonly gridPos: { readonly x: number; readonly y: number; readonly w: number; readonly h: number };
  readonly targets?: readonly { readonly expr: string; readonly refId: string }[];
  readonly panels?: readonly Panel[];
}
interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly panels: readonly Panel[];
  readonly templating: { readonly list: readonly { readonly name: string; readonly type: string; readonly query: string | { readonly query: string } }[] };
}
interface Rule {
  readonly alert?: unknown;
  readonly record?: unknown;
  readonly expr?: unknown;
  readonly for?: unknown;
  readonly labels?: Record<string, unknown>;
  readonly annotations?: Record<string, unknown>;
}

const dashboard = JSON.parse(read('deploy/grafana/herald-dashboard.json')) as Dashboard;
const rulesFile = parseYaml(read('deploy/prometheus/herald-alerts.yml')) as { groups: { name: string; rules: Rule[] }[] };
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const variables = new Set(dashboard.templating.list.map((v) => v.name));
const operations = read('docs/operations.md');

describe('the Grafana dashboard and the Prometheus alert rules use what the server exposes', { timeout: 60000 }, () => {
  let h: TestHerald;
  let exposed: Exposition;

  before(async () => {
    h = await startHerald();
    // Traffic, so that every labelled counter has samples: a connection, a subscription, a publication
    // delivered, a command error, a disconnect.
    const channel = unique('chat:monitoring');
    const alice = await connectWs(h, 'alice');
    await alice.call('subscribe', { channel });
    assert.equal((await h.api('publish', { channel, data: { n: 1 } })).status, 200);
    await alice.waitPublications(channel, 1);
    assert.equal(await alice.callError('subscribe', { channel: 'nope:x' }), 102);
    const bob = await connectWs(h, 'bob');
    bob.ws.close(1000);
    await bob.waitClose();
    // The garbage-collection series appear once prom-client has recorded a collection:
    // collect and scrape until they are there (bounded), so the scrape never comes first.
    let answer = await http(`http://127.0.0.1:${h.server.adminPort}/metrics`);
    for (let attempt = 0; attempt < 20 && !answer.text.includes('herald_nodejs_gc_duration_seconds_count'); attempt++) {
      await collectedOnce();
      answer = await http(`http://127.0.0.1:${h.server.adminPort}/metrics`);
    }
    assert.equal(answer.status, 200);
    exposed = parseExposition(answer.text);
    assert.ok(exposed.get('herald_disconnects_total')?.get('code')?.has('1000'), 'the disconnect was counted before the scrape');
  });

  after(async () => {
    closeAllClients();
    await h.close();
  });

  test('the dashboard: JSON, panels on the grid, one data source variable, every query valid against /metrics', () => {
    assert.equal(typeof dashboard.uid, 'string');
    assert.ok(variables.has('datasource') && variables.has('job') && variables.has('instance'));
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    const problems: string[] = [];
    let queries = 0;
    for (const panel of panels) {
      assert.ok(panel.gridPos.x >= 0 && panel.gridPos.x + panel.gridPos.w <= 24, `${panel.title}: inside the 24-column grid`);
      if (panel.type === 'row') continue;
      assert.equal(panel.datasource?.uid, '${datasource}', `${panel.title}: uses the data source variable`);
      assert.ok((panel.targets ?? []).length > 0, `${panel.title}: has a query`);
      for (const target of panel.targets ?? []) {
        queries++;
        problems.push(...problemsOf(`panel "${panel.title}" ${target.refId}`, target.expr, exposed, variables));
      }
    }
    for (const variable of dashboard.templating.list) {
      if (variable.type !== 'query') continue;
      const query = typeof variable.query === 'string' ? variable.query : variable.query.query;
      const match = /^label_values\((.+),\s*(\w+)\)$/.exec(query);
      assert.ok(match, `variable ${variable.name}: a label_values(selector, label) query`);
      assert.ok(TARGET_LABELS.has(match[2]!), `variable ${variable.name}: lists a target label`);
      problems.push(...problemsOf(`variable ${variable.name}`, match[1]!, exposed, variables));
    }
    assert.deepEqual(problems, []);
    assert.ok(queries >= 20, `the dashboard has its queries (${queries})`);
  });

  test('every Herald metric is on the dashboard', () => {
    const used = new Set(panels.flatMap((p) => (p.targets ?? []).flatMap((t) => analyze(t.expr.replace(GRAFANA_INTERVALS, '5m')).selectors.map((s) => s.metric))));
    const own = [...exposed.keys()].filter((name) => name.startsWith('herald_') && !name.startsWith('herald_process_') && !name.startsWith('herald_nodejs_'));
    assert.ok(own.length >= 9, `the scrape has Herald's own metrics: ${own.join(', ')}`);
    assert.deepEqual(own.filter((name) => !used.has(name)), [], 'metrics missing from deploy/grafana/herald-dashboard.json');
  });

  test('the alert rules: Prometheus rule file format, every expression valid against /metrics, every alert in docs/operations.md', () => {
    assert.ok(Array.isArray(rulesFile.groups) && rulesFile.groups.length > 0, 'a rule file has groups');
    const names: string[] = [];
    const problems: string[] = [];
    for (const group of rulesFile.groups) {
      assert.equal(typeof group.name, 'string');
      assert.ok(Array.isArray(group.rules) && group.rules.length > 0, `group ${group.name} has rules`);
      for (const rule of group.rules) {
        assert.equal(rule.record, undefined, 'alerting rules only');
        assert.ok(typeof rule.alert === 'string' && /^Herald[A-Z][A-Za-z0-9]+$/.test(rule.alert), `alert name ${String(rule.alert)}`);
        const name = rule.alert;
        names.push(name);
        assert.equal(typeof rule.expr, 'string', `${name}: expr`);
        assert.match(String(rule.for), /^(\d+[smhd])+$/, `${name}: for is a Prometheus duration`);
        assert.ok(['critical', 'warning', 'info'].includes(String(rule.labels?.['severity'])), `${name}: severity`);
        assert.equal(typeof rule.annotations?.['summary'], 'string', `${name}: summary`);
        assert.equal(typeof rule.annotations?.['description'], 'string', `${name}: description`);
        problems.push(...problemsOf(`alert ${name}`, rule.expr as string, exposed, new Set()));
        assert.ok(operations.includes(`\`${name}\``), `${name} is explained in docs/operations.md`);
      }
    }
    assert.equal(new Set(names).size, names.length, 'alert names are unique');
    assert.deepEqual(problems, []);
  });

  test('docs/operations.md names both files', () => {
    assert.ok(operations.includes('deploy/grafana/herald-dashboard.json'));
    assert.ok(operations.includes('deploy/prometheus/herald-alerts.yml'));
  });
});

test('the checker itself: it refuses a misspelled metric, an unknown label, an unregistered code, a syntax error', () => {
  const exposed: Exposition = new Map([['herald_disconnects_total', new Map([['code', new Set(['1000'])], ['transport', new Set(['websocket'])]])]]);
  const none = new Set<string>();
  assert.deepEqual(problemsOf('ok', 'sum by (code, job) (rate(herald_disconnects_total{code="3004"}[5m])) > 0', exposed, none), []);
  assert.match(problemsOf('a', 'rate(herald_disconect_total[5m])', exposed, none).join(), /herald_disconect_total is not exposed/);
  assert.match(problemsOf('b', 'herald_disconnects_total{reason="x"}', exposed, none).join(), /has no label reason/);
  assert.match(problemsOf('c', 'herald_disconnects_total{code="3999"}', exposed, none).join(), /never takes the value "3999"/);
  assert.match(problemsOf('d', 'sum by (kind) (herald_disconnects_total)', exposed, none).join(), /groups by kind/);
  assert.match(problemsOf('e', 'sum(rate(herald_disconnects_total[5m])', exposed, none).join(), /syntax error/);
  assert.match(problemsOf('f', 'herald_disconnects_total{job=~"$cluster"}', exposed, none).join(), /unknown variable \$cluster/);
  assert.match(problemsOf('g', '{__name__="herald_disconnects_total"}', exposed, none).join(), /without a metric name/);
});

/** Resolves after the next garbage collection of this process (the test server's), allocating until one comes. */
async function collectedOnce(): Promise<void> {
  const { PerformanceObserver } = await import('node:perf_hooks');
  let seen = false;
  const observer = new PerformanceObserver(() => {
    seen = true;
  });
  observer.observe({ entryTypes: ['gc'] });
  try {
    const deadline = Date.now() + 10000;
    let keep: unknown[] = [];
    while (!seen && Date.now() < deadline) {
      for (let i = 0; i < 10000; i++) keep.push({ i, s: String(i) });
      keep = [];
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    observer.disconnect();
  }
  // prom-client's own gc observer records on the same notification; let it run.
  await new Promise((resolve) => setImmediate(resolve));
}
