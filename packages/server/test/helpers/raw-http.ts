/**
 * One HTTP/1.1 exchange over a raw socket, for inputs no HTTP client would
 * send: any header bytes, a request written in tiny chunks. Reads the answer
 * head and as much body as the caller waits for.
 */
import net from 'node:net';
import { waitUntil } from './rt-util.ts';

export class RawHttp {
  readonly socket: net.Socket;
  #buffer: Buffer = Buffer.alloc(0);
  ended = false;
  error: Error | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      // keep at most 1 MiB: enough for any answer a test looks at
      if (this.#buffer.length < 1 << 20) this.#buffer = Buffer.concat([this.#buffer, chunk]);
    });
    socket.on('end', () => {
      this.ended = true;
    });
    socket.on('close', () => {
      this.ended = true;
    });
    socket.on('error', (error) => {
      this.error = error;
    });
  }

  static async connect(port: number): Promise<RawHttp> {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawHttp(socket);
  }

  /**
   * Writes `data` in chunks of 1..maxChunk bytes (sizes from `random`),
   * letting the event loop run between writes so the server sees them apart.
   * Stops early when the server has closed the connection.
   */
  async write(data: Buffer, random: () => number, maxChunk = 32): Promise<void> {
    for (let at = 0; at < data.length && !this.ended && !this.socket.destroyed; ) {
      const size = 1 + Math.floor(random() * maxChunk);
      this.socket.write(data.subarray(at, at + size));
      at += size;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  get text(): string {
    return this.#buffer.toString('utf8');
  }

  /** The status code, once the status line arrived. */
  get status(): number | undefined {
    const match = /^HTTP\/1\.1 (\d{3}) /.exec(this.#buffer.subarray(0, 64).toString('latin1'));
    return match === null ? undefined : Number(match[1]);
  }

  /** The body so far (after the head), de-chunked when chunked. */
  get body(): string {
    const text = this.#buffer.toString('latin1');
    const end = text.indexOf('\r\n\r\n');
    if (end === -1) return '';
    const head = text.slice(0, end);
    const raw = this.#buffer.subarray(Buffer.byteLength(head, 'latin1') + 4);
    if (!/\r\ntransfer-encoding:\s*chunked/i.test(head)) return raw.toString('utf8');
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = raw.indexOf('\r\n', at);
      if (lineEnd === -1) break;
      const size = parseInt(raw.subarray(at, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size) || size === 0 || lineEnd + 2 + size > raw.length) break;
      parts.push(raw.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    return Buffer.concat(parts).toString('utf8');
  }

  /** Complete: the server ended the connection, or a Content-Length body is all here. */
  get complete(): boolean {
    if (this.ended) return true;
    const text = this.#buffer.toString('latin1');
    const end = text.indexOf('\r\n\r\n');
    if (end === -1) return false;
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, end));
    return length !== null && this.#buffer.length - (end + 4) >= Number(length[1]);
  }

  /** Waits until `condition` holds (bounded; a hang fails, slowness does not). */
  async until(condition: (exchange: RawHttp) => boolean, label: string, timeoutMs = 15000): Promise<void> {
    await waitUntil(() => condition(this), { timeoutMs, label, describe: () => `got: ${this.text.slice(0, 300)}` });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Builds a request: `head` lines (without the final blank line) and an optional body. */
export function request(lines: readonly (string | Buffer)[], body?: Buffer | string): Buffer {
  const parts: Buffer[] = [];
  for (const line of lines) parts.push(typeof line === 'string' ? Buffer.from(line, 'latin1') : line, Buffer.from('\r\n'));
  const data = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  if (data !== undefined) parts.push(Buffer.from(`Content-Length: ${data.length}\r\n`));
  parts.push(Buffer.from('\r\n'));
  if (data !== undefined) parts.push(data);
  return Buffer.concat(parts);
}

/** HTTP/1.1 answers read off one connection (`text`), split by their Content-Length, each head without its Date line. */
export function answers(text: string): { head: string; body: string }[] {
  const out: { head: string; body: string }[] = [];
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end === -1) break;
    const head = text.slice(at, end);
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? '0');
    out.push({ head: head.replace(/\r\nDate: [^\r]*/, ''), body: text.slice(end + 4, end + 4 + length) });
    at = end + 4 + length;
  }
  return out;
}

/**
 * One connection's exchange: `parts` written one by one (30 ms apart: a
 * single Buffer is one write), then the connection's text once `count`
 * answers came or it ended, and 50 ms more (nothing else may come).
 */
export async function exchange(port: number, parts: Buffer | readonly Buffer[], count: number): Promise<{ text: string; ended: boolean }> {
  const raw = await RawHttp.connect(port);
  for (const [i, part] of (Buffer.isBuffer(parts) ? [parts] : parts).entries()) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 30));
    raw.socket.write(part);
  }
  await raw.until((r) => r.ended || answers(r.text).length >= count, `${count} answers`);
  await new Promise((resolve) => setTimeout(resolve, 50));
  const result = { text: raw.text, ended: raw.ended };
  raw.destroy();
  return result;
}
