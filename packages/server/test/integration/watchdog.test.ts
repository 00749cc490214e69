/**
 * The watchdog and the health endpoints, on real processes: a single
 * `herald serve` and a two-worker cluster, driven over low thresholds by the
 * debug actions (internal listener, HERALD_TEST_DEBUG_ACTIONS=1 only): a
 * blocked event loop and a growing heap. Asserts the warning line, the
 * readiness flip on both listeners, the report file, and in the cluster the
 * recycling of the worker over its memory limit with its WebSocket clients
 * reconnecting (3001) and recovering without gaps.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { sleep, waitUntil } from '../helpers/rt-util.ts';
import { RecoveringWs, TestCluster } from '../cluster/harness.ts';
import { call, poll } from '../helpers/internal-http.ts';

async function startSingle(env: Record<string, string>, watchdog: Record<string, unknown>): Promise<{ herald: HeraldProcess; dir: string; port: number; adminPort: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-watchdog-'));
  const configFile = join(dir, 'herald.json');
  writeFileSync(
    configFile,
    JSON.stringify({ mode: 'development', stateDir: join(dir, 'state'), engine: { type: 'memory' }, listen: { port: 0 }, admin: { port: 0 }, log: { level: 'info' }, watchdog }),
  );
  const herald = new HeraldProcess(['--config', configFile], dir, env);
  const port = await herald.listeningPort();
  const adminPort = await herald.until(() => herald.logs.find((l) => l['msg'] === 'internal listener (metrics, health)')?.['port'] as number | undefined, 'internal listener');
  return { herald, dir, port, adminPort };
}

test('single process: liveness, readiness, a blocked loop and a growing heap flip readiness and write reports', async () => {
  const secret = 'do-not-leak-this-value-into-reports';
  const { herald, dir, port, adminPort } = await startSingle(
    { HERALD_TEST_DEBUG_ACTIONS: '1', HERALD_TEST_SECRET_VALUE: secret },
    { eventLoopDelayMs: 500, liveHeapMiB: 0, intervalMs: 100, settleMs: 15000, reportIntervalMs: 0, maxReports: 2, heapSnapshots: true, maxHeapSnapshots: 1 },
  );
  try {
    for (const p of [port, adminPort]) {
      assert.deepEqual((await call(p, 'GET', '/health/live')).body, { status: 'ok' });
      // A loaded machine can delay the loop past 500 ms while the server starts: ready within settleMs of that.
      await poll(async () => ((await call(p, 'GET', '/health/ready')).status === 200 ? true : undefined), 'ready after start', 60_000);
      assert.deepEqual(await call(p, 'GET', '/health/ready'), { status: 200, body: { status: 'ready' } });
      assert.deepEqual((await call(p, 'GET', '/health')).body, { status: 'ok' });
    }
    // The debug actions are on the internal listener only.
    assert.equal((await call(port, 'POST', '/debug/block-loop?ms=1')).status, 404);

    const metrics = String((await call(adminPort, 'GET', '/metrics')).body);
    assert.match(metrics, /^herald_live_heap_bytes [1-9]\d*$/m);
    assert.match(metrics, /^herald_rss_bytes [1-9]\d*$/m);
    assert.match(metrics, /^herald_event_loop_delay_seconds\{stat="max"\} /m);
    assert.match(metrics, /^herald_watchdog_over\{threshold="event_loop_delay"\} 0$/m);

    // A blocked loop: the warning with the numbers, not ready on both listeners, a report.
    // (A loaded machine may delay the loop past 500 ms on its own: the warning looked for is the block's.)
    assert.deepEqual(await call(adminPort, 'POST', '/debug/block-loop?ms=1500'), { status: 200, body: { blockedMs: 1500 } });
    const warning = await herald.until(
      () => herald.logs.find((l) => l['msg'] === 'watchdog: over threshold; not ready' && (l['eventLoopDelayMaxMs'] as number) >= 1400),
      'the watchdog warning',
    );
    assert.deepEqual(warning['over'], ['event_loop_delay']);
    assert.equal(warning['level'], 40);
    for (const p of [port, adminPort]) {
      const ready = await call(p, 'GET', '/health/ready');
      assert.equal(ready.status, 503, JSON.stringify(ready));
      assert.deepEqual(ready.body, { status: 'not_ready', reasons: [{ reason: 'event_loop_delay' }] });
      // Liveness holds: the process answers.
      assert.equal((await call(p, 'GET', '/health/live')).status, 200);
    }
    assert.match(String((await call(adminPort, 'GET', '/metrics')).body), /^herald_watchdog_over\{threshold="event_loop_delay"\} 1$/m);
    const written = await herald.until(() => herald.logs.find((l) => l['msg'] === 'watchdog: diagnostic report written' && (l['time'] as number) >= (warning['time'] as number)), 'the report line');
    const reportFile = written['file'] as string;
    assert.equal(join(dir, 'state', 'diagnostics'), reportFile.slice(0, reportFile.lastIndexOf('/')));
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as Record<string, any>;
    assert.equal(report['header']['processId'], herald.child.pid);
    assert.ok(!readFileSync(reportFile, 'utf8').includes(secret), 'the report holds no environment variable');
    // No reverse DNS of the sockets' peers (it runs on the late event loop) and no network interfaces.
    assert.equal(report['header']['networkInterfaces'], undefined, 'no network interfaces in the report');
    const endpoints = (report['libuv'] as Array<Record<string, any>>).flatMap((h) => [h['localEndpoint'], h['remoteEndpoint']]).filter((e) => e !== undefined && e !== null);
    assert.ok(endpoints.length > 0, 'the report lists the listeners');
    for (const endpoint of endpoints) assert.equal(endpoint['host'], endpoint['ip4'] ?? endpoint['ip6'], 'an endpoint named by its address, not a looked-up host name');
    assert.equal(statSync(reportFile).mode & 0o777, 0o600);
    // Heap snapshots are configured on here: one is written beside the report (checked at the end).
    const snapshot = await herald.until(() => herald.logs.find((l) => l['msg'] === 'watchdog: heap snapshot written'), 'the heap snapshot line');
    assert.ok(String(snapshot['file']).startsWith(join(dir, 'state', 'diagnostics', 'heap-')) && String(snapshot['file']).endsWith('.heapsnapshot'), String(snapshot['file']));

    // Back under the threshold after settleMs: ready again.
    // (A loaded machine may delay the loop past 500 ms again on its own, so readiness is polled, not read once.)
    await herald.until(() => herald.logs.find((l) => l['msg'] === 'watchdog: back under threshold'), 'back under threshold');
    const readyAgain = await poll(async () => {
      const answer = await call(port, 'GET', '/health/ready');
      return answer.status === 200 ? answer : undefined;
    }, 'ready again', 60_000);
    assert.deepEqual(readyAgain, { status: 200, body: { status: 'ready' } });

    // More blocks: the reports stay bounded by maxReports.
    for (let i = 0; i < 3; i++) {
      const before = herald.logs.filter((l) => l['msg'] === 'watchdog: diagnostic report written').length;
      await call(adminPort, 'POST', '/debug/block-loop?ms=1000');
      await herald.until(() => herald.logs.filter((l) => l['msg'] === 'watchdog: diagnostic report written').length > before || undefined, 'another report');
    }
    assert.equal(readdirSync(join(dir, 'state', 'diagnostics')).filter((f) => f.startsWith('report-')).length, 2);
    // Each report is followed by a snapshot: wait for the last one before counting files.
    const count = (msg: string) => herald.logs.filter((l) => l['msg'] === msg).length;
    await herald.until(() => count('watchdog: heap snapshot written') >= count('watchdog: diagnostic report written') || undefined, 'the last heap snapshot');
    const heaps = readdirSync(join(dir, 'state', 'diagnostics')).filter((f) => f.startsWith('heap-'));
    assert.equal(heaps.length, 1, heaps.join(' '));
    const snapshotFile = join(dir, 'state', 'diagnostics', heaps[0]!);
    assert.equal(statSync(snapshotFile).mode & 0o777, 0o600);
    assert.ok('snapshot' in (JSON.parse(readFileSync(snapshotFile, 'utf8')) as object));
  } catch (error) {
    console.log(herald.logs.slice(-8));
    throw error;
  } finally {
    await herald.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('single process: the live heap threshold fires on a growing heap; without the test flag there are no debug actions', async () => {
  const { herald, dir, adminPort } = await startSingle({ HERALD_TEST_DEBUG_ACTIONS: '1' }, { eventLoopDelayMs: 0, liveHeapMiB: 96, intervalMs: 100, reportIntervalMs: 0, heapSnapshots: true, heapSnapshotMaxMiB: 64 });
  const plain = await startSingle({}, {});
  try {
    assert.equal((await call(plain.adminPort, 'POST', '/debug/block-loop?ms=1')).status, 404);
    assert.equal((await call(plain.adminPort, 'POST', '/debug/grow-heap?mib=1')).status, 404);
    // Grows in steps until a full collection finds the live heap over 96 MiB (bounded: 512 MiB).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let step = 0; step < 32 && !herald.logs.some((l) => l['msg'] === 'watchdog: over threshold; not ready'); step++) {
      await call(adminPort, 'POST', '/debug/grow-heap?mib=16', agent);
      await sleep(150);
    }
    agent.destroy();
    const warning = await herald.until(() => herald.logs.find((l) => l['msg'] === 'watchdog: over threshold; not ready'), 'the live heap warning');
    assert.deepEqual(warning['over'], ['live_heap']);
    assert.ok((warning['liveHeapMiB'] as number) > 96, JSON.stringify(warning));
    const ready = await call(adminPort, 'GET', '/health/ready');
    assert.deepEqual(ready, { status: 503, body: { status: 'not_ready', reasons: [{ reason: 'live_heap' }] } });
    await herald.until(() => herald.logs.find((l) => l['msg'] === 'watchdog: diagnostic report written'), 'the report');
    // The heap is larger than heapSnapshotMaxMiB: no snapshot.
    await herald.until(() => herald.logs.find((l) => l['msg'] === 'watchdog: heap too large for a heap snapshot; none written'), 'the refused snapshot');
    assert.deepEqual(
      readdirSync(join(dir, 'state', 'diagnostics')).filter((f) => f.startsWith('heap-')),
      [],
    );
    // A single process only reports: it keeps running.
    assert.equal((await call(adminPort, 'GET', '/health/live')).status, 200);
  } finally {
    await herald.stop('SIGKILL');
    await plain.herald.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    rmSync(plain.dir, { recursive: true, force: true });
  }
});

test('cluster: a worker over its memory limit makes the cluster not ready and is recycled; its clients reconnect and recover', async () => {
  const cluster = await TestCluster.start({
    workers: 2,
    env: { HERALD_TEST_DEBUG_ACTIONS: '1' },
    config: { watchdog: { eventLoopDelayMs: 0, liveHeapMiB: 96, intervalMs: 100, settleMs: 500, recycleAfterMs: 1000, reportIntervalMs: 0 } },
  });
  const clients: RecoveringWs[] = [];
  try {
    // info carries each node's process numbers.
    const info = await cluster.api('info', {});
    assert.equal(info.status, 200);
    assert.ok(info.body.nodes[0].process.rss_bytes > 0, JSON.stringify(info.body));
    assert.ok(info.body.nodes[0].process.live_heap_bytes > 0);
    assert.deepEqual(info.body.nodes[0].process.over_threshold, []);
    await poll(async () => ((await call(cluster.port, 'GET', '/health/ready')).status === 200 ? true : undefined), 'cluster ready');

    // Clients on both workers.
    const pinned = await cluster.pinToWorkers(2);
    for (let i = 0; i < 40; i++) {
      const ws = new RecoveringWs(cluster.wsUrl, 'public:watch');
      clients.push(ws);
      await ws.start();
      if (i >= 3 && (await pinned[0]!.connections()) > 0 && (await pinned[1]!.connections()) > 0) break;
    }
    let published = 0;
    const publish = async (): Promise<void> => {
      const answer = await cluster.api('publish', { channel: 'public:watch', data: { n: published + 1 } });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      published++;
    };
    for (let i = 0; i < 5; i++) await publish();

    // Grow one worker's heap through the internal listener (one kept-alive connection: one worker).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let grown: number | undefined;
    for (let step = 0; step < 32 && grown === undefined; step++) {
      await call(cluster.adminPort, 'POST', '/debug/grow-heap?mib=16', agent);
      await sleep(150);
      grown = cluster.logs.find((l) => l.msg === 'watchdog: over threshold; not ready')?.worker as number | undefined;
    }
    agent.destroy();
    const warning = await cluster.waitLog((l) => l.msg === 'watchdog: over threshold; not ready', 15000, 'the live heap warning');
    assert.deepEqual(warning.over, ['live_heap']);
    // Readiness reflects every worker: whichever worker answers says not ready, naming the worker.
    const notReady = await poll(async () => {
      const answer = await call(cluster.port, 'GET', '/health/ready');
      return answer.status === 503 ? answer : undefined;
    }, 'not ready');
    assert.ok(
      notReady.body.reasons.some((r: any) => r.reason === 'live_heap' || r.reason === 'worker_not_running'),
      JSON.stringify(notReady.body),
    );

    const recycling = await cluster.waitLog((l) => l.msg === 'worker over its memory limit; replacing it (graceful drain)', 20000, 'recycling');
    assert.equal(recycling.worker, warning.worker);
    for (let i = 0; i < 5; i++) await publish();
    await cluster.waitLog((l) => l.msg === 'worker recycled' && l.worker === warning.worker, 30000, 'worker recycled');
    for (let i = 0; i < 5; i++) await publish();

    // The cluster is ready again (the new worker is small), and every client has every publication.
    await poll(async () => ((await call(cluster.port, 'GET', '/health/ready')).status === 200 ? true : undefined), 'ready again');
    await waitUntil(() => clients.every((c) => c.offsets.length === published && c.subscribed), {
      timeoutMs: 20000,
      label: 'every client has every publication',
      describe: () => clients.map((c) => `${c.offsets.length}/${published} codes ${c.closeCodes.join(',')}`).join('; '),
    });
    assert.ok(
      clients.some((c) => c.closeCodes.includes(3001)),
      `some client was on the recycled worker and reconnected: ${clients.map((c) => c.closeCodes.join(',')).join('; ')}`,
    );
    for (const client of clients) {
      assert.deepEqual(client.gaps, []);
      for (const recovery of client.recoveries) assert.equal(recovery.recovered, true);
    }
    // Nothing crashed: the recycling was planned.
    assert.equal(cluster.logs.filter((l) => l.msg === 'worker exited unexpectedly; restarting').length, 0);
  } catch (error) {
    console.log(cluster.tail());
    throw error;
  } finally {
    for (const client of clients) client.stop();
    await cluster.stop();
  }
});
