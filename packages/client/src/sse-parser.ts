/**
 * An incremental parser for `text/event-stream` (the WHATWG "event stream
 * interpretation", the parts Herald uses): `data:` lines joined by "\n",
 * `id:`, comments, and CR, LF or CRLF line ends split anywhere across
 * chunks. `event:` and `retry:` are read and ignored.
 */
export interface SseEvent {
  readonly data: string;
  readonly id: string | undefined;
}

export class SseParser {
  #buffer = '';
  #data: string[] = [];
  #id: string | undefined;
  #sawCr = false;

  /** Feeds decoded text; returns the events completed by it. */
  push(chunk: string): SseEvent[] {
    const events: SseEvent[] = [];
    let text = chunk;
    if (this.#sawCr && text.startsWith('\n')) text = text.slice(1);
    this.#sawCr = false;
    let start = 0;
    const buffer = this.#buffer + text;
    const offset = this.#buffer.length;
    this.#buffer = '';
    for (let i = offset; i < buffer.length; i++) {
      const c = buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.#line(buffer.slice(start, i), events);
      if (c === 13) {
        if (i + 1 < buffer.length) {
          if (buffer.charCodeAt(i + 1) === 10) i++;
        } else {
          this.#sawCr = true;
        }
      }
      start = i + 1;
    }
    this.#buffer = buffer.slice(start);
    return events;
  }

  #line(line: string, events: SseEvent[]): void {
    if (line.length === 0) {
      if (this.#data.length > 0) events.push({ data: this.#data.join('\n'), id: this.#id });
      this.#data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.#id = value;
  }
}
