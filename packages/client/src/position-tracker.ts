/**
 * One subscription's position in its channel's stream: the epoch from the
 * subscribe result and the offset of the last publication delivered to the
 * application. It decides, for each publication, whether to deliver it
 * (the next offset), drop it (a duplicate, already delivered) or resubscribe
 * (a gap: never skip silently). A channel without history has no positions:
 * everything is delivered as it comes. On a conflated channel a publication
 * may skip offsets on purpose: it then names the offset delivered before it
 * (`prev`), and follows that one as if it were the next.
 */
import type { StreamPosition } from '@herald/protocol';

export type OffsetVerdict = 'deliver' | 'duplicate' | 'gap';

export interface SubscribeOutcome {
  readonly recoverable: boolean;
  readonly epoch: string;
  /** The stream's newest offset at subscribe time. */
  readonly offset: number;
  readonly recovered: boolean;
}

export class PositionTracker {
  #epoch: string | undefined;
  #offset = 0;
  #recoverable = false;

  /** `since`: a position the application already has (e.g. from history). */
  constructor(since?: StreamPosition) {
    if (since !== undefined) {
      this.#epoch = since.epoch;
      this.#offset = since.offset;
      this.#recoverable = true;
    }
  }

  /** The last delivered position, or undefined when there is none (not subscribed yet, or no history). */
  get position(): StreamPosition | undefined {
    if (!this.#recoverable || this.#epoch === undefined) return undefined;
    return { epoch: this.#epoch, offset: this.#offset };
  }

  /** Subscribe params: ask to recover when a position is known. */
  recoverParams(): { recover: true; epoch: string; offset: number } | Record<string, never> {
    const position = this.position;
    return position === undefined ? {} : { recover: true, epoch: position.epoch, offset: position.offset };
  }

  /**
   * Applies a subscribe result. Recovered: keep our offset, the missed
   * publications follow. Otherwise the subscription is live from the
   * stream's current position.
   */
  onSubscribed(result: SubscribeOutcome): void {
    if (!result.recoverable) {
      this.#recoverable = false;
      this.#epoch = undefined;
      this.#offset = 0;
      return;
    }
    const keep = result.recovered && this.#recoverable && this.#epoch === result.epoch && this.#offset <= result.offset;
    this.#recoverable = true;
    if (!keep) {
      this.#epoch = result.epoch;
      this.#offset = result.offset;
    }
  }

  /**
   * Classifies a publication's offset, advancing the position when it is
   * delivered. `prev`: the publication's own word that it follows that offset
   * (conflation); accepted only when it is the offset delivered last.
   */
  onPublication(offset: number, prev?: number): OffsetVerdict {
    if (!this.#recoverable) return 'deliver';
    if (offset <= this.#offset) return 'duplicate';
    if (offset !== this.#offset + 1 && prev !== this.#offset) return 'gap';
    this.#offset = offset;
    return 'deliver';
  }
}
