/**
 * The cluster link with several workers on one primary hub, in process
 * (MessageChannel pipes): cross-worker delivery, control relay, clean-up
 * when a worker goes away, and session forwarding between workers.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { buildConfig } from '../../src/config/load.ts';
import { PrimaryHub } from '../../src/cluster/primary-hub.ts';
import { BatchingPipe, messagePortCarrier } from '../../src/cluster/pipe.ts';
import { createWorkerEngine, type WorkerEngine } from '../../src/cluster/worker-engine.ts';
import type { PrimaryMessage, WorkerMessage } from '../../src/cluster/ipc-messages.ts';
import { BrokerUnavailableError, type StoredPublication } from '../../src/broker/broker.ts';
import type { ControlCommand } from '../../src/broker/control.ts';
import type { ClientInfo } from '@herald/protocol';
import type { SessionExchange } from '../../src/transports/http-connection.ts';
import { waitUntil } from '../helpers/rt-util.ts';

const config = buildConfig({}, { env: {} });
const stream = { size: 100, ttlMs: 60000 };

interface TestWorker {
  readonly engine: WorkerEngine;
  readonly publications: { channel: string; publication: StoredPublication }[];
  readonly joinLeave: { kind: 'join' | 'leave'; channel: string; info: ClientInfo }[];
  readonly control: { command: ControlCommand; from: string }[];
  /** Closes this worker's end, as a dying worker process does. */
  kill(): void;
}

function cluster(callTimeoutMs?: number) {
  const hub = new PrimaryHub({ revocationRetentionMs: 60000 });
  const ports: MessagePort[] = [];
  const add = (id: number): TestWorker => {
    const { port1, port2 } = new MessageChannel();
    ports.push(port1, port2);
    hub.attach(id, new BatchingPipe<WorkerMessage, PrimaryMessage>(messagePortCarrier(port1)));
    const engine = createWorkerEngine({
      pipe: new BatchingPipe<PrimaryMessage, WorkerMessage>(messagePortCarrier(port2)),
      worker: id,
      config,
      revocations: hub.revocations(),
      ...(callTimeoutMs === undefined ? {} : { callTimeoutMs }),
    });
    const worker: TestWorker = {
      engine,
      publications: [],
      joinLeave: [],
      control: [],
      kill: () => port2.close(),
    };
    engine.broker.setEventHandler({
      onPublication: (channel, publication) => worker.publications.push({ channel, publication }),
      onJoin: (channel, info) => worker.joinLeave.push({ kind: 'join', channel, info }),
      onLeave: (channel, info) => worker.joinLeave.push({ kind: 'leave', channel, info }),
      onStreamReset: () => {},
    });
    engine.control.setHandler((command, from) => worker.control.push({ command, from }));
    return worker;
  };
  return {
    hub,
    add,
    async close() {
      await hub.close();
      for (const port of ports) port.close();
    },
  };
}

describe('cluster link: several workers on one primary', () => {
  it('a publication accepted by one worker reaches the workers that subscribed, with offsets from one stream', async () => {
    const c = cluster();
    try {
      const a = c.add(1);
      const b = c.add(2);
      const idle = c.add(3);
      await a.engine.broker.subscribe('room');
      await b.engine.broker.subscribe('room');
      const first = await a.engine.broker.publish('room', '"from a"', { stream });
      const second = await b.engine.broker.publish('room', '"from b"', { stream });
      assert.equal(first.offset, 1);
      assert.deepEqual({ ...second }, { epoch: first.epoch, offset: 2 });
      await waitUntil(() => a.publications.length === 2 && b.publications.length === 2, { label: 'both workers got both publications' });
      for (const w of [a, b]) assert.deepEqual(w.publications.map((p) => [p.publication.offset, p.publication.data]), [[1, '"from a"'], [2, '"from b"']]);
      await a.engine.broker.publish('room', '"marker"', { stream });
      await waitUntil(() => b.publications.length === 3, { label: 'the marker' });
      assert.deepEqual(idle.publications, [], 'a worker that did not subscribe gets nothing');
      const page = await idle.engine.broker.history('room', { limit: 10 }, stream);
      assert.deepEqual(page.publications.map((p) => p.offset), [1, 2, 3], 'history is the same from every worker');
    } finally {
      await c.close();
    }
  });

  it('control commands reach every worker, the sender included; revocations are replayed to workers that start later', async () => {
    const c = cluster();
    try {
      const a = c.add(1);
      const b = c.add(2);
      await a.engine.control.publish({ kind: 'disconnect_user', user: 'alice', reconnect: false });
      await a.engine.control.publish({ kind: 'revoke_user', user: 'mallory', at: Date.now() });
      await waitUntil(() => a.control.length === 2 && b.control.length === 2, { label: 'both commands on both workers' });
      assert.deepEqual(b.control.map((e) => [e.command.kind, e.from]), [['disconnect_user', a.engine.nodeId], ['revoke_user', a.engine.nodeId]]);
      const late = c.add(3);
      assert.equal(late.engine.revocations.isRevoked({ user: 'mallory', issuedAt: Date.now() - 60000 }), true, 'replayed at start');
      assert.equal(late.engine.revocations.isRevoked({ user: 'alice', issuedAt: Date.now() - 60000 }), false);
    } finally {
      await c.close();
    }
  });

  it('a worker that goes away leaves no presence, no subscription, and its joins get their leaves', async () => {
    const c = cluster();
    try {
      const a = c.add(1);
      const b = c.add(2);
      await b.engine.broker.subscribe('room');
      const info = { client: 'c-a', user: 'alice' };
      await a.engine.presence.add('room', info);
      await a.engine.broker.publishJoin('room', info);
      await a.engine.broker.subscribe('room');
      assert.deepEqual({ ...(await b.engine.presence.stats('room')) }, { numClients: 1, numUsers: 1 });
      a.kill();
      await waitUntil(() => b.joinLeave.some((e) => e.kind === 'leave'), { label: 'the leave of the dead worker\'s client' });
      assert.deepEqual(b.joinLeave.map((e) => [e.kind, e.info.client]), [['join', 'c-a'], ['leave', 'c-a']]);
      assert.deepEqual({ ...(await b.engine.presence.stats('room')) }, { numClients: 0, numUsers: 0 });
      assert.equal(c.hub.workerCount, 1);
    } finally {
      await c.close();
    }
  });

  it('session requests are forwarded to the owner, answered, aborted, or answered session_unknown when the owner is gone', async () => {
    const c = cluster();
    try {
      const a = c.add(1);
      const b = c.add(2);
      const seen: SessionExchange[] = [];
      let held: (() => void) | undefined;
      let abortedAtOwner = false;
      b.engine.sessionRouter.serve(async (exchange, signal) => {
        seen.push(exchange);
        if (exchange.op !== 'poll') return { status: 200, body: '"done"' };
        signal.addEventListener('abort', () => {
          abortedAtOwner = true;
        });
        return new Promise((resolve) => (held = () => resolve({ status: 200, body: '"polled"' })));
      });
      const secret = '2.' + 'x'.repeat(22);
      assert.equal(a.engine.sessionRouter.isRemote(secret), true);
      assert.equal(b.engine.sessionRouter.isRemote(secret), false);
      assert.equal(a.engine.sessionRouter.isRemote('2.short'), false, 'a malformed secret is answered locally (unknown)');

      const answer = await a.engine.sessionRouter.forward({ op: 'command', session: secret, body: [{ id: 1 }] }, new AbortController().signal);
      assert.deepEqual(answer, { status: 200, body: '"done"' });
      assert.deepEqual(seen[0], { op: 'command', session: secret, body: [{ id: 1 }] });

      const polling = a.engine.sessionRouter.forward({ op: 'poll', session: secret, body: { seq: 0 } }, new AbortController().signal);
      await waitUntil(() => held, { label: 'the poll held at the owner' });
      held!();
      assert.deepEqual(await polling, { status: 200, body: '"polled"' });

      const controller = new AbortController();
      held = undefined;
      const abandoned = a.engine.sessionRouter.forward({ op: 'poll', session: secret, body: { seq: 1 } }, controller.signal);
      await waitUntil(() => held, { label: 'the second poll held at the owner' });
      controller.abort();
      assert.equal((await abandoned).status, 503);
      await waitUntil(() => abortedAtOwner, { label: 'the abort at the owner' });

      held = undefined;
      const orphaned = a.engine.sessionRouter.forward({ op: 'poll', session: secret, body: { seq: 2 } }, new AbortController().signal);
      await waitUntil(() => held, { label: 'the third poll held at the owner' });
      b.kill();
      assert.equal((await orphaned).status, 404, 'the owner died: session_unknown, the client reopens with its cursor');
      const gone = await a.engine.sessionRouter.forward({ op: 'command', session: secret, body: {} }, new AbortController().signal);
      assert.equal(gone.status, 404);
      assert.match(gone.body, /session_unknown/);
    } finally {
      await c.close();
    }
  });

  it('a forwarded request whose owner never answers fails with 503 unavailable at the call timeout, and is given up at the owner', async () => {
    const c = cluster(200);
    try {
      const a = c.add(1);
      const b = c.add(2);
      let abortedAtOwner = false;
      b.engine.sessionRouter.serve((_exchange, signal) => {
        signal.addEventListener('abort', () => {
          abortedAtOwner = true;
        });
        return new Promise(() => {});
      });
      const answer = await a.engine.sessionRouter.forward({ op: 'command', session: '2.' + 'x'.repeat(22), body: [{ id: 1 }] }, new AbortController().signal);
      assert.equal(answer.status, 503);
      assert.match(answer.body, /"unavailable"/);
      await waitUntil(() => abortedAtOwner, { label: 'the abort at the owner' });
    } finally {
      await c.close();
    }
  });

  it('calls fail with BrokerUnavailableError (API 503, reply 116) at the call timeout and when the pipe closes', async () => {
    const { port1, port2 } = new MessageChannel();
    // port1 is the primary's end, never read: no call is ever answered.
    const engine = createWorkerEngine({ pipe: new BatchingPipe<PrimaryMessage, WorkerMessage>(messagePortCarrier(port2)), worker: 1, config, callTimeoutMs: 200 });
    try {
      await assert.rejects(engine.broker.publish('room', '1', { stream }), BrokerUnavailableError);
      const pending = engine.presence.stats('room');
      port1.close();
      await assert.rejects(pending, BrokerUnavailableError, 'a call in flight fails when the pipe closes');
      await assert.rejects(engine.broker.history('room', { limit: 1 }, stream), BrokerUnavailableError, 'and so does every later call');
      assert.equal(engine.health().status, 'degraded');
    } finally {
      port1.close();
      port2.close();
    }
  });
});

describe('cluster link: API keys of the primary\'s state file', () => {
  it('a worker gets the keys with its start and every change after; without them it has no key source of the link', async () => {
    const key = (name: string) => ({ name, sha256: 'a'.repeat(64), scopes: ['read' as const], created: '2026-01-01T00:00:00.000Z' });
    const hub = new PrimaryHub({ revocationRetentionMs: 60000, apiKeys: [key('first')] });
    const { port1, port2 } = new MessageChannel();
    try {
      hub.attach(1, new BatchingPipe<WorkerMessage, PrimaryMessage>(messagePortCarrier(port1)));
      const engine = createWorkerEngine({ pipe: new BatchingPipe<PrimaryMessage, WorkerMessage>(messagePortCarrier(port2)), worker: 1, config, apiKeys: hub.apiKeys() });
      const source = engine.apiKeys!;
      const first = source.current();
      assert.deepEqual(first.map((k) => k.name), ['first']);
      assert.equal(source.current(), first, 'the same array while nothing changed (the verifier keeps its table)');
      hub.setApiKeys([key('first'), key('second')]);
      await waitUntil(() => source.current().length === 2, { label: 'the new keys at the worker' });
      assert.deepEqual(source.current().map((k) => k.name), ['first', 'second']);

      const memory = new PrimaryHub({ revocationRetentionMs: 60000 });
      assert.equal(memory.apiKeys(), null, 'a primary without a state file sends none');
      const { port1: a, port2: b } = new MessageChannel();
      const plain = createWorkerEngine({ pipe: new BatchingPipe<PrimaryMessage, WorkerMessage>(messagePortCarrier(b)), worker: 2, config, apiKeys: memory.apiKeys() });
      assert.equal(plain.apiKeys, undefined, 'the worker reads api-keys.json itself');
      a.close();
      b.close();
      await memory.close();
    } finally {
      await hub.close();
      port1.close();
      port2.close();
    }
  });
});
