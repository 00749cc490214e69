/**
 * The young generation's hold during connect storms
 * (util/young-generation.ts): the growth factor it sets as connections
 * open, on a clock of the test's. V8's side (that the factor stops the
 * young generation growing) is measured by bench/connection-memory.ts.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { STORM_OPENS, YoungGenerationHold } from '../../src/util/young-generation.ts';

function hold(): { hold: YoungGenerationHold; factors: number[]; clock: { now: number } } {
  const factors: number[] = [];
  const clock = { now: 1_000_000 };
  const subject = new YoungGenerationHold((factor) => factors.push(factor), () => clock.now);
  subject.enable();
  return { hold: subject, factors, clock };
}

it('holds the young generation from the storm-th connection within a second, and lets it grow a second after the storm', () => {
  const { hold: subject, factors, clock } = hold();
  for (let i = 0; i < STORM_OPENS - 1; i++) subject.opened();
  assert.deepEqual(factors, [], 'held before the storm');
  assert.equal(subject.holding, false);
  subject.opened();
  assert.deepEqual(factors, [1]);
  assert.equal(subject.holding, true);
  // The storm goes on into the next second: still held, the factor set once.
  clock.now += 1000;
  for (let i = 0; i < STORM_OPENS; i++) subject.opened();
  assert.deepEqual(factors, [1]);
  // A second after the storm's last second, a few connections: V8's default again.
  clock.now += 1000;
  subject.opened();
  assert.equal(subject.holding, true, 'released within the second after the storm');
  clock.now += 1000;
  subject.opened();
  assert.deepEqual(factors, [1, 2]);
  assert.equal(subject.holding, false);
});

it('lets the young generation grow once the storm is over even when nothing opens after it', () => {
  const { hold: subject, factors, clock } = hold();
  for (let i = 0; i < STORM_OPENS; i++) subject.opened();
  subject.check();
  assert.deepEqual(factors, [1]);
  clock.now += 3000;
  subject.check();
  assert.deepEqual(factors, [1, 2]);
});

it('a steady churn below the storm rate never holds it', () => {
  const { hold: subject, factors, clock } = hold();
  for (let second = 0; second < 5; second++) {
    for (let i = 0; i < STORM_OPENS - 1; i++) subject.opened();
    clock.now += 1000;
  }
  assert.deepEqual(factors, []);
});

it('does nothing before start-up is over', () => {
  const factors: number[] = [];
  const subject = new YoungGenerationHold((factor) => factors.push(factor), () => 0);
  for (let i = 0; i < STORM_OPENS * 2; i++) subject.opened();
  assert.deepEqual(factors, []);
  assert.equal(subject.holding, false);
});
