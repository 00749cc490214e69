/**
 * WebSocket frames built by hand for the security tests (RFC 6455 §5.2):
 * any FIN/RSV/opcode/mask combination, lengths that lie, payloads split
 * across TCP writes. Rides on the hand-made upgrade of rt-raw.ts.
 */
import { randomBytes } from 'node:crypto';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import type net from 'node:net';
import { RawWebSocket } from './rt-raw.ts';
import { waitUntil } from './rt-util.ts';

export { Opcode } from './rt-raw.ts';

export interface FrameSpec {
  readonly opcode: number;
  readonly payload?: Buffer | string;
  /** FIN bit; default true. */
  readonly fin?: boolean;
  /** RSV1..3 as a 3-bit number (4 = RSV1). */
  readonly rsv?: number;
  /** Client frames must be masked; default true. */
  readonly masked?: boolean;
  /** Length to put in the header instead of the payload's (a lie). */
  readonly claimedLength?: number;
}

export function frame(spec: FrameSpec): Buffer {
  const data = spec.payload === undefined ? Buffer.alloc(0) : typeof spec.payload === 'string' ? Buffer.from(spec.payload, 'utf8') : spec.payload;
  const length = spec.claimedLength ?? data.length;
  const masked = spec.masked ?? true;
  let header: Buffer;
  if (length < 126) {
    header = Buffer.alloc(2);
    header[1] = length;
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  header[0] = ((spec.fin ?? true) ? 0x80 : 0) | (((spec.rsv ?? 0) & 7) << 4) | (spec.opcode & 0x0f);
  if (!masked) return Buffer.concat([header, data]);
  header[1] = (header[1] as number) | 0x80;
  const mask = randomBytes(4);
  const body = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) body[i] = (data[i] as number) ^ (mask[i & 3] as number);
  return Buffer.concat([header, mask, body]);
}

/** One text message as `count` frames (a text frame, then continuations, the last with FIN). */
export function fragmented(text: string | Buffer, count: number): Buffer[] {
  const data = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  const frames: Buffer[] = [];
  const size = Math.ceil(data.length / count);
  for (let i = 0; i < count; i++) {
    const part = data.subarray(Math.min(i * size, data.length), Math.min((i + 1) * size, data.length));
    frames.push(frame({ opcode: i === 0 ? 0x1 : 0x0, payload: part, fin: i === count - 1 }));
  }
  return frames;
}

/** Writes `data` in chunks of 1..maxChunk bytes (sizes from `random`), each its own write. */
export async function writeChunked(socket: net.Socket, data: Buffer, random: () => number, maxChunk = 32): Promise<void> {
  for (let at = 0; at < data.length; ) {
    const size = 1 + Math.floor(random() * maxChunk);
    const ok = socket.write(data.subarray(at, at + size));
    at += size;
    if (!ok) await new Promise((resolve) => socket.once('drain', resolve));
  }
}

/** Opens a raw WebSocket (hand-made upgrade) to a Herald port. */
export function openRaw(port: number): Promise<RawWebSocket> {
  return RawWebSocket.connect(port);
}

/**
 * The close code the server sent, once it did (or 'no close frame' when the
 * socket closed without one). Bounded wait; not a speed assertion.
 */
export async function closeCodeOf(raw: RawWebSocket, timeoutMs = 10000): Promise<number | 'no close frame'> {
  return waitUntil(() => raw.parser.closeCode() ?? (raw.closed ? ('no close frame' as const) : undefined), {
    timeoutMs,
    label: 'a close frame',
    describe: () => `frames: ${raw.parser.frames.map((f) => f.opcode).join(',')} closed=${raw.closed}`,
  });
}

let gcFunction: (() => void) | undefined;

/** Forces a full garbage collection (no --expose-gc flag needed). */
export function collectGarbage(): void {
  if (gcFunction === undefined) {
    setFlagsFromString('--expose-gc');
    gcFunction = runInNewContext('gc') as () => void;
  }
  gcFunction();
  gcFunction();
}

/** Heap plus array buffers of this process after a full GC, in bytes. The server runs in this process. */
export function retainedBytes(): number {
  collectGarbage();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** Server frames in `bytes`, read off a raw socket after an upgrade answer's head (unmasked; complete ones only; lengths below 65536; payload as text). */
export function serverFrames(bytes: Buffer): { opcode: number; payload: string }[] {
  const frames: { opcode: number; payload: string }[] = [];
  let at = 0;
  while (at + 2 <= bytes.length) {
    let length = bytes[at + 1]! & 0x7f;
    let start = at + 2;
    if (length === 126) {
      if (at + 4 > bytes.length) break;
      length = bytes.readUInt16BE(at + 2);
      start = at + 4;
    }
    if (start + length > bytes.length) break;
    frames.push({ opcode: bytes[at]! & 0x0f, payload: bytes.subarray(start, start + length).toString('utf8') });
    at = start + length;
  }
  return frames;
}
