/**
 * A worker SIGKILLed while requests are in flight (issue 11, "nothing hangs
 * when a worker dies"; docs/operations.md, "When a worker dies"). Traffic of
 * every kind runs through both workers of `herald serve --workers 2` when one
 * of them is killed:
 *
 * - API publishes on fresh connections (any worker) and on a kept-alive
 *   connection to each worker;
 * - client publishes over WebSocket, on each worker;
 * - commands of an SSE session owned by the dying worker, posted to the
 *   other one (forwarded through the primary);
 * - long polls held across workers in both directions.
 *
 * Every request must end with a documented answer (200; 503 `unavailable`;
 * 404 `session_unknown` for a session whose owner died; reply error 116 for
 * a command), or, when the connection itself belonged to the dead worker,
 * with that connection closed. A request still unanswered once the cluster
 * has replaced the worker and traffic has stopped is a hang: the test waits
 * for every outcome (bounded far above `cluster.callTimeoutMs`, which the
 * cluster is given short) and fails listing what is still waiting.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { openSse, sseUrl, type SseStream } from '../helpers/rt-clients.ts';
import { sleep, waitUntil } from '../helpers/rt-util.ts';
import { TestCluster, type Pinned } from './harness.ts';

/** Short, so that a call or forward left without an answer would fail well within the bound below. */
const CALL_TIMEOUT_MS = 1000;
/** Bounds a hang only: every request must have its outcome this long after traffic stopped. */
const SETTLE_BOUND_MS = 30000;

const channel = (name: string): string => `public:death-${name}-${randomBytes(3).toString('hex')}`;

type Outcome =
  | { readonly kind: 'answer'; readonly status: number; readonly body: any }
  | { readonly kind: 'closed'; readonly code: string }
  | { readonly kind: 'failed'; readonly error: string };

/** Every request started by the test, until it has an outcome. */
class InFlight {
  readonly #pending = new Map<number, { label: string; cancel(): void }>();
  #next = 0;

  track(label: string, cancel: () => void): () => void {
    const id = ++this.#next;
    this.#pending.set(id, { label, cancel });
    return () => this.#pending.delete(id);
  }

  get size(): number {
    return this.#pending.size;
  }

  describe(): string {
    return `still waiting: ${[...this.#pending.values()].map((p) => p.label).join(', ')}`;
  }

  cancelAll(): void {
    for (const entry of this.#pending.values()) entry.cancel();
    this.#pending.clear();
  }
}

const inFlight = new InFlight();

/** One HTTP POST; never rejects: its outcome is an answer, a closed connection, or another failure. */
function post(port: number, pin: Pinned | undefined, path: string, body: unknown, headers: Record<string, string>, label: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const text = JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent: pin?.agent ?? false,
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers },
      },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (data += chunk));
        res.on('end', () => {
          let parsed: unknown = data;
          try {
            parsed = JSON.parse(data);
          } catch {
            // keep the text
          }
          done({ kind: 'answer', status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', (error: NodeJS.ErrnoException) => done(failure(error)));
      },
    );
    const untrack = inFlight.track(label, () => req.destroy(new Error('cancelled: no outcome')));
    const done = (outcome: Outcome): void => {
      untrack();
      resolve(outcome);
    };
    req.on('socket', (socket) => {
      try {
        pin?.adopt(socket);
      } catch (error) {
        req.destroy(error as Error);
      }
    });
    req.on('error', (error: NodeJS.ErrnoException) => done(failure(error)));
    req.end(text);
  });
}

function failure(error: NodeJS.ErrnoException): Outcome {
  if (error.code === 'ECONNRESET' || error.code === 'EPIPE') return { kind: 'closed', code: error.code };
  return { kind: 'failed', error: error.message };
}

const isError = (outcome: Outcome, status: number, code: string): boolean => outcome.kind === 'answer' && outcome.status === status && outcome.body?.error?.code === code;
const isOk = (outcome: Outcome): boolean => outcome.kind === 'answer' && outcome.status === 200;
/** A documented answer of the HTTP API to a publish. */
const apiAnswer = (outcome: Outcome): boolean => isOk(outcome) || isError(outcome, 503, 'unavailable');
const show = (outcomes: readonly Outcome[]): string => JSON.stringify(outcomes.filter((o) => !isOk(o)).slice(0, 10));

/** A WebSocket client that publishes in a loop, a few commands in flight at a time. */
class PublishingWs {
  readonly ws: WebSocket;
  readonly replies = new Map<number, any>();
  readonly sent = new Set<number>();
  closeCode: number | undefined;
  #next = 2;
  #stopped = false;
  readonly #untrack = new Map<number, () => void>();

  private constructor(ws: WebSocket) {
    this.ws = ws;
  }

  static async open(url: string): Promise<PublishingWs> {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const client = new PublishingWs(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => ws.send(JSON.stringify({ id: 1, method: 'connect', params: {} })));
      ws.once('message', (raw) => (JSON.parse(String(raw)).result !== undefined ? resolve() : reject(new Error(`connect refused: ${String(raw)}`))));
      ws.once('close', (code) => reject(new Error(`closed with ${code} before connecting`)));
      ws.once('error', reject);
    });
    ws.on('message', (raw) => {
      const frame = JSON.parse(String(raw)) as Record<string, any>;
      if (frame['push'] === 'ping') ws.send('{"method":"pong"}');
      if (typeof frame['id'] !== 'number' || !client.sent.has(frame['id'])) return;
      client.replies.set(frame['id'], frame);
      client.#untrack.get(frame['id'])?.();
      client.#untrack.delete(frame['id']);
      client.#fill();
    });
    ws.on('close', (code) => {
      client.closeCode = code;
      // A command of a connection that closed has its outcome: the close.
      for (const untrack of client.#untrack.values()) untrack();
      client.#untrack.clear();
    });
    ws.on('error', () => {});
    return client;
  }

  start(target: string, label: string): void {
    this.#label = label;
    this.#target = target;
    this.#fill();
  }

  #label = '';
  #target = '';

  #fill(): void {
    while (!this.#stopped && this.closeCode === undefined && this.#untrack.size < 4) {
      const id = this.#next++;
      this.sent.add(id);
      this.#untrack.set(
        id,
        inFlight.track(`${this.#label} command ${id}`, () => this.ws.terminate()),
      );
      this.ws.send(JSON.stringify({ id, method: 'publish', params: { channel: this.#target, data: { id } } }));
    }
  }

  stop(): void {
    this.#stopped = true;
  }

  /** Replies that are neither a result nor reply error 116 (`unavailable`). */
  undocumented(): unknown[] {
    return [...this.replies.values()].filter((frame) => frame.result === undefined && frame.error?.code !== 116);
  }

  unanswered(): number[] {
    return [...this.sent].filter((id) => !this.replies.has(id));
  }
}

describe('a worker SIGKILLed with requests in flight', { timeout: 240000 }, () => {
  let c: TestCluster;
  const streams: SseStream[] = [];
  const sockets: PublishingWs[] = [];

  before(async () => {
    c = await TestCluster.start({ workers: 2, config: { cluster: { callTimeoutMs: CALL_TIMEOUT_MS }, limits: { inboundRatePerSecond: 100000, inboundBurst: 100000, inboundHardPerSecond: 1000000 } } });
  });
  after(async () => {
    inFlight.cancelAll();
    for (const stream of streams) stream.abort();
    for (const client of sockets) client.ws.terminate();
    await c?.stop();
  });

  function workerOfNode(node: string): { worker: number; pid: number; slot: number } {
    for (const line of c.readyWorkers().values()) if (line.node === node) return { worker: line.worker, pid: line.pid, slot: line.slot };
    throw new Error(`no ready worker with node ${node}; ${c.tail()}`);
  }

  /** A kept-alive connection to the worker of `node`. */
  async function pinTo(node: string): Promise<Pinned> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const pins = await c.pinToWorkers(2);
      let found: Pinned | undefined;
      for (const pin of pins) {
        if (found === undefined && (await pin.node()) === node) found = pin;
        else pin.close();
      }
      if (found !== undefined) return found;
    }
    throw new Error(`no connection to node ${node}`);
  }

  /** A WebSocket client on the worker behind `pins[index]`: the one whose live connections grew by one. */
  async function wsOn(pins: readonly [Pinned, Pinned], index: 0 | 1): Promise<PublishingWs> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const before = await Promise.all(pins.map((p) => p.connections()));
      const client = await PublishingWs.open(c.wsUrl);
      const after = await Promise.all(pins.map((p) => p.connections()));
      const grew = after.map((n, i) => n - before[i]!);
      if (grew[index] === 1 && grew[1 - index] === 0) {
        sockets.push(client);
        return client;
      }
      client.ws.terminate();
      await sleep(100);
    }
    throw new Error(`could not place a WebSocket on worker ${index}`);
  }

  test('every request gets a documented answer, or its connection closes with the worker that held it; none waits', async () => {
    const [first, second] = await c.pinToWorkers(2);
    const victim = workerOfNode(await first!.node());
    const survivor = workerOfNode(await second!.node());
    const pins: [Pinned, Pinned] = [first!, second!];
    const target = channel('pub');

    // Placed while nothing else connects (the placement counts connections).
    const wsVictim = [await wsOn(pins, 0), await wsOn(pins, 0)];
    const wsSurvivor = [await wsOn(pins, 1), await wsOn(pins, 1)];

    // Long-poll sessions, one owned by each worker.
    const lpChannel = channel('lp');
    const openPoll = async (pin: Pinned): Promise<{ session: string; seq: number }> => {
      const opened = await pin.post('/connection/poll/open', { channels: [lpChannel] });
      assert.equal(opened.status, 200, JSON.stringify(opened.body));
      return { session: opened.body.session as string, seq: opened.body.seq as number };
    };
    const lpOfVictim = await openPoll(pins[0]);
    const lpOfSurvivor = await openPoll(pins[1]);
    assert.ok(lpOfVictim.session.startsWith(`${victim.worker}.`) && lpOfSurvivor.session.startsWith(`${survivor.worker}.`), 'the secret names the owner');

    // An SSE session owned by the worker that will die.
    let sseSession = '';
    for (let attempt = 0; attempt < 30 && sseSession === ''; attempt++) {
      const stream = await openSse(sseUrl(c.url, { channels: [channel('sse')] }));
      streams.push(stream);
      const connected = await stream.waitForFrame((f) => f['push'] === 'connected');
      if (String(connected['session']).startsWith(`${victim.worker}.`)) sseSession = connected['session'] as string;
      else stream.abort();
    }
    assert.notEqual(sseSession, '', 'an SSE session on the worker that will die');

    // Held polls across workers, each on a connection of its own.
    const survivorForPolls = await pinTo(await pins[1].node());
    const victimForPolls = await pinTo(await pins[0].node());
    const heldAtVictim = post(c.port, survivorForPolls, '/connection/poll', { seq: lpOfVictim.seq }, { 'herald-session': lpOfVictim.session }, 'poll of the dying worker\'s session, via the survivor');
    const heldAtSurvivor = post(c.port, victimForPolls, '/connection/poll', { seq: lpOfSurvivor.seq }, { 'herald-session': lpOfSurvivor.session }, 'poll of the survivor\'s session, via the dying worker');

    // Traffic.
    let stopped = false;
    const fresh: Outcome[] = [];
    const onSurvivor: Outcome[] = [];
    const onVictim: Outcome[] = [];
    const forwarded: Outcome[] = [];
    const auth = { authorization: `Bearer ${c.apiKey}` };
    const loops: Promise<void>[] = [];
    for (let i = 0; i < 6; i++) {
      loops.push(
        (async () => {
          for (let n = 0; !stopped; n++) fresh.push(await post(c.port, undefined, '/api/publish', { channel: target, data: { i, n } }, auth, `fresh publish ${i}/${n}`));
        })(),
      );
    }
    loops.push(
      (async () => {
        for (let n = 0; !stopped; n++) onSurvivor.push(await post(c.port, pins[1], '/api/publish', { channel: target, data: { n } }, auth, `publish ${n} on the survivor's connection`));
      })(),
      (async () => {
        for (let n = 0; !stopped; n++) {
          const outcome = await post(c.port, pins[0], '/api/publish', { channel: target, data: { n } }, auth, `publish ${n} on the dying worker's connection`);
          onVictim.push(outcome);
          if (outcome.kind !== 'answer') return;
        }
      })(),
      (async () => {
        for (let n = 0; !stopped; n++) {
          const outcome = await post(c.port, pins[1], '/connection/command', [{ id: n + 1, method: 'publish', params: { channel: target, data: { n } } }], { 'herald-session': sseSession }, `forwarded SSE command ${n}`);
          forwarded.push(outcome);
          if (isError(outcome, 404, 'session_unknown')) return;
        }
      })(),
    );
    for (const [i, client] of [...wsVictim, ...wsSurvivor].entries()) client.start(target, `WebSocket ${i}`);

    await waitUntil(() => fresh.filter(isOk).length >= 30 && wsSurvivor.every((ws) => ws.replies.size >= 5) && wsVictim.every((ws) => ws.replies.size >= 5), {
      timeoutMs: 30000,
      label: 'traffic through both workers',
    });
    const logMark = c.logs.length;
    process.kill(victim.pid, 'SIGKILL');
    const freshAtKill = fresh.length;
    await c.waitLog((l) => l.msg === 'worker ready' && l.slot === victim.slot, 30000, 'a replacement worker', logMark);
    await waitUntil(() => fresh.slice(freshAtKill).filter(isOk).length >= 30, { timeoutMs: 30000, label: 'publications after the kill' });
    stopped = true;
    for (const client of [...wsVictim, ...wsSurvivor]) client.stop();

    // Nothing waits: every request has its outcome.
    await waitUntil(() => inFlight.size === 0, { timeoutMs: SETTLE_BOUND_MS, intervalMs: 50, label: 'every request in flight answered or closed', describe: () => inFlight.describe() });
    await Promise.all(loops);

    // API publishes on fresh connections: 200 or 503 unavailable; closed only when the dead worker held the connection.
    const freshWrong = fresh.filter((o) => !apiAnswer(o) && o.kind !== 'closed');
    assert.deepEqual(freshWrong, [], `fresh connections: ${show(fresh)}`);
    assert.ok(onSurvivor.length > 0 && onSurvivor.every(apiAnswer), `the survivor's kept-alive connection is answered every time: ${show(onSurvivor)}`);
    assert.ok(onVictim.slice(0, -1).every(isOk), `the dying worker answered until it died: ${show(onVictim)}`);
    assert.equal(onVictim.at(-1)?.kind, 'closed', 'then its connection closed');

    // Client publishes: a result or reply error 116; the dead worker's connections closed (1006).
    for (const client of wsSurvivor) {
      assert.equal(client.closeCode, undefined, 'a connection of the survivor stays open');
      assert.deepEqual(client.unanswered(), [], 'every command on the survivor is answered');
      assert.deepEqual(client.undocumented(), []);
    }
    for (const client of wsVictim) {
      assert.equal(client.closeCode, 1006, 'a connection of the dead worker closed');
      assert.deepEqual(client.undocumented(), []);
    }

    // A session of the dead worker: its forwarded commands end with 404 session_unknown, never a hang.
    const forwardedWrong = forwarded.filter((o) => !(isOk(o) || isError(o, 404, 'session_unknown') || isError(o, 503, 'unavailable')));
    assert.deepEqual(forwardedWrong, [], `forwarded commands: ${show(forwarded)}`);
    for (const outcome of forwarded) {
      if (isOk(outcome) && outcome.kind === 'answer') for (const reply of outcome.body as any[]) assert.ok(reply.result !== undefined || reply.error?.code === 116, JSON.stringify(reply));
    }
    assert.ok(forwarded.some(isOk), 'commands were forwarded to the owner while it lived');
    assert.ok(isError(forwarded.at(-1)!, 404, 'session_unknown'), 'the dead owner\'s session is unknown from then on');

    // Held polls: the owner died → 404 session_unknown; the forwarding worker died → its connection closed.
    const atVictim = await heldAtVictim;
    assert.ok(isError(atVictim, 404, 'session_unknown'), JSON.stringify(atVictim));
    assert.equal((await heldAtSurvivor).kind, 'closed');
    // The survivor's session still works: the held poll of the dead worker was given up at the owner.
    const next = post(c.port, survivorForPolls, '/connection/poll', { seq: lpOfSurvivor.seq }, { 'herald-session': lpOfSurvivor.session }, 'poll of the survivor\'s session after the kill');
    await sleep(50);
    assert.equal((await c.api('publish', { channel: lpChannel, data: 'after' })).status, 200);
    const answer = await next;
    assert.ok(isOk(answer) && answer.kind === 'answer', JSON.stringify(answer));
    assert.ok(
      (answer.body.messages as { push?: string }[]).some((m) => m.push === 'publication'),
      `the publication reaches the survivor's session: ${JSON.stringify(answer.body)}`,
    );
  });
});
