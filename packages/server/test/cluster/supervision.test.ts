/**
 * Supervision policy (restart backoff, crash loop) as a unit, and a cluster
 * whose workers cannot start at all: reported and stopped, not looping.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { CrashHistory, MAX_RESTART_DELAY_MS } from '../../src/cluster/supervisor.ts';
import { TestCluster } from './harness.ts';

describe('cluster supervision', () => {
  it('restarts with a doubling delay, and stops at a crash loop', () => {
    const history = new CrashHistory({ restartDelayMs: 500, crashLoopRestarts: 3, crashLoopWindowMs: 60000 });
    const t0 = 1_000_000;
    assert.deepEqual(history.crashed(t0), { restart: true, delayMs: 500, recent: 1 });
    assert.deepEqual(history.crashed(t0 + 1000), { restart: true, delayMs: 1000, recent: 2 });
    assert.deepEqual(history.crashed(t0 + 2000), { restart: true, delayMs: 2000, recent: 3 });
    assert.deepEqual(history.crashed(t0 + 3000), { restart: false, recent: 4 }, 'a fourth crash within the window is a loop');
    const later = new CrashHistory({ restartDelayMs: 500, crashLoopRestarts: 3, crashLoopWindowMs: 60000 });
    later.crashed(t0);
    later.crashed(t0 + 1000);
    assert.deepEqual(later.crashed(t0 + 120000), { restart: true, delayMs: 500, recent: 1 }, 'crashes outside the window are forgotten');
    const capped = new CrashHistory({ restartDelayMs: 20000, crashLoopRestarts: 10, crashLoopWindowMs: 60000 });
    capped.crashed(t0);
    assert.deepEqual(capped.crashed(t0 + 1), { restart: true, delayMs: MAX_RESTART_DELAY_MS, recent: 2 });
  });

  it('a configuration that cannot start is refused by the primary with every problem before any worker starts (exit 2)', { timeout: 60000 }, async () => {
    // A TLS certificate that does not exist: the start-time checks refuse it.
    await assert.rejects(
      TestCluster.start({ workers: 2, config: { tls: { certFile: '/nonexistent/herald-cert.pem', keyFile: '/nonexistent/herald-key.pem' } } }),
      (error: Error) => {
        assert.match(error.message, /cluster exited \(\{"code":2,"signal":null\}\)/);
        assert.match(error.message, /\/tls\/certFile/);
        assert.match(error.message, /\/tls\/keyFile/);
        assert.doesNotMatch(error.message, /worker cannot start/);
        return true;
      },
    );
  });

  it('workers that cannot start are reported and the primary exits 1 instead of restarting them', { timeout: 60000 }, async () => {
    // The internal listener's port is taken by another process: every worker fails to listen.
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      await assert.rejects(TestCluster.start({ workers: 2, config: { admin: { host: '127.0.0.1', port } } }), (error: Error) => {
        assert.match(error.message, /cluster exited \(\{"code":1,"signal":null\}\)/);
        assert.match(error.message, /cluster giving up/);
        assert.match(error.message, /worker cannot start/);
        return true;
      });
    } finally {
      await new Promise<void>((resolve) => taken.close(() => resolve()));
    }
  });
});
