/**
 * A worker whose primary does not answer, then is gone (issue 11; docs/
 * operations.md, "When a worker dies"): a real Herald server on the cluster
 * engine, linked over a MessageChannel to a primary end that never answers.
 * Every call ends at `cluster.callTimeoutMs` (configured short) with the
 * documented codes: the API answers 503 `unavailable`, a WebSocket command
 * gets reply error 116; once the pipe closes they fail at once, and health
 * is degraded. Nothing here measures time: a request that had no deadline
 * would never be answered.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { MessageChannel } from 'node:worker_threads';
import { buildConfig } from '../../src/config/load.ts';
import { startServer, type HeraldServer } from '../../src/app/app.ts';
import { BatchingPipe, messagePortCarrier } from '../../src/cluster/pipe.ts';
import { createWorkerEngine } from '../../src/cluster/worker-engine.ts';
import type { PrimaryMessage, WorkerMessage } from '../../src/cluster/ipc-messages.ts';
import { openWs, type WsClient } from '../helpers/herald-ws.ts';

describe('cluster engine: every call to the primary has a deadline and a documented failure', () => {
  const apiKey = randomBytes(24).toString('base64url');
  const { port1: primaryEnd, port2: workerEnd } = new MessageChannel();
  let server: HeraldServer;
  let url = '';
  let ws: WsClient;

  before(async () => {
    const config = buildConfig(
      {
        mode: 'production',
        listen: { host: '127.0.0.1', port: 0 },
        admin: { host: '127.0.0.1', port: 0 },
        process: { allowRoot: true },
        log: { level: 'silent' },
        auth: { algorithms: ['HS256'], hmacSecret: randomBytes(32).toString('base64url') },
        api: { keys: [{ name: 'test-admin', sha256: createHash('sha256').update(apiKey).digest('hex'), scopes: ['admin'] }] },
        channels: { defaults: {}, namespaces: [{ name: 'public', allowAnonymous: true, clientPublish: true }] },
        cluster: { callTimeoutMs: 200 },
      },
      { env: {} },
    );
    // The primary's end is never read: calls reach it and are never answered.
    const engine = createWorkerEngine({ pipe: new BatchingPipe<PrimaryMessage, WorkerMessage>(messagePortCarrier(workerEnd)), worker: 1, config });
    server = await startServer({ config, engine });
    url = `http://127.0.0.1:${server.port}`;
    ws = await openWs(`ws://127.0.0.1:${server.port}/connection/websocket`);
    await ws.connect();
  });
  after(async () => {
    ws?.ws.terminate();
    await server?.close();
    primaryEnd.close();
  });

  const api = async (method: string, body: unknown): Promise<{ status: number; body: any }> => {
    const response = await fetch(`${url}/api/${method}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  };

  async function assertUnavailable(): Promise<void> {
    for (const [method, body] of [
      ['publish', { channel: 'public:a', data: 1 }],
      ['history', { channel: 'public:a', limit: 10 }],
      ['presence_stats', { channel: 'public:a' }],
    ] as const) {
      const answer = await api(method, body);
      assert.equal(answer.status, 503, `${method}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error.code, 'unavailable');
    }
    const reply = await ws.request('publish', { channel: 'public:a', data: 1 });
    assert.equal(reply.error?.code, 116, `client publish: ${JSON.stringify(reply)}`);
  }

  it('a primary that does not answer: the API answers 503 unavailable, a command gets reply error 116', async () => {
    await assertUnavailable();
    assert.equal(server.node.health().status, 'ok', 'the pipe is still open');
  });

  it('a primary gone: the same codes, and health is degraded', async () => {
    primaryEnd.close();
    await new Promise((resolve) => setImmediate(resolve));
    await assertUnavailable();
    assert.notEqual(server.node.health().status, 'ok');
  });
});
