/**
 * StaleWatch (core/stale-watch.ts): one timer for every new connection of a
 * node. Only connections still `new` at their deadline are cut, each once;
 * connected, closed and forgotten ones are left alone, across the queue's
 * compaction and across connections added while the timer runs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { StaleWatch, type StaleCandidate } from '../../src/core/stale-watch.ts';

class Candidate implements StaleCandidate {
  state: 'new' | 'connected' | 'closed' = 'new';
  cuts = 0;
  disconnect(name: 'stale'): void {
    assert.equal(name, 'stale');
    this.cuts++;
    this.state = 'closed';
  }
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(5);
}

describe('StaleWatch', () => {
  it('cuts only the connections still new at their deadline, once each', async () => {
    const watch = new StaleWatch(30);
    try {
      const all = Array.from({ length: 3000 }, () => new Candidate());
      const slots = all.map((candidate) => watch.add(candidate));
      // Every third connects, every fifth closes on its own (and is forgotten), the rest stay new.
      all.forEach((candidate, i) => {
        if (i % 3 === 0) candidate.state = 'connected';
        else if (i % 5 === 0) {
          candidate.state = 'closed';
          watch.forget(slots[i]!);
        }
      });
      const stale = all.filter((candidate) => candidate.state === 'new');
      await until(() => stale.every((candidate) => candidate.cuts > 0));
      // A second round, added after the first was judged: the timer is armed again.
      const late = [new Candidate(), new Candidate()];
      const lateSlots = late.map((candidate) => watch.add(candidate));
      watch.forget(lateSlots[0]!);
      await until(() => late[1]!.cuts > 0);
      await sleep(60);
      for (const candidate of all) assert.equal(candidate.cuts, stale.includes(candidate) ? 1 : 0);
      assert.equal(late[0]!.cuts, 0, 'a forgotten connection is never cut');
      assert.equal(late[1]!.cuts, 1);
    } finally {
      watch.close();
    }
  });

  it('judges nothing once closed', async () => {
    const watch = new StaleWatch(10);
    const candidate = new Candidate();
    watch.add(candidate);
    watch.close();
    watch.add(new Candidate());
    await sleep(40);
    assert.equal(candidate.cuts, 0);
  });
});
