/**
 * The Ticker (util/ticker.ts), the one timer the Pusher socket's
 * subscription counts and the subscription_count webhooks share: every job
 * runs at every tick, in the order added, so two jobs run in lockstep; a
 * job closed during a tick does not run again; a job that throws neither
 * stops the others nor its own next run (its error goes to onError); the
 * timer is set only while a job is registered.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ticker } from '../../src/util/ticker.ts';

/** Resolves once `check` holds, checked after every run of a job. */
function when(check: () => boolean): { run(): void; done: Promise<void> } {
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  return {
    run: () => {
      if (check()) resolve();
    },
    done,
  };
}

test('jobs share each tick, in order; closing the last one stops the timer', async () => {
  const errors: unknown[] = [];
  const ticker = new Ticker(5, (error) => errors.push(error));
  assert.equal(ticker.running, false, 'no timer without a job');
  const runs: string[] = [];
  const enough = when(() => runs.length >= 8);
  const a = ticker.every(() => runs.push('a'));
  const b = ticker.every(() => {
    runs.push('b');
    enough.run();
  });
  assert.equal(ticker.running, true);
  await enough.done;
  assert.deepEqual(runs.slice(0, 8), ['a', 'b', 'a', 'b', 'a', 'b', 'a', 'b'], 'one tick runs both, a then b');
  a.close();
  assert.equal(ticker.running, true, 'b is still registered');
  b.close();
  assert.equal(ticker.running, false, 'the timer stops with the last job');
  b.close();
  assert.deepEqual(errors, []);
});

test('a job closed during a tick does not run in it; a throwing job neither stops the others nor itself', async () => {
  const errors: unknown[] = [];
  const ticker = new Ticker(5, (error) => errors.push(error));
  const runs: string[] = [];
  let throws = 0;
  const enough = when(() => throws >= 3);
  let closeC: () => void = () => undefined;
  const a = ticker.every(() => {
    runs.push('a');
    closeC();
  });
  const b = ticker.every(() => {
    throws++;
    enough.run();
    throw new Error(`look ${throws}`);
  });
  const c = ticker.every(() => runs.push('c'));
  closeC = () => c.close();
  await enough.done;
  a.close();
  b.close();
  assert.equal(runs.includes('c'), false, 'c was closed by a, which runs before it in the same tick');
  assert.ok(runs.length >= 3);
  assert.deepEqual(
    errors.slice(0, 3).map((e) => (e as Error).message),
    ['look 1', 'look 2', 'look 3'],
  );
  assert.equal(ticker.running, false);
});
