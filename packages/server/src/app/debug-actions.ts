/**
 * Debug actions for the watchdog's real-process tests, registered on the
 * internal listener only, and only when the composition root was started
 * with HERALD_TEST_DEBUG_ACTIONS=1 (it logs a warning when they are on).
 * Never in production use: they hurt the process on purpose.
 *
 * - `POST /debug/block-loop?ms=N`: blocks the event loop for N ms (≤ 60 000).
 * - `POST /debug/grow-heap?mib=N`: keeps N MiB (≤ 1024) more reachable
 *   (live heap grows, as with a leak); `mib=0` lets all of it go. Then a
 *   full collection runs, so that the live heap is measured at once instead
 *   of whenever V8 next decides to collect.
 * - `POST /debug/delivery-probe?cut=1`: drops this node's subscription to
 *   its delivery probe's channel in the broker (in cluster mode at the
 *   primary), so probes stop coming back and readiness flips to
 *   `delivery_probe` after the deadline; `cut=0` subscribes it again. 404
 *   on the Redis engine (no such probe).
 */
import type { FastifyInstance } from 'fastify';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from '../core/logger.ts';
import type { DeliveryProbe } from '../broker/delivery-probe.ts';

const retained: string[][] = [];

export function registerDebugActions(app: FastifyInstance, logger: Logger, probe?: DeliveryProbe): void {
  logger.warn({}, 'debug actions on the internal listener (HERALD_TEST_DEBUG_ACTIONS): for tests only');
  const number = (query: unknown, name: string, max: number): number => {
    const value = Number((query as Record<string, unknown>)[name]);
    return Number.isFinite(value) ? Math.max(0, Math.min(max, Math.floor(value))) : 0;
  };
  app.post('/debug/block-loop', async (request) => {
    const ms = number(request.query, 'ms', 60000);
    const until = Date.now() + ms;
    while (Date.now() < until) {
      // Busy on purpose.
    }
    return { blockedMs: ms };
  });
  if (probe !== undefined) {
    app.post('/debug/delivery-probe', async (request) => {
      const cut = number(request.query, 'cut', 1) === 1;
      await probe.cut(cut);
      return { cut };
    });
  }
  app.post('/debug/grow-heap', async (request) => {
    const mib = number(request.query, 'mib', 1024);
    if (mib === 0) retained.length = 0;
    // Strings of 1 KiB each, distinct so that V8 cannot share them.
    for (let m = 0; m < mib; m++) {
      const chunk: string[] = [];
      for (let k = 0; k < 1024; k++) chunk.push(`${m}:${k}:`.padEnd(1024, 'x'));
      retained.push(chunk);
    }
    fullGc();
    return { retainedMiB: retained.length };
  });
}

let gc: (() => void) | undefined;

/** A full garbage collection, through V8's `gc` exposed for this purpose only. */
function fullGc(): void {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}
