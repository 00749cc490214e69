/**
 * Several server frames that go to a connection as one batch (docs/protocol.md,
 * "Batched frames"): the frames' JSON texts joined by "\n", as one WebSocket
 * text message or one SSE event with a `data:` line per frame. Like
 * EncodedFrame, each encoding is built on first use and shared by every
 * connection that receives the same run of frames (the fan-out of a burst of
 * publications to one channel's subscribers).
 */
import { encodeServerTextFrame } from '../util/websocket-frame.ts';
import type { EncodedFrame } from './encoded-frame.ts';

/**
 * A frame's JSON text on one line. JSON text holds a raw line break only as
 * whitespace between tokens (never inside a string), so replacing it with a
 * space keeps the value: the line breaks of a batch are then only those
 * between its frames.
 */
export function oneLine(text: string): string {
  return text.includes('\n') || text.includes('\r') ? text.replace(/[\r\n]/g, ' ') : text;
}

export class EncodedBatch {
  readonly frames: readonly EncodedFrame[];
  #text: string | undefined;
  #sseText: string | undefined;
  #sse: Buffer | undefined;
  #ws: Buffer | undefined;

  constructor(frames: readonly EncodedFrame[]) {
    this.frames = frames;
  }

  /** The frames' texts joined by "\n": a WebSocket batch message's payload, and the data of an SSE batch event. */
  get text(): string {
    if (this.#text === undefined) {
      let text = '';
      for (const frame of this.frames) text += (text === '' ? '' : '\n') + oneLine(frame.text);
      this.#text = text;
    }
    return this.#text;
  }

  /** One SSE event: a `data:` line per frame, then the blank line ending the event. */
  get sseText(): string {
    if (this.#sseText === undefined) {
      let text = '';
      for (const frame of this.frames) text += 'data: ' + oneLine(frame.text) + '\n';
      this.#sseText = text + '\n';
    }
    return this.#sseText;
  }

  /** `sseText` as UTF-8 bytes. */
  get sseBytes(): Buffer {
    this.#sse ??= Buffer.from(this.sseText, 'utf8');
    return this.#sse;
  }

  /** The whole WebSocket frame (header and payload): one text message, the same for every socket. */
  get wsFrame(): Buffer {
    this.#ws ??= encodeServerTextFrame(Buffer.from(this.text, 'utf8'));
    return this.#ws;
  }

  /** True when `frames` are the same frames, in the same order, as this batch's. */
  holds(frames: readonly EncodedFrame[]): boolean {
    const own = this.frames;
    if (own.length !== frames.length) return false;
    for (let i = 0; i < own.length; i++) if (own[i] !== frames[i]) return false;
    return true;
  }
}
