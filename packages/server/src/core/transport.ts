/**
 * The write side of a connection. The core writes frames and closes; reading
 * stays with the HTTP handler that owns the socket (packages/server/src/transports/*).
 */
import type { EncodedBatch } from './encoded-batch.ts';
import type { EncodedFrame } from './encoded-frame.ts';

export type TransportKind = 'websocket' | 'sse' | 'long-poll';

export interface Transport {
  readonly kind: TransportKind;
  /**
   * True for transports that resume from a position vector (SSE event ids,
   * long-poll cursors): the core then passes the connection's vector with
   * every frame that changes it.
   */
  readonly tracksPositions: boolean;
  /**
   * Queues one frame, in order after every frame written before. Never
   * throws; writes after close are dropped. `positions` is the connection's
   * position vector after this frame, when it changed.
   */
  write(frame: EncodedFrame, positions?: string): void;
  /**
   * Queues several frames in one write, in order after every frame written
   * before, for a connection that announced batched frames
   * (packages/server/src/core/write-scheduler.ts): one WebSocket message with
   * the frames joined by "\n", one SSE event with a `data:` line per frame,
   * the frames as entries of the long-poll queue. `positions` is the
   * connection's position vector after the last frame, when they changed it.
   */
  writeMany(batch: EncodedBatch, positions?: string): void;
  /**
   * Called every ping interval on a connected client: the transport's own
   * keepalive (WebSocket ping frame plus the `ping` push; the `ping` push on
   * SSE; nothing on long polling, whose poll timeout already answers).
   */
  heartbeat(ping: EncodedFrame): void;
  /**
   * Long polling: true while a poll is held open. A held poll is activity,
   * however long the poll timeout.
   */
  holdsRequest?(): boolean;
  /** Bytes accepted by `write` and not yet handed to the kernel (or, for long polling, not yet polled). */
  bufferedBytes(): number;
  /**
   * Calls `listener` once, when the bytes buffered have gone out (the
   * socket's 'drain'; long polling: the next poll that acknowledges frames),
   * or after a short while when the buffer is below the point where the
   * socket reports drains. The caller checks `bufferedBytes()` again. Never
   * called after close. Used by conflation (core/conflation.ts).
   */
  onDrain(listener: () => void): void;
  /**
   * Ends the connection with a disconnect code: a close frame on WebSocket,
   * a final `disconnect` frame on SSE and long polling. Idempotent.
   */
  close(code: number, reason: string): void;
  /**
   * After `close`: resolves once the final frames have gone out (an SSE
   * stream handed to the kernel, a long-poll session's `disconnect`
   * message polled) or were given up after `limits.closeGraceMs`. Never
   * rejects. A drain waits for it; without it, a closed connection is done.
   */
  settled?(): Promise<void>;
}
