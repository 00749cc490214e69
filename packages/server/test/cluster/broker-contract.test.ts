/**
 * The broker and presence contract (packages/server/test/unit/broker-contract.ts) against
 * the cluster link: a worker's engine (packages/server/src/cluster/worker-engine.ts) talking
 * to the primary's hub (packages/server/src/cluster/primary-hub.ts), once over a
 * MessageChannel in this process, once over real IPC to a forked hub
 * process (real serialization). Both run the clock tests: in process the
 * hub reads the test's clock; the forked hub is sent the test's clock and
 * asked to sweep over the same IPC channel (packages/server/test/cluster/fixtures/
 * hub-process.ts).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { DatabaseSync } from 'node:sqlite';
import { BrokerUnavailableError } from '../../src/broker/broker.ts';
import { fork } from 'node:child_process';
import { MessageChannel } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { buildConfig } from '../../src/config/load.ts';
import { PrimaryHub } from '../../src/cluster/primary-hub.ts';
import { BatchingPipe, messagePortCarrier, type Carrier } from '../../src/cluster/pipe.ts';
import { createWorkerEngine } from '../../src/cluster/worker-engine.ts';
import type { PrimaryMessage, WorkerMessage } from '../../src/cluster/ipc-messages.ts';
import { runBrokerContract, type ContractClock } from '../unit/broker-contract.ts';
import type { HubTestAnswer, HubTestMessage } from './fixtures/hub-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteBroker } from '../../src/broker/sqlite-broker.ts';

const config = buildConfig({}, { env: {} });

runBrokerContract('cluster link (in-process)', () => {
  let now = 1_700_000_000_000;
  const hub = new PrimaryHub({ revocationRetentionMs: 60000, now: () => now, sweepIntervalMs: 3_600_000 });
  const { port1, port2 } = new MessageChannel();
  hub.attach(1, new BatchingPipe<WorkerMessage, PrimaryMessage>(messagePortCarrier(port1)));
  const engine = createWorkerEngine({ pipe: new BatchingPipe<PrimaryMessage, WorkerMessage>(messagePortCarrier(port2)), worker: 1, config });
  return {
    broker: engine.broker,
    presence: engine.presence,
    clock: {
      now: () => now,
      advance: (ms: number) => {
        now += ms;
      },
    },
    sweep: () => hub.broker.sweep(),
    async close() {
      await engine.close();
      await hub.close();
      port1.close();
      port2.close();
    },
  };
});

runBrokerContract('cluster link (in-process, sqlite engine at the primary)', () => {
  let now = 1_700_000_000_000;
  const dir = mkdtempSync(join(tmpdir(), 'herald-cluster-sqlite-'));
  const store = openSqliteStore({ stateDir: dir });
  const broker = new SqliteBroker(store, { now: () => now, sweepIntervalMs: 3_600_000 });
  const hub = new PrimaryHub({ revocationRetentionMs: 60000, now: () => now, broker });
  const { port1, port2 } = new MessageChannel();
  hub.attach(1, new BatchingPipe<WorkerMessage, PrimaryMessage>(messagePortCarrier(port1)));
  const engine = createWorkerEngine({ pipe: new BatchingPipe<PrimaryMessage, WorkerMessage>(messagePortCarrier(port2)), worker: 1, config });
  return {
    broker: engine.broker,
    presence: engine.presence,
    clock: {
      now: () => now,
      advance: (ms: number) => {
        now += ms;
      },
    },
    sweep: () => hub.broker.sweep(),
    async close() {
      await engine.close();
      await hub.close();
      store.close();
      port1.close();
      port2.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

/** One forked hub process and one engine for every test of this variant (channel names are unique per test). */
let forked: { engine: ReturnType<typeof createWorkerEngine>; clock: ContractClock; sweep(): Promise<void>; stop(): Promise<void> } | undefined;

function forkedEngine(): NonNullable<typeof forked> {
  if (forked !== undefined) return forked;
  let now = 1_700_000_000_000;
  const child = fork(fileURLToPath(new URL('./fixtures/hub-process.ts', import.meta.url)), [String(now)], { serialization: 'advanced', execArgv: [...SOURCE_NODE_ARGS], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const carrier: Carrier = {
    post(value) {
      if (!child.connected) throw new Error('hub process gone');
      child.send(value as object, undefined, {}, () => undefined);
    },
    listen(onValue, onEnd) {
      child.on('message', onValue);
      child.once('exit', onEnd);
    },
    end() {
      if (child.connected) child.disconnect();
    },
  };
  const pipe = new BatchingPipe<PrimaryMessage, WorkerMessage>(carrier);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  /** Sends a test message after every call queued before it (the pipe flushes synchronously). */
  const sendInOrder = (message: HubTestMessage): void => {
    void pipe.flushed();
    child.send(message);
  };
  const swept = new Map<number, () => void>();
  child.on('message', (message: Partial<HubTestAnswer>) => {
    if (message.test === 'swept' && typeof message.id === 'number') swept.get(message.id)?.();
  });
  let sweeps = 0;
  forked = {
    engine: createWorkerEngine({ pipe, worker: 1, config }),
    clock: {
      now: () => now,
      advance: (ms: number) => {
        now += ms;
        sendInOrder({ test: 'clock', now });
      },
    },
    sweep: () =>
      new Promise<void>((resolve) => {
        const id = ++sweeps;
        swept.set(id, () => {
          swept.delete(id);
          resolve();
        });
        sendInOrder({ test: 'sweep', id });
      }),
    async stop() {
      pipe.close();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
  return forked;
}

after(async () => {
  await forked?.stop();
});

runBrokerContract('cluster link (forked primary, real IPC)', () => {
  const { engine, clock, sweep } = forkedEngine();
  return { broker: engine.broker, presence: engine.presence, clock, sweep, close: async () => {} };
});

test('sqlite engine at the primary: a disk error reaches the worker as BrokerUnavailableError (503 / 116) and in its health; revocations are persisted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-cluster-sqlite-'));
  const store = openSqliteStore({ stateDir: dir, busyTimeoutMs: 50 });
  const { sqliteRevocationStore } = await import('../../src/auth/revocation.ts');
  let health = (_healthy: boolean, _reason: string): void => {};
  const broker = new SqliteBroker(store, { sweepIntervalMs: 3_600_000, onHealthChange: (healthy, reason) => health(healthy, reason) });
  const hub = new PrimaryHub({ revocationRetentionMs: 60000, broker, revocationStore: sqliteRevocationStore(store.db) });
  health = (healthy, reason) => hub.setEngineHealth(healthy, reason);
  const { port1, port2 } = new MessageChannel();
  hub.attach(1, new BatchingPipe<WorkerMessage, PrimaryMessage>(messagePortCarrier(port1)));
  const engine = createWorkerEngine({ pipe: new BatchingPipe<PrimaryMessage, WorkerMessage>(messagePortCarrier(port2)), worker: 1, config });
  try {
    const stream = { size: 10, ttlMs: 60000 };
    assert.equal((await engine.broker.publish('a', '1', { stream })).offset, 1);
    const other = new DatabaseSync(join(dir, 'herald.db'));
    other.exec('BEGIN IMMEDIATE');
    await assert.rejects(engine.broker.publish('a', '2', { stream }), (error: unknown) => error instanceof BrokerUnavailableError && /SQLITE_BUSY/.test(error.message));
    await waitFor(() => engine.health().status === 'degraded');
    assert.deepEqual(engine.health(), { status: 'degraded', reason: 'database file is busy (SQLITE_BUSY)' });
    other.exec('ROLLBACK');
    other.close();
    assert.equal((await engine.broker.publish('a', '3', { stream })).offset, 2);
    await waitFor(() => engine.health().status === 'ok');

    const at = Date.now();
    await engine.control.publish({ kind: 'revoke_user', user: 'mallory', at });
    await engine.control.publish({ kind: 'revoke_token', tokenId: 'jti-1', expiresAt: at + 120000 });
    await engine.control.publish({ kind: 'revoke_user', user: 'long-gone', at: at - 120000 });
    // A new hub on the same file (the primary after a restart) replays what is still in force to the workers that attach.
    const second = new PrimaryHub({ revocationRetentionMs: 60000, broker: new SqliteBroker(store, { sweepIntervalMs: 3_600_000 }), revocationStore: sqliteRevocationStore(store.db) });
    assert.deepEqual(second.revocations(), [
      { kind: 'revoke_user', user: 'mallory', at },
      { kind: 'revoke_token', tokenId: 'jti-1', expiresAt: at + 120000 },
    ]);
    await second.close();
  } finally {
    await engine.close();
    await hub.close();
    store.close();
    port1.close();
    port2.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail('condition not reached within 5 s');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
