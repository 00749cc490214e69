/**
 * The broker and presence contract (packages/server/src/broker/broker.ts), as a reusable
 * suite: every engine (memory, cluster, Redis, …) runs
 * `runBrokerContract(name, factory)` from its own `*.test.ts` file.
 *
 * The factory builds a fresh engine per test. Tests that need to move time
 * (TTL, stream expiry) use `harness.clock` and `harness.sweep`; an engine that
 * cannot inject a clock leaves them out and those tests are skipped. Delivery
 * may be asynchronous: the suite waits for events instead of assuming they
 * arrive inside `publish`.
 */
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Broker, BrokerEventHandler, PresenceStore, StoredPublication, StreamOptions } from '../../src/broker/broker.ts';
import type { ClientInfo } from '@herald/protocol';
import { isValidEpoch } from '@herald/protocol';

export interface ContractClock {
  now(): number;
  advance(ms: number): void;
}

export interface BrokerHarness {
  readonly broker: Broker;
  readonly presence: PresenceStore;
  /** The clock the engine reads (MemoryBroker `now` option); absent when the engine uses real time. */
  readonly clock?: ContractClock | undefined;
  /** Runs the engine's expiry of dead streams now (MemoryBroker#sweep); absent when expiry is not controllable. */
  readonly sweep?: (() => void | Promise<void>) | undefined;
  /** Releases everything the harness started. */
  close(): Promise<void>;
}

export type BrokerFactory = () => BrokerHarness | Promise<BrokerHarness>;

/** Time an asynchronous engine gets to deliver an event, or to show that it does not. */
const DELIVERY_TIMEOUT_MS = 2000;
const SETTLE_MS = 50;

type BrokerEvent =
  | { readonly kind: 'publication'; readonly channel: string; readonly publication: StoredPublication }
  | { readonly kind: 'join' | 'leave'; readonly channel: string; readonly info: ClientInfo }
  | { readonly kind: 'reset'; readonly channel: string };

class Recorder implements BrokerEventHandler {
  readonly events: BrokerEvent[] = [];
  onPublication(channel: string, publication: StoredPublication): void {
    this.events.push({ kind: 'publication', channel, publication });
  }
  onJoin(channel: string, info: ClientInfo): void {
    this.events.push({ kind: 'join', channel, info });
  }
  onLeave(channel: string, info: ClientInfo): void {
    this.events.push({ kind: 'leave', channel, info });
  }
  onStreamReset(channel: string): void {
    this.events.push({ kind: 'reset', channel });
  }
  publications(channel: string): StoredPublication[] {
    const out: StoredPublication[] = [];
    for (const e of this.events) if (e.kind === 'publication' && e.channel === channel) out.push(e.publication);
    return out;
  }
  of(kind: BrokerEvent['kind'], channel?: string): BrokerEvent[] {
    return this.events.filter((e) => e.kind === kind && (channel === undefined || e.channel === channel));
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function eventually(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + DELIVERY_TIMEOUT_MS;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const history = (size: number, ttlMs = 60_000): StreamOptions => ({ size, ttlMs });
const noHistory: StreamOptions = { size: 0, ttlMs: 60_000 };
const data = (n: number) => JSON.stringify({ n });
const offsets = (list: readonly StoredPublication[]) => list.map((p) => p.offset);
const info = (client: string, user: string, connInfo?: unknown): ClientInfo =>
  connInfo === undefined ? { client, user } : { client, user, conn_info: connInfo };
/** Presence records compared without caring about their prototype. */
const plain = (record: Record<string, ClientInfo>) => Object.fromEntries(Object.entries(record).map(([k, v]) => [k, { ...v }]));

interface Ctx {
  readonly h: BrokerHarness;
  readonly events: Recorder;
  /** A channel name unique to this test run (engines may share state). */
  ch(name: string): string;
}

/**
 * `answersAtOnce`: the engine implements the optional `Broker.historyNow` and
 * `PresenceStore.addNow` (memory and sqlite), whose contract tests then run;
 * engines that go over a network (redis, cluster links) do not have them and
 * their callers wait on `history` and `add`.
 */
export function runBrokerContract(name: string, factory: BrokerFactory, options: { answersAtOnce?: boolean } = {}): void {
  /** Runs `body` against a fresh harness with an event recorder installed. */
  function withHarness(body: (ctx: Ctx, t: TestContext) => Promise<void>): (t: TestContext) => Promise<void> {
    return async (t) => {
      const h = await factory();
      const events = new Recorder();
      h.broker.setEventHandler(events);
      const prefix = `contract${randomBytes(4).toString('hex')}`;
      try {
        await body({ h, events, ch: (n) => `${prefix}:${n}` }, t);
      } finally {
        await h.close();
      }
    };
  }

  /** Like withHarness, but skips the test when the engine's clock cannot be injected. */
  function withClock(body: (ctx: Ctx & { clock: ContractClock; sweep: () => Promise<void> }, t: TestContext) => Promise<void>) {
    return withHarness(async (ctx, t) => {
      const { clock, sweep } = ctx.h;
      if (clock === undefined || sweep === undefined) {
        t.skip(`${name}: no injectable clock or sweep`);
        return;
      }
      await body({ ...ctx, clock, sweep: async () => sweep() }, t);
    });
  }

  describe(`broker contract: ${name}`, () => {
    describe('positions', () => {
      it('offsets are contiguous from 1 within one epoch', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        const positions = [];
        for (let i = 1; i <= 20; i++) positions.push(await h.broker.publish(channel, data(i), { stream: history(100) }));
        assert.deepEqual(positions.map((p) => p.offset), Array.from({ length: 20 }, (_, i) => i + 1));
        const epoch = positions[0]!.epoch;
        assert.ok(isValidEpoch(epoch), `epoch ${JSON.stringify(epoch)} matches the position-vector grammar`);
        for (const p of positions) assert.equal(p.epoch, epoch, 'one epoch while the stream lives');
      }));

      it('concurrent publishes get distinct, contiguous offsets', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        const positions = await Promise.all(Array.from({ length: 100 }, (_, i) => h.broker.publish(channel, data(i), { stream: history(1000) })));
        assert.deepEqual(positions.map((p) => p.offset).sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i + 1));
        assert.equal(new Set(positions.map((p) => p.epoch)).size, 1);
        const page = await h.broker.history(channel, { limit: 1000 }, history(1000));
        assert.deepEqual(offsets(page.publications), Array.from({ length: 100 }, (_, i) => i + 1));
        // The stored order is the offset order, and each publication is stored under the offset it was given.
        for (const [i, p] of positions.entries()) {
          assert.equal(page.publications[p.offset - 1]!.data, data(i));
        }
      }));

      it('every channel has its own stream', withHarness(async ({ h, ch }) => {
        const a = await h.broker.publish(ch('a'), data(1), { stream: history(10) });
        const b = await h.broker.publish(ch('b'), data(1), { stream: history(10) });
        await h.broker.publish(ch('a'), data(2), { stream: history(10) });
        const b2 = await h.broker.publish(ch('b'), data(2), { stream: history(10) });
        assert.equal(a.offset, 1);
        assert.equal(b.offset, 1);
        assert.equal(b2.offset, 2);
        const pageA = await h.broker.history(ch('a'), { limit: 10 }, history(10));
        assert.deepEqual(offsets(pageA.publications), [1, 2]);
        assert.equal(pageA.position.offset, 2);
      }));
    });

    describe('delivery', () => {
      it('delivers each publication of a subscribed channel once, in offset order per channel', withHarness(async ({ h, events, ch }) => {
        const channels = [ch('a'), ch('b'), ch('c')];
        for (const c of channels) await h.broker.subscribe(c);
        const publishes: Promise<unknown>[] = [];
        for (let i = 0; i < 40; i++) for (const c of channels) publishes.push(h.broker.publish(c, data(i), { stream: history(1000) }));
        await Promise.all(publishes);
        for (const c of channels) {
          await eventually(() => events.publications(c).length >= 40, `40 publications on ${c}`);
          await sleep(SETTLE_MS);
          const delivered = events.publications(c);
          assert.deepEqual(offsets(delivered), Array.from({ length: 40 }, (_, i) => i + 1), `${c}: in order, no gap, no duplicate`);
        }
        assert.deepEqual(events.of('reset'), []);
      }));

      it('a delivered publication carries its data, info and acceptance time', withHarness(async ({ h, events, ch }) => {
        const channel = ch('a');
        await h.broker.subscribe(channel);
        const before = h.clock?.now() ?? Date.now();
        const who = info('client-1', 'alice', { role: 'admin' });
        const text = JSON.stringify({ text: 'hi', nested: [1, { a: null }] });
        const position = await h.broker.publish(channel, text, { stream: history(10), info: who });
        await h.broker.publish(channel, '"plain"', { stream: history(10) });
        const after = h.clock?.now() ?? Date.now();
        await eventually(() => events.publications(channel).length >= 2, 'two publications');
        const [first, second] = events.publications(channel) as [StoredPublication, StoredPublication];
        assert.equal(first.offset, position.offset);
        assert.equal(first.data, text, 'data is delivered as the same JSON text');
        assert.deepEqual({ ...first.info }, who);
        assert.ok(first.time >= before && first.time <= after, `time ${first.time} within [${before}, ${after}]`);
        assert.equal(second.data, '"plain"');
        assert.equal(second.info, undefined, 'no info for a server publication');
      }));

      it('delivers only channels this node subscribed to', withHarness(async ({ h, events, ch }) => {
        const subscribed = ch('yes');
        const other = ch('no');
        await h.broker.subscribe(subscribed);
        await h.broker.publish(other, data(1), { stream: history(10) });
        await h.broker.publish(other, data(2), { stream: noHistory });
        await h.broker.publish(subscribed, data(3), { stream: history(10) });
        await eventually(() => events.publications(subscribed).length === 1, 'the marker publication');
        await sleep(SETTLE_MS);
        assert.deepEqual(events.publications(other), [], 'nothing from an unsubscribed channel');
      }));

      it('subscribe is idempotent and unsubscribe stops delivery', withHarness(async ({ h, events, ch }) => {
        const channel = ch('a');
        const marker = ch('marker');
        await h.broker.subscribe(channel);
        await h.broker.subscribe(channel);
        await h.broker.subscribe(marker);
        await h.broker.publish(channel, data(1), { stream: history(10) });
        await eventually(() => events.publications(channel).length >= 1, 'first publication');
        await sleep(SETTLE_MS);
        assert.equal(events.publications(channel).length, 1, 'subscribing twice delivers once');
        await h.broker.unsubscribe(channel);
        await h.broker.publish(channel, data(2), { stream: history(10) });
        await h.broker.publish(marker, data(0), { stream: history(10) });
        await eventually(() => events.publications(marker).length === 1, 'the marker publication');
        await sleep(SETTLE_MS);
        assert.deepEqual(offsets(events.publications(channel)), [1], 'nothing after unsubscribe');
        await h.broker.subscribe(channel);
        await h.broker.publish(channel, data(3), { stream: history(10) });
        await eventually(() => events.publications(channel).length === 2, 'delivery after resubscribing');
        assert.deepEqual(offsets(events.publications(channel)), [1, 3]);
      }));

      it('join and leave are delivered to subscribed channels only', withHarness(async ({ h, events, ch }) => {
        const channel = ch('room');
        const other = ch('other');
        await h.broker.subscribe(channel);
        const bob = info('c-bob', 'bob', { avatar: 'b.png' });
        await h.broker.publishJoin(other, bob);
        await h.broker.publishLeave(other, bob);
        await h.broker.publishJoin(channel, bob);
        await h.broker.publishLeave(channel, bob);
        await eventually(() => events.of('leave', channel).length === 1, 'the leave');
        await sleep(SETTLE_MS);
        const mine = events.events.filter((e) => e.channel === channel);
        assert.deepEqual(mine.map((e) => e.kind), ['join', 'leave'], 'join before leave');
        for (const e of mine) assert.deepEqual(e.kind === 'join' || e.kind === 'leave' ? { ...e.info } : undefined, bob);
        assert.deepEqual(events.events.filter((e) => e.channel === other), []);
        assert.deepEqual(events.publications(channel), [], 'join and leave are not publications');
      }));
    });

    describe('idempotency', () => {
      const once = (key: string, windowMs = 60_000) => ({ key, windowMs });

      it('a repeat with the same key answers the first position and publishes nothing', withHarness(async ({ h, events, ch }) => {
        const channel = ch('a');
        await h.broker.subscribe(channel);
        const first = await h.broker.publish(channel, data(1), { stream: history(10), idempotency: once('order-1') });
        const again = await h.broker.publish(channel, data(1), { stream: history(10), idempotency: once('order-1') });
        const other = await h.broker.publish(channel, data(2), { stream: history(10), idempotency: once('order-2') });
        const plain = await h.broker.publish(channel, data(3), { stream: history(10) });
        assert.deepEqual({ ...again }, { ...first });
        assert.deepEqual([first.offset, other.offset, plain.offset], [1, 2, 3]);
        await eventually(() => events.publications(channel).length >= 3, 'three publications');
        await sleep(SETTLE_MS);
        assert.deepEqual(offsets(events.publications(channel)), [1, 2, 3], 'the repeat was not delivered');
        const page = await h.broker.history(channel, { limit: 10 }, history(10));
        assert.deepEqual(page.publications.map((p) => p.data), [data(1), data(2), data(3)], 'nor stored');
      }));

      it('keys are per channel', withHarness(async ({ h, ch }) => {
        const [a, b] = [ch('a'), ch('b')];
        const onA = await h.broker.publish(a, data(1), { stream: history(10), idempotency: once('k') });
        const onB = await h.broker.publish(b, data(1), { stream: history(10), idempotency: once('k') });
        assert.equal(onA.offset, 1);
        assert.equal(onB.offset, 1);
        assert.equal((await h.broker.history(b, { limit: 10 }, history(10))).publications.length, 1, 'the same key on another channel publishes');
      }));

      it('concurrent duplicates make one publication', withHarness(async ({ h, events, ch }) => {
        const channel = ch('a');
        await h.broker.subscribe(channel);
        const answers = await Promise.all(Array.from({ length: 8 }, () => h.broker.publish(channel, data(1), { stream: history(10), idempotency: once('race') })));
        for (const answer of answers) assert.deepEqual({ ...answer }, { ...answers[0]! });
        await h.broker.publish(channel, data(2), { stream: history(10) });
        await eventually(() => events.publications(channel).length >= 2, 'the marker publication');
        await sleep(SETTLE_MS);
        assert.deepEqual(offsets(events.publications(channel)), [1, 2]);
      }));

      it('without history a repeat is not delivered either', withHarness(async ({ h, events, ch }) => {
        const channel = ch('a');
        await h.broker.subscribe(channel);
        const answers = await Promise.all([1, 2, 3].map(() => h.broker.publish(channel, data(1), { stream: noHistory, idempotency: once('n') })));
        await h.broker.publish(channel, data(1), { stream: noHistory, idempotency: once('n') });
        for (const answer of answers) assert.deepEqual({ ...answer }, { epoch: '', offset: 0 });
        await h.broker.publish(channel, data(2), { stream: noHistory });
        await eventually(() => events.publications(channel).length >= 2, 'the marker publication');
        await sleep(SETTLE_MS);
        assert.deepEqual(events.publications(channel).map((p) => p.data), [data(1), data(2)]);
      }));

      it('after the window the same key publishes again', withHarness(async ({ h, ch }) => {
        // Real time as well as the injected clock: Redis expires keys by its own clock.
        const channel = ch('a');
        const windowMs = 200;
        const first = await h.broker.publish(channel, data(1), { stream: history(10), idempotency: once('w', windowMs) });
        h.clock?.advance(windowMs / 2);
        assert.deepEqual({ ...(await h.broker.publish(channel, data(1), { stream: history(10), idempotency: once('w', windowMs) })) }, { ...first }, 'within the window');
        h.clock?.advance(windowMs);
        await sleep(windowMs + 100);
        await h.sweep?.();
        const later = await h.broker.publish(channel, data(1), { stream: history(10), idempotency: once('w', windowMs) });
        assert.notDeepEqual({ ...later }, { ...first });
      }));
    });

    describe('without history (size 0)', () => {
      it('publish answers offset 0 and an empty epoch, and still delivers', withHarness(async ({ h, events, ch }) => {
        const channel = ch('a');
        await h.broker.subscribe(channel);
        const first = await h.broker.publish(channel, data(1), { stream: noHistory });
        const second = await h.broker.publish(channel, data(2), { stream: noHistory });
        assert.deepEqual({ ...first }, { epoch: '', offset: 0 });
        assert.deepEqual({ ...second }, { epoch: '', offset: 0 });
        await eventually(() => events.publications(channel).length === 2, 'two publications');
        assert.deepEqual(offsets(events.publications(channel)), [0, 0]);
        assert.deepEqual(events.publications(channel).map((p) => p.data), [data(1), data(2)], 'in publish order');
      }));

      it('history is empty, with offset 0 and an empty epoch', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        await h.broker.publish(channel, data(1), { stream: noHistory });
        for (const query of [{ limit: 0 }, { limit: 10 }, { limit: 10, reverse: true }, { limit: 10, since: { epoch: 'abc', offset: 0 } }]) {
          const page = await h.broker.history(channel, query, noHistory);
          assert.deepEqual({ ...page.position }, { epoch: '', offset: 0 });
          assert.deepEqual(page.publications, []);
        }
      }));
    });

    describe('history', () => {
      async function publishN(h: BrokerHarness, channel: string, n: number, stream = history(100)) {
        let last = { epoch: '', offset: 0 };
        for (let i = 1; i <= n; i++) last = await h.broker.publish(channel, data(i), { stream });
        return last;
      }

      it('of a new channel creates its epoch at offset 0, and the first publish keeps that epoch', withHarness(async ({ h, ch }) => {
        const channel = ch('fresh');
        const page = await h.broker.history(channel, { limit: 10 }, history(100));
        assert.equal(page.position.offset, 0);
        assert.ok(isValidEpoch(page.position.epoch));
        assert.deepEqual(page.publications, []);
        const again = await h.broker.history(channel, { limit: 0 }, history(100));
        assert.equal(again.position.epoch, page.position.epoch, 'reading does not change the epoch');
        const position = await h.broker.publish(channel, data(1), { stream: history(100) });
        assert.deepEqual({ ...position }, { epoch: page.position.epoch, offset: 1 });
      }));

      it('limit 0 gives only the position', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        const top = await publishN(h, channel, 5);
        const page = await h.broker.history(channel, { limit: 0 }, history(100));
        assert.deepEqual({ ...page.position }, { ...top });
        assert.deepEqual(page.publications, []);
        const since = await h.broker.history(channel, { limit: 0, since: { epoch: top.epoch, offset: 2 } }, history(100));
        assert.deepEqual(since.publications, []);
      }));

      it('limit returns the oldest first, in offset order', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        const top = await publishN(h, channel, 10);
        const page = await h.broker.history(channel, { limit: 3 }, history(100));
        assert.deepEqual(offsets(page.publications), [1, 2, 3]);
        assert.deepEqual(page.publications.map((p) => p.data), [data(1), data(2), data(3)]);
        assert.deepEqual({ ...page.position }, { ...top });
        const all = await h.broker.history(channel, { limit: 1000 }, history(100));
        assert.deepEqual(offsets(all.publications), Array.from({ length: 10 }, (_, i) => i + 1));
      }));

      it('reverse returns the newest first', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        await publishN(h, channel, 10);
        const page = await h.broker.history(channel, { limit: 3, reverse: true }, history(100));
        assert.deepEqual(offsets(page.publications), [10, 9, 8]);
        const all = await h.broker.history(channel, { limit: 100, reverse: true }, history(100));
        assert.deepEqual(offsets(all.publications), Array.from({ length: 10 }, (_, i) => 10 - i));
      }));

      it('since returns only the publications after that offset', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        const top = await publishN(h, channel, 10);
        const since = (offset: number, limit = 100, reverse?: boolean) =>
          h.broker.history(channel, { since: { epoch: top.epoch, offset }, limit, reverse }, history(100)).then((p) => offsets(p.publications));
        assert.deepEqual(await since(0), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert.deepEqual(await since(7), [8, 9, 10]);
        assert.deepEqual(await since(3, 2), [4, 5], 'limit counts from the oldest after since');
        assert.deepEqual(await since(10), [], 'nothing after the top');
        assert.deepEqual(await since(50), [], 'nothing when since is ahead of the stream');
        assert.deepEqual(await since(7, 100, true), [8, 9, 10], 'reverse is ignored with since');
      }));

      it('since with a wrong epoch returns no publications, only the current position', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        const top = await publishN(h, channel, 5);
        const wrong = top.epoch === 'wrongEpoch1' ? 'wrongEpoch2' : 'wrongEpoch1';
        for (const offset of [0, 2, 5]) {
          const page = await h.broker.history(channel, { since: { epoch: wrong, offset }, limit: 100 }, history(100));
          assert.deepEqual(page.publications, [], `since ${wrong}/${offset}`);
          assert.deepEqual({ ...page.position }, { ...top });
        }
      }));

      it('is trimmed to the stream size, keeping the newest', withHarness(async ({ h, ch }) => {
        const channel = ch('a');
        const top = await publishN(h, channel, 8, history(3));
        assert.equal(top.offset, 8, 'offsets keep counting past the size');
        const page = await h.broker.history(channel, { limit: 100 }, history(3));
        assert.deepEqual(offsets(page.publications), [6, 7, 8]);
        assert.equal(page.position.offset, 8);
        assert.deepEqual(offsets((await h.broker.history(channel, { limit: 2, reverse: true }, history(3))).publications), [8, 7]);
        // A position older than the kept window: what is left is returned, so the caller sees the gap (6 > 2 + 1).
        const since = await h.broker.history(channel, { since: { epoch: top.epoch, offset: 2 }, limit: 100 }, history(3));
        assert.deepEqual(offsets(since.publications), [6, 7, 8]);
        const next = await h.broker.publish(channel, data(9), { stream: history(3) });
        assert.deepEqual({ ...next }, { epoch: top.epoch, offset: 9 });
      }));
    });

    if (options.answersAtOnce === true) describe('historyNow (engines that answer from memory)', () => {
      it('answers what history answers, at once, except for a stream it would create', withHarness(async ({ h, ch }) => {
        const now = h.broker.historyNow?.bind(h.broker);
        assert.ok(now !== undefined, `${name} is declared to answer at once but has no historyNow`);
        const channel = ch('a');
        const stream = history(5);
        // A new stream: the memory engine answers it at once, the sqlite engine only once its epoch is committed (history).
        const fresh = now(channel, { limit: 0 }, stream);
        const created = await h.broker.history(channel, { limit: 0 }, stream);
        if (fresh !== undefined) assert.deepEqual({ ...fresh.position }, { ...created.position });
        let top = created.position;
        for (let i = 1; i <= 8; i++) top = await h.broker.publish(channel, data(i), { stream });
        const queries = [
          { limit: 0 },
          { limit: 3 },
          { limit: 3, reverse: true },
          { limit: 100, since: { epoch: top.epoch, offset: 6 } },
          { limit: 100, since: { epoch: top.epoch, offset: 1 } },
          { limit: 100, since: { epoch: top.epoch, offset: 8 } },
          { limit: 100, since: { epoch: 'wrongEpoch1', offset: 6 } },
        ];
        for (const query of queries) {
          const expected = await h.broker.history(channel, query, stream);
          // Twice: the second answer may come from the engine's cache of recent pages.
          for (const round of [1, 2]) {
            const page = now(channel, query, stream);
            assert.ok(page !== undefined, `${JSON.stringify(query)} (${round}): answered at once`);
            assert.deepEqual({ ...page.position }, { ...expected.position }, JSON.stringify(query));
            assert.deepEqual(page.publications.map((p) => ({ ...p })), expected.publications.map((p) => ({ ...p })), JSON.stringify(query));
          }
        }
        assert.deepEqual(now(ch('none'), { limit: 10 }, noHistory)?.publications, [], 'without history');
      }));
    });

    describe('time (injected clock)', () => {
      it('publications expire from history after the TTL; the position stays', withClock(async ({ h, ch, clock }) => {
        const channel = ch('a');
        const stream = history(100, 1000);
        await h.broker.subscribe(channel);
        const first = await h.broker.publish(channel, data(1), { stream });
        clock.advance(600);
        await h.broker.publish(channel, data(2), { stream });
        clock.advance(300); // first is 900 ms old, second 300 ms
        assert.deepEqual(offsets((await h.broker.history(channel, { limit: 10 }, stream)).publications), [1, 2]);
        clock.advance(300); // first 1200 ms, second 600 ms
        let page = await h.broker.history(channel, { limit: 10 }, stream);
        assert.deepEqual(offsets(page.publications), [2]);
        assert.deepEqual({ ...page.position }, { epoch: first.epoch, offset: 2 });
        const since = await h.broker.history(channel, { since: { epoch: first.epoch, offset: 0 }, limit: 10 }, stream);
        assert.deepEqual(offsets(since.publications), [2], 'since does not return expired publications');
        clock.advance(1000); // both expired
        page = await h.broker.history(channel, { limit: 10 }, stream);
        assert.deepEqual(page.publications, []);
        assert.deepEqual({ ...page.position }, { epoch: first.epoch, offset: 2 }, 'the stream top survives expiry of its publications');
        const next = await h.broker.publish(channel, data(3), { stream });
        assert.deepEqual({ ...next }, { epoch: first.epoch, offset: 3 });
      }));

      it('the stored time is the engine clock', withClock(async ({ h, ch, clock }) => {
        const channel = ch('a');
        clock.advance(12345);
        await h.broker.publish(channel, data(1), { stream: history(10) });
        const [publication] = (await h.broker.history(channel, { limit: 1 }, history(10))).publications;
        assert.equal(publication?.time, clock.now());
      }));

      it('the epoch is stable while the stream lives (not expired, or still subscribed)', withClock(async ({ h, ch, clock, sweep }) => {
        const stream = history(100, 1000);
        // Unsubscribed but not expired.
        const live = ch('live');
        const a = await h.broker.publish(live, data(1), { stream });
        clock.advance(900);
        await sweep();
        assert.equal((await h.broker.history(live, { limit: 0 }, stream)).position.epoch, a.epoch);
        assert.deepEqual({ ...(await h.broker.publish(live, data(2), { stream })) }, { epoch: a.epoch, offset: 2 });
        // Expired but subscribed.
        const held = ch('held');
        await h.broker.subscribe(held);
        const b = await h.broker.publish(held, data(1), { stream });
        clock.advance(5000);
        await sweep();
        const page = await h.broker.history(held, { limit: 10 }, stream);
        assert.deepEqual(page.publications, []);
        assert.deepEqual({ ...page.position }, { epoch: b.epoch, offset: 1 });
        assert.deepEqual({ ...(await h.broker.publish(held, data(2), { stream })) }, { epoch: b.epoch, offset: 2 });
      }));

      it('after the stream expired unsubscribed and was swept, it starts over in a new epoch', withClock(async ({ h, ch, clock, sweep }) => {
        const channel = ch('a');
        const stream = history(100, 1000);
        await h.broker.subscribe(channel);
        await h.broker.publish(channel, data(1), { stream });
        const old = await h.broker.publish(channel, data(2), { stream });
        await h.broker.unsubscribe(channel);
        clock.advance(5000);
        await sweep();
        const page = await h.broker.history(channel, { limit: 10 }, stream);
        assert.notEqual(page.position.epoch, old.epoch, 'a new epoch tells recovering clients their positions no longer hold');
        assert.ok(isValidEpoch(page.position.epoch));
        assert.equal(page.position.offset, 0);
        assert.deepEqual(page.publications, []);
        const next = await h.broker.publish(channel, data(3), { stream });
        assert.deepEqual({ ...next }, { epoch: page.position.epoch, offset: 1 });
        const stale = await h.broker.history(channel, { since: { epoch: old.epoch, offset: 0 }, limit: 10 }, stream);
        assert.deepEqual(stale.publications, [], 'a position in the old epoch recovers nothing');
        assert.deepEqual({ ...stale.position }, { ...next });
      }));
    });
  });

  describe(`presence contract: ${name}`, () => {
    it('add and get', withHarness(async ({ h, ch }) => {
      const channel = ch('room');
      const alice = info('c1', 'alice', { name: 'Alice' });
      const bob = info('c2', 'bob');
      await h.presence.add(channel, alice);
      await h.presence.add(channel, bob);
      assert.deepEqual(plain(await h.presence.get(channel)), { c1: alice, c2: bob });
    }));

    it('adding a client again replaces it and counts it once', withHarness(async ({ h, ch }) => {
      const channel = ch('room');
      await h.presence.add(channel, info('c1', 'alice', { v: 1 }));
      await h.presence.add(channel, info('c1', 'alice', { v: 2 }));
      assert.deepEqual(plain(await h.presence.get(channel)), { c1: info('c1', 'alice', { v: 2 }) });
      assert.deepEqual({ ...(await h.presence.stats(channel)) }, { numClients: 1, numUsers: 1 });
    }));

    it('remove', withHarness(async ({ h, ch }) => {
      const channel = ch('room');
      await h.presence.add(channel, info('c1', 'alice'));
      await h.presence.add(channel, info('c2', 'bob'));
      await h.presence.remove(channel, 'c1');
      assert.deepEqual(plain(await h.presence.get(channel)), { c2: info('c2', 'bob') });
      await h.presence.remove(channel, 'c2');
      assert.deepEqual(plain(await h.presence.get(channel)), {});
      assert.deepEqual({ ...(await h.presence.stats(channel)) }, { numClients: 0, numUsers: 0 });
      await h.presence.remove(channel, 'never-added');
      await h.presence.remove(ch('never-used'), 'c1');
    }));

    it('stats count clients, and users once however many connections they have', withHarness(async ({ h, ch }) => {
      const channel = ch('room');
      await h.presence.add(channel, info('c1', 'alice'));
      await h.presence.add(channel, info('c2', 'alice'));
      await h.presence.add(channel, info('c3', 'alice'));
      await h.presence.add(channel, info('c4', 'bob'));
      assert.deepEqual({ ...(await h.presence.stats(channel)) }, { numClients: 4, numUsers: 2 });
      await h.presence.remove(channel, 'c1');
      await h.presence.remove(channel, 'c2');
      assert.deepEqual({ ...(await h.presence.stats(channel)) }, { numClients: 2, numUsers: 2 });
      await h.presence.remove(channel, 'c3');
      assert.deepEqual({ ...(await h.presence.stats(channel)) }, { numClients: 1, numUsers: 1 });
    }));

    if (options.answersAtOnce === true) it('addNow adds at once what add adds', withHarness(async ({ h, ch }) => {
      assert.ok(h.presence.addNow !== undefined, `${name} is declared to answer at once but has no addNow`);
      const channel = ch('room');
      h.presence.addNow(channel, info('c1', 'alice'));
      await h.presence.add(channel, info('c2', 'bob'));
      h.presence.addNow(channel, info('c1', 'alice', { v: 2 }));
      assert.deepEqual(plain(await h.presence.get(channel)), { c1: info('c1', 'alice', { v: 2 }), c2: info('c2', 'bob') });
      await h.presence.remove(channel, 'c1');
      assert.deepEqual({ ...(await h.presence.stats(channel)) }, { numClients: 1, numUsers: 1 });
    }));

    it('channels are independent', withHarness(async ({ h, ch }) => {
      await h.presence.add(ch('a'), info('c1', 'alice'));
      await h.presence.add(ch('b'), info('c2', 'bob'));
      await h.presence.add(ch('b'), info('c1', 'alice'));
      await h.presence.remove(ch('b'), 'c1');
      assert.deepEqual(plain(await h.presence.get(ch('a'))), { c1: info('c1', 'alice') });
      assert.deepEqual(plain(await h.presence.get(ch('b'))), { c2: info('c2', 'bob') });
      assert.deepEqual({ ...(await h.presence.stats(ch('a'))) }, { numClients: 1, numUsers: 1 });
    }));

    it('an unknown channel is empty', withHarness(async ({ h, ch }) => {
      assert.deepEqual(plain(await h.presence.get(ch('nobody'))), {});
      assert.deepEqual({ ...(await h.presence.stats(ch('nobody'))) }, { numClients: 0, numUsers: 0 });
    }));

    it('client ids that look like prototype keys are ordinary ids', withHarness(async ({ h, ch }) => {
      const channel = ch('room');
      for (const id of ['__proto__', 'constructor', 'toString']) await h.presence.add(channel, info(id, 'u-' + id));
      const members = await h.presence.get(channel);
      assert.deepEqual(Object.keys(members).sort(), ['__proto__', 'constructor', 'toString']);
      assert.deepEqual({ ...(await h.presence.stats(channel)) }, { numClients: 3, numUsers: 3 });
      assert.equal(({} as Record<string, unknown>)['user'], undefined, 'Object.prototype untouched');
    }));
  });
}
