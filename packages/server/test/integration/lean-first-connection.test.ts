/**
 * The lean HTTP layer loads at the server's first connection
 * (edge/first-connection.ts), not at start: a burst of connections to a
 * server that has had none is all served, the long-poll requests by the
 * layer, anything else by node:http. (Connections that arrive while it loads:
 * unit/first-connection.test.ts.) Skipped in the run with the layer off
 * (HERALD_TEST_NODE_HTTP=1).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeHttpRun, startHerald, type TestHerald } from '../helpers/herald.ts';
import { answers, exchange, request } from '../helpers/raw-http.ts';

describe('the lean HTTP layer loads at the first connection', { skip: nodeHttpRun() ? 'the run has the lean layer off (HERALD_TEST_NODE_HTTP=1)' : false, timeout: 60000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald();
  });
  after(async () => {
    await h?.close();
  });

  test('a burst of connections to a new server is all answered, the polls by the layer', async () => {
    const port = Number(new URL(h.url).port);
    const poll = request(['POST /connection/poll HTTP/1.1', 'Host: 127.0.0.1', 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}');
    const health = request(['GET /health HTTP/1.1', 'Host: 127.0.0.1']);
    // All at once on a server that has had no connection yet: the first one starts the load.
    const exchanges = await Promise.all([...Array.from({ length: 16 }, () => exchange(port, poll, 1)), exchange(port, health, 1)]);
    const heads = exchanges.map((e) => answers(e.text)[0]?.head.split('\r\n')[0]);
    assert.deepEqual(heads.slice(0, 16), Array.from({ length: 16 }, () => 'HTTP/1.1 404 Not Found'), 'every poll answered: no such session');
    assert.equal(heads[16], 'HTTP/1.1 200 OK', 'node:http answered the health check handed over by the layer');
    // Imported only now (the server's import is this one): imported at the top, the layer would load at once.
    const { leanStats } = await import('../../src/edge/lean-http.ts');
    assert.equal(leanStats.requests, 16, 'the layer served every poll, none went to node:http past it');
  });
});
