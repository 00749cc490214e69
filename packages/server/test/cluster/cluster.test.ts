/**
 * Cluster mode end to end: `herald serve --workers 2` as real processes on
 * loopback (packages/server/test/cluster/harness.ts). One cluster serves the whole file and
 * the tests run in order, each leaving it in a state the next one expects:
 *
 * 1. cross-worker delivery, cluster-wide presence and info;
 * 2. recovery on another worker (also opened in the upgrade request, `connect=1`);
 * 3. SSE and long-poll sessions whose requests land on the other worker;
 * 4. SIGKILL of a worker mid-traffic (SECURITY-TESTS F29): replaced, clients
 *    reconnect and recover, no silent gap;
 * 5. an unresponsive worker (SIGSTOP) is killed and replaced;
 * 6. a crash loop is reported and the slot left empty (the other serves);
 * 7. `herald reload` (SIGHUP): rolling replacement, no lost publication, and
 *    the empty slot is filled again;
 * 8. a worker sent SIGTERM drains alone and is replaced;
 * 9. SIGTERM drains every worker (clients closed with 3001) and exits 0.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openSse, sseUrl } from '../helpers/rt-clients.ts';
import { eventually, openWs } from '../helpers/herald-ws.ts';
import { openUrl } from '../helpers/ws-open.ts';
import { sleep, waitUntil } from '../helpers/rt-util.ts';
import { publishLoop, RecoveringWs, TestCluster, type Pinned } from './harness.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let counter = 0;
const unique = (prefix: string): string => `public:${prefix}-${++counter}-${randomBytes(3).toString('hex')}`;

describe('cluster mode (2 workers, real processes)', { timeout: 120000 }, () => {
  let c: TestCluster;
  const clients: RecoveringWs[] = [];
  const publishers: { stop(): Promise<number[]> }[] = [];
  /** The slot whose worker the F29 test killed (the crash-loop test kills it again). */
  let killedSlot = -1;

  before(async () => {
    c = await TestCluster.start({ workers: 2, config: { cluster: { crashLoopRestarts: 1 } } });
  });
  after(async () => {
    for (const client of clients) client.stop();
    await Promise.all(publishers.map((p) => p.stop()));
    await c?.stop();
  });

  function subscriber(channel: string, from?: { epoch: string; offset: number }): RecoveringWs {
    const client = new RecoveringWs(c.wsUrl, channel, from);
    clients.push(client);
    return client;
  }

  /**
   * Starts a subscriber and tells which of the two pinned workers took its
   * connection: the one whose live connection count grew by one while the
   * other's did not (connections of stopped clients may still be closing:
   * when the counts are ambiguous, the client is stopped and another tried).
   */
  async function placed(pins: readonly [Pinned, Pinned], channel: string, from?: { epoch: string; offset: number }): Promise<{ client: RecoveringWs; worker: 0 | 1 }> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const before = await Promise.all(pins.map((p) => p.connections()));
      const client = subscriber(channel, from);
      await client.start();
      const after = await Promise.all(pins.map((p) => p.connections()));
      const grew = after.map((n, i) => n - before[i]!);
      if (grew[0] === 1 && grew[1] === 0) return { client, worker: 0 };
      if (grew[1] === 1 && grew[0] === 0) return { client, worker: 1 };
      client.stop();
      await sleep(200);
    }
    throw new Error('could not tell which worker took a connection');
  }

  function workerOfNode(node: string): { worker: number; pid: number; slot: number } {
    for (const line of c.readyWorkers().values()) if (line.node === node) return { worker: line.worker, pid: line.pid, slot: line.slot };
    throw new Error(`no ready worker with node ${node}; ${c.tail()}`);
  }

  async function twoWorkers(): Promise<[Pinned, Pinned]> {
    const [a, b] = await c.pinToWorkers(2);
    return [a!, b!];
  }

  /** Every acknowledged offset arrived, in order, once; every reconnect recovered. */
  async function assertNoLoss(subscribers: readonly RecoveringWs[], acked: readonly number[]): Promise<void> {
    const top = Math.max(...acked);
    for (const client of subscribers) {
      await waitUntil(() => client.offset >= top, { timeoutMs: 15000, label: `client caught up to ${top}`, describe: () => `at ${client.offset}; closes ${client.closeCodes}` });
      assert.deepEqual(client.gaps, [], 'no gap in what was delivered');
      for (const recovery of client.recoveries) assert.deepEqual(recovery, { recovered: true, wasRecovering: true }, 'the streams live in the primary: recovery succeeds');
      for (let i = 1; i < client.offsets.length; i++) assert.ok(client.offsets[i]! > client.offsets[i - 1]!, 'increasing offsets, no duplicate');
      const got = new Set(client.offsets);
      const missing = acked.filter((offset) => offset > client.offsets[0]! - 1 && !got.has(offset));
      assert.deepEqual(missing, [], 'every acknowledged publication after subscribing arrived');
    }
  }

  test('a publication through the API on one worker reaches subscribers on both; presence and info are cluster-wide', async () => {
    const pins = await twoWorkers();
    const channel = unique('fanout');
    // The kernel picks the worker (SCHED_NONE): one after another, twelve
    // connections once all landed on one. Batches opened at once wake both
    // workers; the workers' connection counts tell how many each took.
    const start = await Promise.all(pins.map((p) => p.connections()));
    const all: RecoveringWs[] = [];
    let grew = [0, 0];
    for (let batch = 0; batch < 6 && (grew[0]! < 2 || grew[1]! < 2); batch++) {
      const opened = Array.from({ length: 4 }, () => subscriber(channel));
      await Promise.all(opened.map((client) => client.start()));
      all.push(...opened);
      grew = (await Promise.all(pins.map((p) => p.connections()))).map((n, i) => n - start[i]!);
    }
    assert.ok(grew[0]! >= 1 && grew[1]! >= 1, `subscribers on both workers (${grew[0]} + ${grew[1]})`);
    assert.equal(grew[0]! + grew[1]!, all.length, 'every subscriber counted on one of the two workers');
    const first = await pins[0].api('publish', { channel, data: { via: 0 } });
    const second = await pins[1].api('publish', { channel, data: { via: 1 } });
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    assert.equal(first.body.offset, 1);
    assert.deepEqual(second.body, { epoch: first.body.epoch, offset: 2 }, 'one stream, offsets assigned in one place');
    await assertNoLoss(all, [1, 2]);

    const stats = await pins[1].api('presence_stats', { channel });
    assert.deepEqual(stats.body, { num_clients: all.length, num_users: 1 }, 'presence counts clients of both workers');
    const info = await eventually(
      async () => {
        const answer = await pins[0].api('info', {});
        return answer.body.nodes.length === 2 ? answer.body : undefined;
      },
      'info listing both nodes',
      10000,
    );
    assert.deepEqual(new Set(info.nodes.map((n: { id: string }) => n.id)), new Set([await pins[0].node(), await pins[1].node()]));
    const listed = await eventually(
      async () => {
        const answer = await pins[0].api('channels', {});
        return answer.body.channels?.[channel]?.num_clients === all.length ? answer.body : undefined;
      },
      'channel list counting both workers',
      10000,
    );
    assert.ok(listed);
    for (const client of all) client.stop();
  });

  test('a client recovers on another worker from a position taken on the first', async () => {
    const pins = await twoWorkers();
    const channel = unique('recover');
    let first = await placed(pins, channel);
    while (first.worker !== 0) {
      first.client.stop();
      first = await placed(pins, channel);
    }
    await pins[0].api('publish', { channel, data: 0 });
    await waitUntil(() => first.client.offset === 1, { label: 'first publication' });
    const position = { epoch: first.client.epoch, offset: first.client.offset };
    first.client.stop();
    for (let i = 0; i < 5; i++) assert.equal((await pins[i % 2]!.api('publish', { channel, data: i + 1 })).status, 200);
    let second = await placed(pins, channel, position);
    while (second.worker !== 1) {
      second.client.stop();
      second = await placed(pins, channel, position);
    }
    await waitUntil(() => second.client.offset === 6, { label: 'the five missed publications' });
    assert.deepEqual(second.client.recoveries, [{ recovered: true, wasRecovering: true }]);
    assert.deepEqual(second.client.offsets, [2, 3, 4, 5, 6]);
    second.client.stop();
  });

  test('a WebSocket opened in the upgrade request (connect=1) on either worker recovers what it missed, in order, once', async () => {
    const pins = await twoWorkers();
    const channel = unique('open');
    const first = await pins[0].api('publish', { channel, data: 1 });
    assert.equal(first.status, 200);
    for (let i = 2; i <= 4; i++) assert.equal((await pins[i % 2]!.api('publish', { channel, data: i })).status, 200);
    // Several opens: the primary hands connections to the workers in turn, so both are likely to take some.
    for (let i = 0; i < 4; i++) {
      const client = await openWs(openUrl(c.wsUrl, { last_event_id: `${channel}|${first.body.epoch}|1` }));
      try {
        await client.push('connected');
        const subscribed = await client.push('subscribed', channel);
        assert.deepEqual([subscribed.was_recovering, subscribed.recovered], [true, true]);
        const publications = await client.waitPublications(channel, 3);
        assert.deepEqual(
          publications.map((p: { offset: number }) => p.offset),
          [2, 3, 4],
        );
      } finally {
        client.ws.terminate();
      }
    }
  });

  test('SSE and long-poll sessions work whichever worker receives their next request', async () => {
    const pins = await twoWorkers();
    const channel = unique('sse');
    const other = unique('sse-other');
    const stream = await openSse(sseUrl(c.url, { channels: [channel] }));
    try {
      assert.equal(stream.status, 200);
      const connected = await stream.waitForFrame((f) => f['push'] === 'connected');
      const session = connected['session'] as string;
      assert.match(session, /^[0-9]+\.[A-Za-z0-9_-]{22}$/, 'the secret names its worker, then 128 random bits');
      await stream.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === channel);
      // One of the two pinned workers is not the session's owner: its requests are forwarded.
      for (const [i, pin] of pins.entries()) {
        const answer = await pin.post(
          '/connection/command',
          [
            { id: 10 + i, method: 'publish', params: { channel, data: { via: i } } },
            { id: 20 + i, method: 'presence_stats', params: { channel } },
          ],
          { 'herald-session': session },
        );
        assert.equal(answer.status, 200, `command via worker ${i}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body[0].id, 10 + i);
        assert.equal(answer.body[0].result.offset, i + 1);
        assert.deepEqual(answer.body[1].result, { num_clients: 1, num_users: 1 });
        await stream.waitForFrame((f) => f['push'] === 'publication' && f['offset'] === i + 1, 10000, `publication ${i + 1} on the stream`);
      }
      const sub = await pins[1].post('/connection/command', { id: 30, method: 'subscribe', params: { channel: other } }, { 'herald-session': session });
      assert.equal(sub.status, 200);
      assert.equal(sub.body[0].id, 30);
      await stream.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === other);
      const unknown = await pins[0].post('/connection/command', { id: 1, method: 'presence', params: { channel } }, { 'herald-session': '99.' + 'A'.repeat(22) });
      assert.equal(unknown.status, 404);
      assert.equal(unknown.body.error.code, 'session_unknown');
      for (const pin of pins) assert.equal((await pin.post('/connection/close', undefined, { 'herald-session': session })).status, pins.indexOf(pin) === 0 ? 200 : 404);
      await stream.waitForEnd();
    } finally {
      stream.abort();
    }

    // Long polling: polls alternate between the two workers.
    const lpChannel = unique('lp');
    const opened = await pins[0].post('/connection/poll/open', { channels: [lpChannel] });
    assert.equal(opened.status, 200);
    const lpSession = opened.body.session as string;
    let seq = opened.body.seq as number;
    const header = { 'herald-session': lpSession };
    for (let i = 0; i < 4; i++) {
      const polled = pins[i % 2]!.post('/connection/poll', { seq }, header);
      await sleep(50);
      assert.equal((await c.api('publish', { channel: lpChannel, data: i })).status, 200);
      const answer = await polled;
      assert.equal(answer.status, 200, `poll ${i} via worker ${i % 2}: ${JSON.stringify(answer.body)}`);
      assert.deepEqual(
        answer.body.messages.map((m: { offset: number }) => m.offset),
        [i + 1],
        'each poll gets the next publication',
      );
      assert.equal(answer.body.seq, seq + 1);
      seq = answer.body.seq;
    }
    // A second poll, through the other worker, answers the held one at once.
    const held = pins[0].post('/connection/poll', { seq }, header);
    await sleep(100);
    const second = pins[1].post('/connection/poll', { seq }, header);
    const firstAnswer = await held;
    assert.equal(firstAnswer.status, 200);
    assert.deepEqual(firstAnswer.body.messages, []);
    assert.equal((await c.api('publish', { channel: lpChannel, data: 'last' })).status, 200);
    const secondAnswer = await second;
    assert.deepEqual(secondAnswer.body.messages.map((m: { offset: number }) => m.offset), [5]);
    seq = secondAnswer.body.seq;
    const command = await pins[1].post('/connection/command', { id: 1, method: 'history', params: { channel: lpChannel, limit: 10 } }, header);
    assert.equal(command.status, 200);
    assert.equal(command.body[0].result.publications.length, 5);
    assert.equal((await pins[1].post('/connection/close', undefined, header)).status, 200);
    // The closed session keeps its disconnect message for the next poll (limits.closeGraceMs).
    const last = await pins[0].post('/connection/poll', { seq }, header);
    assert.equal(last.status, 200, `after close: ${JSON.stringify(last.body)}`);
    assert.deepEqual(
      last.body.messages.map((m: { push?: string; code?: number }) => [m.push, m.code]),
      [['disconnect', 1000]],
      'the poll after close reads the disconnect message',
    );
  });

  test('F29: a worker SIGKILLed mid-traffic is replaced; its clients reconnect and recover with no gap', async () => {
    const pins = await twoWorkers();
    const victim = workerOfNode(await pins[0].node());
    killedSlot = victim.slot;
    const channel = unique('kill');
    const subscribers: RecoveringWs[] = [];
    let onVictim = 0;
    // The kernel spreads new connections over the workers (SCHED_NONE): open until both hold some (bounded).
    for (let i = 0; i < 40 && (onVictim < 2 || subscribers.length - onVictim < 2); i++) {
      const { client, worker } = await placed(pins, channel);
      subscribers.push(client);
      if (worker === 0) onVictim++;
    }
    assert.ok(onVictim >= 1, 'some subscribers are on the worker that will die');
    const publisher = publishLoop(c, channel);
    publishers.push(publisher);
    await waitUntil(() => publisher.acked.length >= 20, { label: '20 publications before the kill' });
    const logMark = c.logs.length;
    process.kill(victim.pid, 'SIGKILL');
    await c.waitLog((l) => l.msg === 'worker exited unexpectedly; restarting' && l.worker === victim.worker, 10000, 'the crash reported', logMark);
    const replacement = await c.waitLog((l) => l.msg === 'worker ready' && l.slot === victim.slot, 30000, 'a replacement worker', logMark);
    assert.notEqual(replacement.worker, victim.worker);
    const ackedAtReplacement = publisher.acked.length;
    await waitUntil(() => publisher.acked.length >= ackedAtReplacement + 20, { label: '20 publications after the replacement' });
    const acked = await publisher.stop();
    await assertNoLoss(subscribers, acked);
    const reconnected = subscribers.filter((s) => s.reconnects > 0);
    assert.equal(reconnected.length, onVictim, 'exactly the subscribers of the killed worker reconnected');
    for (const client of subscribers) client.stop();
  });

  test('an unresponsive worker (no heartbeat answer) is killed and replaced', async () => {
    const pins = await twoWorkers();
    // The other slot than F29's: one crash each so far.
    let frozen = workerOfNode(await pins[0].node());
    if (frozen.slot === killedSlot) frozen = workerOfNode(await pins[1].node());
    const logMark = c.logs.length;
    process.kill(frozen.pid, 'SIGSTOP');
    const killed = await c.waitLog((l) => l.msg === 'worker unresponsive (no heartbeat answer); killing it', 15000, 'the unresponsive worker reported', logMark);
    assert.equal(killed.worker, frozen.worker);
    assert.equal(killed.level, 50, 'an error line');
    await c.waitLog((l) => l.msg === 'worker ready' && l.slot === frozen.slot, 30000, 'its replacement', logMark);
  });

  test('a crash loop is reported once and the slot left empty; the other worker keeps serving', async () => {
    const pins = await twoWorkers();
    // The slot killed in the F29 test crashes a second time within the window (crashLoopRestarts: 1).
    let target = workerOfNode(await pins[0].node());
    if (target.slot !== killedSlot) target = workerOfNode(await pins[1].node());
    if (target.slot !== killedSlot) {
      // F29 did not get to kill its worker: crash this slot once first.
      const firstMark = c.logs.length;
      process.kill(target.pid, 'SIGKILL');
      const replaced = await c.waitLog((l) => l.msg === 'worker ready' && l.slot === target.slot, 30000, 'a first replacement', firstMark);
      target = { worker: replaced.worker, pid: replaced.pid, slot: replaced.slot };
    }
    const logMark = c.logs.length;
    process.kill(target.pid, 'SIGKILL');
    const loop = await c.waitLog((l) => l.msg === 'worker crash loop: not restarting this slot', 10000, 'the crash loop reported', logMark);
    assert.equal(loop.level, 50);
    assert.equal(loop.slot, target.slot);
    await sleep(1000);
    assert.equal(c.logs.slice(logMark).filter((l) => l.msg === 'worker started').length, 0, 'not restarted');
    const channel = unique('survivor');
    const publish = await c.api('publish', { channel, data: 1 });
    assert.equal(publish.status, 200, 'the cluster still serves');
  });

  test('herald reload (SIGHUP) replaces the workers one by one with no lost publication', async () => {
    const channel = unique('reload');
    const subscribers: RecoveringWs[] = [];
    for (let i = 0; i < 4; i++) {
      const client = subscriber(channel);
      await client.start();
      subscribers.push(client);
    }
    const publisher = publishLoop(c, channel);
    publishers.push(publisher);
    await waitUntil(() => publisher.acked.length >= 10, { label: 'publications before the reload' });
    const logMark = c.logs.length;
    const before = new Set([...c.readyWorkers().keys()]);
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [...SOURCE_NODE_ARGS, join(ROOT, 'src/cli/main.ts'), 'reload', '--state-dir', join(c.dir, 'state')], (error, stdout) => (error ? reject(error) : resolve(stdout))),
    );
    assert.match(out, /sent SIGHUP/);
    await c.waitLog((l) => l.msg === 'rolling reload complete', 60000, 'the reload completed', logMark);
    const replaced = c.logs.slice(logMark).filter((l) => l.msg === 'worker ready');
    assert.equal(replaced.length, 2, 'both slots have a new worker, the empty one included');
    for (const line of replaced) assert.ok(!before.has(line.worker));
    const ackedAfter = publisher.acked.length;
    await waitUntil(() => publisher.acked.length >= ackedAfter + 10, { label: 'publications after the reload' });
    const acked = await publisher.stop();
    await assertNoLoss(subscribers, acked);
    for (const client of subscribers) {
      assert.ok(client.reconnects >= 1, 'every subscriber was moved off an old worker');
      assert.ok(client.closeCodes.includes(3001), `closed with 3001 (shutdown, reconnect): ${client.closeCodes}`);
    }
    for (const client of subscribers) client.stop();
  });

  test('a worker sent SIGTERM drains alone and is replaced at once (not a crash)', async () => {
    const pins = await twoWorkers();
    const leaving = workerOfNode(await pins[0].node());
    const logMark = c.logs.length;
    process.kill(leaving.pid, 'SIGTERM');
    await c.waitLog((l) => l.msg === 'worker draining on its own; replacing it' && l.worker === leaving.worker, 10000, 'the worker leaving', logMark);
    await c.waitLog((l) => l.msg === 'worker ready' && l.slot === leaving.slot, 30000, 'its replacement', logMark);
    await c.waitLog((l) => l.msg === 'stopped' && l.worker === leaving.worker, 10000, 'the old worker drained', logMark);
    assert.deepEqual(c.logs.slice(logMark).filter((l) => l.level >= 40), [], 'no warning or error: a planned exit');
  });

  test('SIGTERM drains every worker (clients closed with 3001) and the primary exits 0', async () => {
    const channel = unique('drain');
    const subscribers: RecoveringWs[] = [];
    for (let i = 0; i < 4; i++) {
      const client = subscriber(channel);
      await client.start();
      subscribers.push(client);
    }
    const logMark = c.logs.length;
    c.process.kill('SIGTERM');
    const exit = await c.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    for (const client of subscribers) {
      client.stop();
      assert.equal(client.closeCodes[0], 3001, `closed with 3001: ${client.closeCodes}`);
    }
    const stopped = c.logs.slice(logMark).filter((l) => l.msg === 'stopped');
    assert.equal(stopped.length, 2, 'both workers drained');
    assert.ok(c.logs.slice(logMark).some((l) => l.msg === 'cluster stopped' && l.code === 0));
  });
});
