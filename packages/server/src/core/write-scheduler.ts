/**
 * Batched writes for connections that announced batched frames
 * (docs/protocol.md, "Batched frames"). A turn is one pass of the event
 * loop in which frames were written; it ends at setImmediate. Without a
 * backlog nothing changes: the first frame for a quiet connection (none in
 * the previous turn) is written at once. Frames that follow it in the same
 * turn, and every frame of a connection that also got frames in the
 * previous turn (a sustained stream), wait in the connection's outbox and go
 * out together at the end of the turn, in one write and, where the transport
 * allows, one frame (Transport.writeMany); an outbox holding
 * MAX_BATCH_FRAMES frames or MAX_BATCH_BYTES is written at once. Frames of a
 * namespace with `writeDelayMs` always wait, at most that long, for the
 * operator who trades latency for fewer writes.
 *
 * Guarantees: frames reach the transport in the order they were written; a
 * frame waits at most until the end of its turn (or its namespace's delay);
 * the slow-consumer limit counts queued bytes as if they were written
 * (BatchWriter.checkBacklog). One scheduler per Node.
 */
import { EncodedBatch } from './encoded-batch.ts';
import type { EncodedFrame } from './encoded-frame.ts';
import type { Transport } from './transport.ts';

/** An outbox holding this many frames is written at once. */
export const MAX_BATCH_FRAMES = 64;
/** A batch stays below this many bytes (UTF-16 units of the frames' text), unless one frame alone is larger. */
export const MAX_BATCH_BYTES = 65536;
/** Cached batches per first frame within one pass (bounds the search). */
const MAX_CANDIDATES = 8;

/** The connection an outbox writes for (implemented by Client). */
export interface BatchWriter {
  readonly transport: Transport;
  /** The connection's position vector now. */
  positionVector(): string;
  /** After every write or queued frame: `queued` bytes still wait in the outbox (the slow-consumer check). */
  checkBacklog(queued: number): void;
}

/** One connection's queue of frames not yet handed to its transport. */
export class Outbox {
  readonly writer: BatchWriter;
  frames: EncodedFrame[] = [];
  bytes = 0;
  /** Whether a queued frame changed the connection's position vector. */
  positionsChanged = false;
  /** Whether a queued frame may cut the connection as slow (not all do: conflated publications). */
  mayCut = false;
  /** The last scheduler turn in which the connection got a frame (written or queued). */
  turn = -2;
  /** Listed for the end of the turn. */
  due = false;
  /** When a delayed write will flush it (epoch ms), 0 when none is pending. */
  flushAt = 0;
  closed = false;

  constructor(writer: BatchWriter) {
    this.writer = writer;
  }
}

interface DelayBucket {
  readonly at: number;
  readonly outboxes: Outbox[];
}

export class WriteScheduler {
  #turn = 0;
  #armed = false;
  #due: Outbox[] = [];
  /** Pending delayed flushes by delay: one timer per distinct `writeDelayMs` at a time. */
  readonly #delayed = new Map<number, DelayBucket>();
  /** Batches built since the last pass, by first frame: connections that get the same run of frames share one encoding. */
  readonly #built = new Map<EncodedFrame, EncodedBatch[]>();

  /**
   * Writes `frame` to the outbox's connection: at once when nothing waits
   * and the connection got no frame in this turn or the previous one, else
   * queued. `delayMs` is the frame's
   * namespace `writeDelayMs` (0 for none). `mayCut` false: this frame does
   * not make the connection slow (a conflated publication).
   */
  write(outbox: Outbox, frame: EncodedFrame, positionsChanged: boolean, delayMs: number, mayCut = true): void {
    if (outbox.closed) return;
    const writer = outbox.writer;
    const quiet = outbox.turn < this.#turn - 1;
    outbox.turn = this.#turn;
    if (delayMs === 0 && quiet && outbox.frames.length === 0) {
      this.#arm();
      const transport = writer.transport;
      transport.write(frame, positionsChanged && transport.tracksPositions ? writer.positionVector() : undefined);
      if (mayCut) writer.checkBacklog(0);
      return;
    }
    const size = frame.text.length;
    if (outbox.frames.length > 0 && outbox.bytes + size > MAX_BATCH_BYTES) this.flush(outbox);
    outbox.frames.push(frame);
    outbox.bytes += size;
    if (positionsChanged) outbox.positionsChanged = true;
    if (mayCut) outbox.mayCut = true;
    if (outbox.frames.length >= MAX_BATCH_FRAMES) {
      this.#arm();
      this.flush(outbox);
      return;
    }
    if (delayMs === 0) {
      if (!outbox.due) {
        outbox.due = true;
        this.#due.push(outbox);
        this.#arm();
      }
    } else {
      this.#delay(outbox, delayMs);
    }
    if (mayCut) writer.checkBacklog(outbox.bytes);
  }

  /** Hands everything queued in `outbox` to its transport now, as one batch. */
  flush(outbox: Outbox): void {
    const frames = outbox.frames;
    outbox.flushAt = 0;
    if (frames.length === 0 || outbox.closed) return;
    outbox.frames = [];
    outbox.bytes = 0;
    const writer = outbox.writer;
    const transport = writer.transport;
    const positions = outbox.positionsChanged && transport.tracksPositions ? writer.positionVector() : undefined;
    outbox.positionsChanged = false;
    const mayCut = outbox.mayCut;
    outbox.mayCut = false;
    if (frames.length === 1) transport.write(frames[0]!, positions);
    else transport.writeMany(this.#batch(frames), positions);
    if (mayCut) writer.checkBacklog(0);
  }

  /** The connection is closing: writes what is queued first when `flush`, then drops the outbox. */
  close(outbox: Outbox, flush: boolean): void {
    if (flush) this.flush(outbox);
    outbox.closed = true;
    outbox.frames = [];
    outbox.bytes = 0;
  }

  #batch(frames: EncodedFrame[]): EncodedBatch {
    const first = frames[0]!;
    const candidates = this.#built.get(first);
    if (candidates !== undefined) {
      for (const batch of candidates) if (batch.holds(frames)) return batch;
    }
    const batch = new EncodedBatch(frames);
    if (candidates === undefined) this.#built.set(first, [batch]);
    else if (candidates.length < MAX_CANDIDATES) candidates.push(batch);
    return batch;
  }

  #arm(): void {
    if (this.#armed) return;
    this.#armed = true;
    setImmediate(this.#endTurn);
  }

  readonly #endTurn = (): void => {
    this.#armed = false;
    this.#turn++;
    const due = this.#due;
    if (due.length > 0) {
      this.#due = [];
      for (const outbox of due) {
        outbox.due = false;
        this.flush(outbox);
      }
    }
    this.#built.clear();
  };

  #delay(outbox: Outbox, delayMs: number): void {
    let bucket = this.#delayed.get(delayMs);
    if (bucket === undefined) {
      const created: DelayBucket = { at: Date.now() + delayMs, outboxes: [] };
      bucket = created;
      this.#delayed.set(delayMs, created);
      const timer = setTimeout(() => {
        this.#delayed.delete(delayMs);
        for (const waiting of created.outboxes) this.flush(waiting);
        this.#built.clear();
      }, delayMs);
      timer.unref();
    }
    // Already flushed by a bucket that fires no later: nothing to add.
    if (outbox.flushAt !== 0 && outbox.flushAt <= bucket.at) return;
    outbox.flushAt = bucket.at;
    bucket.outboxes.push(outbox);
  }
}
