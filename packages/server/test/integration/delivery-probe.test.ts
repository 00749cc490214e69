/**
 * The end-to-end delivery probe of the memory and sqlite engines (issue 14,
 * part 3), on real processes: a single `herald serve` on each engine and a
 * two-worker cluster (where the probe goes worker → primary → worker). The
 * probe's path is cut through the test-only debug action on the internal
 * listener (HERALD_TEST_DEBUG_ACTIONS=1): the node's subscription to its
 * probe channel is dropped in the broker (in the cluster, at the primary).
 * Readiness turns 503 with `delivery_probe`, and 200 again once the
 * subscription is back. The probe leaves nothing in the sqlite state file
 * and shows in no metric.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { TestCluster } from '../cluster/harness.ts';
import { call, poll } from '../helpers/internal-http.ts';

const probeConfig = { probeIntervalMs: 100, probeDeadlineMs: 500 };

/** Rows in the sqlite state file's streams and publications (`history_log`, schema 15; read beside the running server). */
function storedRows(file: string): { streams: number; publications: number } {
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    const count = (table: string) => Number((db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n);
    return { streams: count('streams'), publications: count('history_log') };
  } finally {
    db.close();
  }
}

for (const engine of ['memory', 'sqlite'] as const) {
  test(`single process, ${engine} engine: a cut delivery path makes the process not ready (delivery_probe); back, ready again`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-probe-'));
    const configFile = join(dir, 'herald.json');
    writeFileSync(
      configFile,
      JSON.stringify({ mode: 'development', stateDir: join(dir, 'state'), engine: { type: engine, ...probeConfig }, listen: { port: 0 }, admin: { port: 0 }, log: { level: 'info' } }),
    );
    const herald = new HeraldProcess(['--config', configFile], dir, { HERALD_TEST_DEBUG_ACTIONS: '1' });
    try {
      const port = await herald.listeningPort();
      const adminPort = await herald.until(() => herald.logs.find((l) => l['msg'] === 'internal listener (metrics, health)')?.['port'] as number | undefined, 'internal listener');
      for (const p of [port, adminPort]) assert.deepEqual(await call(p, 'GET', '/health/ready'), { status: 200, body: { status: 'ready' } });
      // The debug action is on the internal listener only.
      assert.equal((await call(port, 'POST', '/debug/delivery-probe?cut=1')).status, 404);

      assert.deepEqual(await call(adminPort, 'POST', '/debug/delivery-probe?cut=1'), { status: 200, body: { cut: true } });
      const failing = await herald.until(() => herald.logs.find((l) => l['msg'] === 'delivery probe failing; not ready'), 'the probe failure line');
      assert.equal(failing['level'], 50);
      assert.equal(failing['reason'], 'a probe was not delivered back within 500 ms');
      for (const p of [port, adminPort]) {
        assert.deepEqual(await call(p, 'GET', '/health/ready'), {
          status: 503,
          body: { status: 'not_ready', reasons: [{ reason: 'delivery_probe', detail: 'a probe was not delivered back within 500 ms' }] },
        });
        // Liveness holds, and /health stays the engine's and the drain's.
        assert.equal((await call(p, 'GET', '/health/live')).status, 200);
        assert.deepEqual(await call(p, 'GET', '/health'), { status: 200, body: { status: 'ok' } });
      }

      assert.deepEqual(await call(adminPort, 'POST', '/debug/delivery-probe?cut=0'), { status: 200, body: { cut: false } });
      await herald.until(() => herald.logs.find((l) => l['msg'] === 'delivery probe passes again; ready'), 'the probe passing again');
      for (const p of [port, adminPort]) assert.deepEqual(await call(p, 'GET', '/health/ready'), { status: 200, body: { status: 'ready' } });

      // Probes came and went: no channel, no publication in the metrics, nothing in the state file.
      const metrics = String((await call(adminPort, 'GET', '/metrics')).body);
      assert.match(metrics, /^herald_channels 0$/m);
      assert.doesNotMatch(metrics, /^herald_publications_total\{/m);
      assert.doesNotMatch(metrics, /^herald_deliveries_total [1-9]/m);
      if (engine === 'sqlite') assert.deepEqual(storedRows(join(dir, 'state', 'herald.db')), { streams: 0, publications: 0 });
    } catch (error) {
      console.log(herald.logs.slice(-8));
      throw error;
    } finally {
      await herald.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('cluster: the probe crosses the link (worker → primary → worker); a cut makes the cluster not ready, naming the worker', async () => {
  const cluster = await TestCluster.start({ workers: 2, env: { HERALD_TEST_DEBUG_ACTIONS: '1' }, config: { engine: probeConfig } });
  // One kept-alive connection to the internal listener: one worker.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    await poll(async () => ((await call(cluster.port, 'GET', '/health/ready')).status === 200 ? true : undefined), 'cluster ready');
    assert.deepEqual(await call(cluster.adminPort, 'POST', '/debug/delivery-probe?cut=1', agent), { status: 200, body: { cut: true } });
    const failing = await cluster.waitLog((l) => l.msg === 'delivery probe failing; not ready', 20000, 'the probe failure line');
    const worker = failing.worker as number;
    assert.equal(typeof worker, 'number');
    // Whichever worker answers, the cluster is not ready because of that worker's probe.
    const answer = await poll(async () => {
      const ready = await call(cluster.port, 'GET', '/health/ready');
      return ready.status === 503 ? ready : undefined;
    }, 'not ready');
    const probeReasons = answer.body.reasons.filter((r: any) => r.reason === 'delivery_probe');
    assert.equal(probeReasons.length, 1, JSON.stringify(answer.body));
    assert.equal(probeReasons[0].detail, 'a probe was not delivered back within 500 ms');
    // The other worker names it; the worker itself reads its own state (no worker field).
    assert.ok(probeReasons[0].worker === undefined || probeReasons[0].worker === worker, JSON.stringify(answer.body));
    // Only that worker's probe failed: the link works for the other one.
    assert.equal(cluster.logs.filter((l) => l.msg === 'delivery probe failing; not ready').length, 1);

    assert.deepEqual(await call(cluster.adminPort, 'POST', '/debug/delivery-probe?cut=0', agent), { status: 200, body: { cut: false } });
    await cluster.waitLog((l) => l.msg === 'delivery probe passes again; ready' && l.worker === worker, 20000, 'the probe passing again');
    await poll(async () => ((await call(cluster.port, 'GET', '/health/ready')).status === 200 ? true : undefined), 'ready again');
    // The primary owns the state file: the probes stored nothing there.
    assert.deepEqual(storedRows(join(cluster.dir, 'state', 'herald.db')), { streams: 0, publications: 0 });
  } catch (error) {
    console.log(cluster.tail());
    throw error;
  } finally {
    agent.destroy();
    await cluster.stop();
  }
});
