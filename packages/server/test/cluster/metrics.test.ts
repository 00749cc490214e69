/**
 * /metrics in cluster mode: whichever worker a scrape reaches, it answers
 * every worker's metrics aggregated by the primary, and counters are exact:
 * after N publishes through any of the workers the scrape says N.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { TestCluster } from './harness.ts';

function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    // A fresh connection each time: the scrapes reach different workers.
    const req = http.request({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (data += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(data) : reject(new Error(`/metrics answered ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

const value = (text: string, series: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line !== undefined, `no ${series} in the scrape`);
  return Number(line.slice(series.length + 1));
};

test('cluster /metrics aggregates every worker: exact counters whichever worker answers', async () => {
  const cluster = await TestCluster.start({ workers: 2 });
  try {
    const [a, b] = await cluster.pinToWorkers(2);
    for (let i = 0; i < 7; i++) assert.equal((await a!.api('publish', { channel: 'public:m', data: { i } })).status, 200);
    for (let i = 0; i < 5; i++) assert.equal((await b!.api('publish', { channel: 'public:m', data: { i } })).status, 200);
    for (let i = 0; i < 6; i++) {
      const text = await scrape(cluster.adminPort);
      assert.equal(value(text, 'herald_publications_total{source="api"}'), 12);
      assert.equal(value(text, 'herald_health{status="ok"}'), 1, 'health is 0 or 1, not a count of workers');
      // Per-worker series keep a worker label: one live heap per worker.
      assert.equal(text.split('\n').filter((l) => l.startsWith('herald_live_heap_bytes{worker="')).length, 2, text);
    }
  } finally {
    await cluster.stop();
  }
});

test('cluster /metrics: counters of a worker that was killed or recycled stay in the sum (totals never go backwards); its gauges drop out', async () => {
  // No periodic counter reports within the test (they come every heartbeat interval): what is
  // kept comes from a scrape (the SIGKILL) or from the worker's last report after its drain (SIGTERM).
  const cluster = await TestCluster.start({ workers: 2, config: { cluster: { heartbeatIntervalMs: 60000, heartbeatTimeoutMs: 120000 } } });
  const total = async (): Promise<number> => value(await scrape(cluster.adminPort), 'herald_publications_total{source="api"}');
  const pidOf = async (pinned: { node(): Promise<string> }): Promise<{ worker: number; pid: number }> => {
    const node = await pinned.node();
    const line = cluster.logs.find((l) => l.msg === 'worker ready' && l.node === node);
    assert.ok(line !== undefined, `no worker ready line for node ${node}`);
    return { worker: line.worker as number, pid: line.pid as number };
  };
  try {
    const [a, b] = await cluster.pinToWorkers(2);
    const first = await pidOf(a!);
    const second = await pidOf(b!);

    // N publishes through worker a; a scrape shows them; then a is killed (no last report).
    const n = 7;
    for (let i = 0; i < n; i++) assert.equal((await a!.api('publish', { channel: 'public:m', data: { i } })).status, 200);
    assert.equal(await total(), n);
    process.kill(first.pid, 'SIGKILL');
    await cluster.waitLog((l) => l.msg === 'worker exited unexpectedly; restarting' && l.worker === first.worker, 15000, 'the killed worker noticed');
    assert.equal(await total(), n, 'the killed worker keeps what a scrape showed');
    const afterKill = await scrape(cluster.adminPort);
    assert.ok(!afterKill.includes(`herald_live_heap_bytes{worker="${first.worker}"}`), 'the dead worker has no gauges left');
    await cluster.waitLog((l) => l.msg === 'worker ready' && l.worker > Math.max(first.worker, second.worker), 30000, 'the replacement of the killed worker');

    // M publishes through worker b, no scrape, then b drains on SIGTERM: its last report keeps them.
    const m = 5;
    for (let i = 0; i < m; i++) assert.equal((await b!.api('publish', { channel: 'public:m', data: { i } })).status, 200);
    const readyBefore = cluster.logs.filter((l) => l.msg === 'worker ready').length;
    process.kill(second.pid, 'SIGTERM');
    await cluster.waitLog((l) => l.msg === 'worker draining on its own; replacing it' && l.worker === second.worker, 15000, 'the recycled worker leaving');
    await waitUntilExited(second.pid);
    await cluster.waitLog(() => cluster.logs.filter((l) => l.msg === 'worker ready').length > readyBefore, 30000, 'the replacement of the recycled worker');
    // The last report may reach the primary just after the exit: the sum reaches N+M, and never goes below N meanwhile.
    let seen = await total();
    for (let tries = 0; seen !== n + m && tries < 100; tries++) {
      assert.ok(seen >= n && seen <= n + m, `scrape said ${seen}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
      seen = await total();
    }
    assert.equal(seen, n + m);

    // Both workers are replacements now: K more publishes, the scrape says N+M+K.
    const k = 4;
    for (let i = 0; i < k; i++) assert.equal((await cluster.api('publish', { channel: 'public:m', data: { i } })).status, 200);
    for (let i = 0; i < 4; i++) assert.equal(await total(), n + m + k);
    const text = await scrape(cluster.adminPort);
    assert.equal(text.split('\n').filter((l) => l.startsWith('herald_live_heap_bytes{worker="')).length, 2, 'gauges: the two live workers only');
  } catch (error) {
    console.log(cluster.tail());
    throw error;
  } finally {
    await cluster.stop();
  }
});

/** Waits until process `pid` is gone (bounded). */
async function waitUntilExited(pid: number): Promise<void> {
  for (let tries = 0; tries < 400; tries++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`process ${pid} did not exit`);
}
