/**
 * Raw-socket clients for tests that need control below the libraries: a
 * hand-made WebSocket handshake with a tiny masking framer (RFC 6455), and a
 * raw SSE GET. Used to build consumers that stop reading (slow consumers).
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { SseParser, type Frame, type SseEvent } from './rt-clients.ts';
import { waitUntil } from './rt-util.ts';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const Opcode = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

/** Encodes one final client frame; client frames are always masked. */
export function encodeClientFrame(opcode: number, payload: Buffer | string): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const mask = randomBytes(4);
  let header: Buffer;
  if (data.length < 126) {
    header = Buffer.alloc(2);
    header[1] = 0x80 | data.length;
  } else if (data.length < 65536) {
    header = Buffer.alloc(4);
    header[1] = 0x80 | 126;
    header.writeUInt16BE(data.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(data.length), 2);
  }
  header[0] = 0x80 | (opcode & 0x0f);
  const masked = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) masked[i] = (data[i] as number) ^ (mask[i & 3] as number);
  return Buffer.concat([header, mask, masked]);
}

export interface ServerWsFrame {
  readonly fin: boolean;
  readonly opcode: number;
  readonly payload: Buffer;
}

/** Incremental parser for server→client frames (unmasked). */
export class ServerFrameParser {
  private buffer: Buffer = Buffer.alloc(0);
  readonly frames: ServerWsFrame[] = [];
  /** Set when the server sent a masked frame or something unparsable. */
  violation: string | undefined;

  feed(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const b0 = this.buffer[0] as number;
      const b1 = this.buffer[1] as number;
      if (b1 & 0x80) {
        this.violation = 'server frame is masked';
      }
      let length = b1 & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        const big = this.buffer.readBigUInt64BE(2);
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
          this.violation = 'frame length too large';
          return;
        }
        length = Number(big);
        offset = 10;
      }
      if (b1 & 0x80) offset += 4;
      if (this.buffer.length < offset + length) return;
      const payload = this.buffer.subarray(offset, offset + length);
      this.frames.push({ fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload: Buffer.from(payload) });
      this.buffer = this.buffer.subarray(offset + length);
    }
  }

  /** Text messages (reassembling continuation frames) parsed as JSON where possible. */
  messages(): Frame[] {
    const out: Frame[] = [];
    let parts: Buffer[] | undefined;
    for (const frame of this.frames) {
      if (frame.opcode === Opcode.text) parts = [frame.payload];
      else if (frame.opcode === Opcode.continuation && parts) parts.push(frame.payload);
      else continue;
      if (frame.fin && parts) {
        const text = Buffer.concat(parts).toString('utf8');
        parts = undefined;
        try {
          out.push(JSON.parse(text) as Frame);
        } catch {
          out.push({ unparsable: text.slice(0, 200) });
        }
      }
    }
    return out;
  }

  /** The close frame's code, when one arrived. */
  closeCode(): number | undefined {
    const close = this.frames.find((f) => f.opcode === Opcode.close);
    if (!close) return undefined;
    return close.payload.length >= 2 ? close.payload.readUInt16BE(0) : 1005;
  }
}

/** Common state of a raw socket test client. */
abstract class RawClient {
  readonly socket: net.Socket;
  ended = false;
  closed = false;
  error: Error | undefined;
  bytesRead = 0;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('end', () => {
      this.ended = true;
    });
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('error', (error) => {
      this.error = error;
    });
  }

  /** Stops reading: the kernel buffers fill and the server must apply backpressure. */
  stopReading(): void {
    this.socket.pause();
  }

  /** Reads again (to drain what the server had sent and see how it ended). */
  resumeReading(): void {
    this.socket.resume();
  }

  waitClosed(timeoutMs = 20000): Promise<void> {
    return waitUntil(() => this.closed, { timeoutMs, label: 'raw socket close' }).then(() => undefined);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export class RawWebSocket extends RawClient {
  readonly parser = new ServerFrameParser();
  private nextId = 1;

  private constructor(socket: net.Socket, rest: Buffer) {
    super(socket);
    socket.on('data', (chunk: Buffer) => {
      this.bytesRead += chunk.length;
      this.parser.feed(chunk);
    });
    if (rest.length > 0) this.parser.feed(rest);
  }

  /** Connects and performs the HTTP upgrade by hand; verifies Sec-WebSocket-Accept. */
  static async connect(port: number, path = '/connection/websocket', host = '127.0.0.1'): Promise<RawWebSocket> {
    const socket = net.connect({ port, host });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const key = randomBytes(16).toString('base64');
    socket.write(
      [
        `GET ${path} HTTP/1.1`,
        `Host: ${host}:${port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`,
        'Sec-WebSocket-Version: 13',
        '',
        '',
      ].join('\r\n'),
    );
    const { head, rest } = await readHead(socket);
    const statusLine = head.split('\r\n')[0] ?? '';
    if (!/^HTTP\/1\.1 101 /.test(statusLine)) {
      socket.destroy();
      throw new Error(`upgrade refused: ${statusLine}`);
    }
    const expected = createHash('sha1').update(key + WS_GUID).digest('base64');
    const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head)?.[1];
    if (accept !== expected) {
      socket.destroy();
      throw new Error(`bad Sec-WebSocket-Accept ${accept} (expected ${expected})`);
    }
    return new RawWebSocket(socket, rest);
  }

  sendText(text: string): void {
    this.socket.write(encodeClientFrame(Opcode.text, text));
  }

  /** Sends a command; returns its id. */
  send(method: string, params?: unknown): number {
    const id = this.nextId++;
    const command: Frame = { id, method };
    if (params !== undefined) command['params'] = params;
    this.sendText(JSON.stringify(command));
    return id;
  }

  async call(method: string, params?: unknown, timeoutMs = 10000): Promise<Frame> {
    const id = this.send(method, params);
    const reply = await waitUntil(() => this.parser.messages().find((m) => m['id'] === id), {
      timeoutMs,
      label: `raw reply to ${method}`,
      describe: () => `close=${this.parser.closeCode()} ended=${this.ended}`,
    });
    if (reply['error']) throw new Error(`${method} failed: ${JSON.stringify(reply['error'])}`);
    return reply['result'] as Frame;
  }
}

export class RawSse extends RawClient {
  readonly events: SseEvent[] = [];
  statusLine = '';
  headText = '';
  /** True once the response body ended (last chunk, or end of a non-chunked body). */
  bodyEnded = false;
  private readonly parser: SseParser;
  private chunked = false;
  private chunkBuffer: Buffer = Buffer.alloc(0);
  private readonly decoder = new TextDecoder();

  private constructor(socket: net.Socket, head: string, rest: Buffer) {
    super(socket);
    this.headText = head;
    this.statusLine = head.split('\r\n')[0] ?? '';
    this.chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head);
    this.parser = new SseParser((event) => this.events.push(event));
    socket.on('data', (chunk: Buffer) => {
      this.bytesRead += chunk.length;
      this.body(chunk);
    });
    socket.on('end', () => {
      this.bodyEnded = true;
    });
    if (rest.length > 0) this.body(rest);
  }

  /** Sends the SSE GET by hand and reads the response head. */
  static async connect(port: number, pathAndQuery: string, headers: Record<string, string> = {}, host = '127.0.0.1'): Promise<RawSse> {
    const socket = net.connect({ port, host });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const lines = [`GET ${pathAndQuery} HTTP/1.1`, `Host: ${host}:${port}`, 'Accept: text/event-stream'];
    for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
    socket.write(lines.join('\r\n') + '\r\n\r\n');
    const { head, rest } = await readHead(socket);
    return new RawSse(socket, head, rest);
  }

  get frames(): Frame[] {
    return this.events.flatMap((e) => (e.frame ? [e.frame] : []));
  }

  private body(chunk: Buffer): void {
    if (!this.chunked) {
      this.parser.feed(this.decoder.decode(chunk, { stream: true }));
      return;
    }
    this.chunkBuffer = this.chunkBuffer.length === 0 ? chunk : Buffer.concat([this.chunkBuffer, chunk]);
    for (;;) {
      const lineEnd = this.chunkBuffer.indexOf('\r\n');
      if (lineEnd === -1) return;
      const size = parseInt(this.chunkBuffer.subarray(0, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size)) return;
      if (size === 0) {
        this.chunkBuffer = Buffer.alloc(0);
        this.bodyEnded = true;
        return;
      }
      if (this.chunkBuffer.length < lineEnd + 2 + size + 2) return;
      const data = this.chunkBuffer.subarray(lineEnd + 2, lineEnd + 2 + size);
      this.parser.feed(this.decoder.decode(data, { stream: true }));
      this.chunkBuffer = this.chunkBuffer.subarray(lineEnd + 2 + size + 2);
    }
  }
}

/** Reads from a socket until the end of the HTTP response head. */
function readHead(socket: net.Socket): Promise<{ head: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
      // The caller attaches its own 'data' listener in the same microtask
      // chain, before the next chunk can be emitted.
      const rest = buffer.subarray(end + 4);
      resolve({ head: buffer.subarray(0, end).toString('latin1'), rest: Buffer.from(rest) });
    };
    const onError = (error: Error) => reject(error);
    const onEnd = () => reject(new Error(`connection ended before the response head: ${buffer.toString('latin1').slice(0, 200)}`));
    socket.on('data', onData);
    socket.once('error', onError);
    socket.once('end', onEnd);
  });
}
