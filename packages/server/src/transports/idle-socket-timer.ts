/**
 * Node's HTTP server arms a keep-alive timer on a socket when an answer
 * ends (`server.keepAliveTimeout`) and clears it with `setTimeout(0)` when
 * the next request comes; the cleared timer (a `Timeout`, its bound
 * callback and three numbers, about 260 bytes) stays on the socket until
 * the next answer. A held long poll is such a next request, and waits for
 * up to `longPoll.pollTimeoutMs`: at 10 000 held polls the dead timers are
 * 2.5 MiB. `dropClearedTimer` lets it go.
 *
 * The timer is a field of Node's socket under `Symbol(timeout)` (null until
 * a timeout is set, as Node's own constructor leaves it). Only a cleared
 * timer is dropped: `socket.timeout` is 0 (documented: the value given to
 * `setTimeout`) and the timer is no longer scheduled. On a Node whose socket
 * has no such field this does nothing.
 */
import type { Socket } from 'node:net';

let timerField: symbol | null | undefined;

export function dropClearedTimer(socket: Socket): void {
  if (socket.timeout !== 0) return;
  if (timerField === undefined) timerField = Object.getOwnPropertySymbols(socket).find((key) => key.description === 'timeout') ?? null;
  if (timerField === null) return;
  const fields = socket as unknown as Record<symbol, { _idleTimeout?: unknown } | null | undefined>;
  if (fields[timerField]?._idleTimeout === -1) fields[timerField] = null;
}
