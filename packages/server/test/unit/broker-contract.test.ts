/**
 * Runs the broker and presence contract (broker-contract.ts) against the
 * in-process memory engine, with an injected clock.
 */
import { MemoryBroker, MemoryPresenceStore } from '../../src/broker/memory-broker.ts';
import { runBrokerContract } from './broker-contract.ts';

runBrokerContract('memory', () => {
  let now = 1_700_000_000_000;
  // A long sweep interval: the contract sweeps explicitly.
  const broker = new MemoryBroker({ now: () => now, sweepIntervalMs: 3_600_000 });
  const presence = new MemoryPresenceStore();
  return {
    broker,
    presence,
    clock: {
      now: () => now,
      advance: (ms: number) => {
        now += ms;
      },
    },
    sweep: () => broker.sweep(),
    async close() {
      await broker.close();
      await presence.close();
    },
  };
}, { answersAtOnce: true });
