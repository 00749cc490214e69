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
