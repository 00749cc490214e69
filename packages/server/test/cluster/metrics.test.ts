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
