/**
 * The Prometheus exporter counts its own server only: two Herald servers in
 * one process (tests, embedding) do not see each other's connections,
 * subscriptions or publications, and an exporter stops listening to the
 * diagnostics channels when its server closes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, eventually, http, unique } from '../helpers/herald-ws.ts';
import { diagnostics } from '../../src/observability/diagnostics.ts';
import { Registry, collectDefaultMetrics } from 'prom-client';

/** The value of one sample (`name{labels} value`), 0 when absent. */
async function sample(h: TestHerald, name: string, labels: string): Promise<number> {
  const answer = await http(`http://127.0.0.1:${h.server.adminPort}/metrics`);
  assert.equal(answer.status, 200);
  const line = answer.text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `) || (labels === '' && l.startsWith(`${name} `)));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

test('two servers in one process: each exporter counts its own server, and lets go when it closes', { timeout: 60000 }, async () => {
  const a = await startHerald();
  const b = await startHerald();
  try {
    const ws = 'transport="websocket"';
    const channel = unique('chat:metrics');
    const onA = await Promise.all([connectWs(a, 'a1'), connectWs(a, 'a2'), connectWs(a, 'a3')]);
    await onA[0]!.call('subscribe', { channel });
    await onA[1]!.call('subscribe', { channel });
    const onB = await connectWs(b, 'b1');
    assert.equal((await a.api('publish', { channel, data: 1 })).status, 200);
    await onA[0]!.waitPublications(channel, 1);
    await onA[1]!.waitPublications(channel, 1);
    assert.equal(await onB.callError('subscribe', { channel: 'nope:x' }), 102);

    assert.equal(await sample(a, 'herald_connections', ws), 3);
    assert.equal(await sample(a, 'herald_connections_opened_total', ws), 3);
    assert.equal(await sample(a, 'herald_subscriptions', ws), 2);
    assert.equal(await sample(a, 'herald_publications_total', 'source="api"'), 1);
    assert.equal(await sample(a, 'herald_deliveries_total', ''), 2);
    assert.equal(await sample(a, 'herald_command_errors_total', 'code="102"'), 0);
    assert.equal(await sample(a, 'herald_health', 'status="ok"'), 1);
    assert.equal(await sample(a, 'herald_health', 'status="degraded"'), 0);

    assert.equal(await sample(b, 'herald_connections', ws), 1);
    assert.equal(await sample(b, 'herald_connections_opened_total', ws), 1);
    assert.equal(await sample(b, 'herald_subscriptions', ws), 0);
    assert.equal(await sample(b, 'herald_publications_total', 'source="api"'), 0);
    assert.equal(await sample(b, 'herald_deliveries_total', ''), 0);
    assert.equal(await sample(b, 'herald_command_errors_total', 'code="102"'), 1);

    for (const c of onA) c.ws.close();
    await eventually(async () => ((await sample(a, 'herald_connections', ws)) === 0 ? true : undefined), 'A counts its closed connections');
    // a close frame without a code (1005) is counted as 1000
    assert.equal(await sample(a, 'herald_disconnects_total', 'transport="websocket",code="1000"'), 3);
    assert.equal(await sample(b, 'herald_connections', ws), 1, 'B still counts only its own');
    assert.equal(await sample(b, 'herald_disconnects_total', 'transport="websocket",code="1000"'), 0);
  } finally {
    closeAllClients();
    await a.close();
    await b.close();
  }
  for (const [name, channel] of Object.entries(diagnostics)) {
    assert.equal(channel.hasSubscribers, false, `diagnostics channel ${name} still has a subscriber after both servers closed`);
  }
});

test("the process metrics: prom-client's default series under Herald's prefix, and the CPU counters add up", { timeout: 60000 }, async () => {
  const h = await startHerald();
  try {
    // What prom-client's own collectDefaultMetrics registers (observability/prometheus.ts does it without the package's index).
    const reference = new Registry();
    collectDefaultMetrics({ register: reference, prefix: 'herald_' });
    const declarations = (text: string): string[] => text.split('\n').filter((l) => /^# (HELP|TYPE) herald_(process|nodejs)_/.test(l));
    const expected = declarations(await reference.metrics());
    assert.ok(expected.some((l) => l.startsWith('# TYPE herald_process_cpu_seconds_total counter')), 'the reference has the CPU counters');
    const answer = await http(`http://127.0.0.1:${h.server.adminPort}/metrics`);
    assert.deepEqual(declarations(answer.text), expected);

    for (let i = 0; i < 3; i++) await http(`http://127.0.0.1:${h.server.adminPort}/metrics`);
    const text = (await http(`http://127.0.0.1:${h.server.adminPort}/metrics`)).text;
    const value = (name: string): number => Number(/^\S+ (\S+)$/.exec(text.split('\n').find((l) => l.startsWith(`${name} `)) ?? '')?.[1]);
    const user = value('herald_process_cpu_user_seconds_total');
    const system = value('herald_process_cpu_system_seconds_total');
    const total = value('herald_process_cpu_seconds_total');
    assert.ok(user > 0 && system >= 0, `user ${user}, system ${system}`);
    assert.ok(Math.abs(total - (user + system)) < 1e-6, `total ${total} = user ${user} + system ${system}`);
    // The counters hold the process's CPU since the exporter started: no more than the process used in all.
    const used = process.cpuUsage();
    assert.ok(total <= (used.user + used.system) / 1e6, `total ${total} within the process's CPU`);
  } finally {
    await h.close();
  }
});
