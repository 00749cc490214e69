/**
 * A server frame serialized once and shared by every connection it goes to.
 * Long polling uses `text`, SSE `sseBytes` (or `sseText` behind its own `id:`
 * line), WebSocket the whole frame `wsFrame`: each encoded on first use and
 * reused for every other connection.
 */
import { encodeServerTextFrame, encodeServerTextFrameOf } from '../util/websocket-frame.ts';

export class EncodedFrame {
  readonly text: string;
  #bytes: Buffer | undefined;
  #sse: Buffer | undefined;
  #sseText: string | undefined;
  #ws: Buffer | undefined;

  constructor(text: string) {
    this.text = text;
  }

  get bytes(): Buffer {
    this.#bytes ??= Buffer.from(this.text, 'utf8');
    return this.#bytes;
  }

  /** The frame as an SSE `data:` line plus the blank line ending the event. */
  get sseText(): string {
    this.#sseText ??= 'data: ' + this.text + '\n\n';
    return this.#sseText;
  }

  /** `sseText` as UTF-8 bytes. */
  get sseBytes(): Buffer {
    this.#sse ??= Buffer.from(this.sseText, 'utf8');
    return this.#sse;
  }

  /** The whole WebSocket frame (header and payload), for every socket alike. */
  get wsFrame(): Buffer {
    // Without `bytes` yet (WebSocket subscribers only), the text is encoded into the frame itself.
    this.#ws ??= this.#bytes === undefined ? encodeServerTextFrameOf(this.text) : encodeServerTextFrame(this.#bytes);
    return this.#ws;
  }

  get byteLength(): number {
    return this.#bytes?.length ?? Buffer.byteLength(this.text);
  }
}
