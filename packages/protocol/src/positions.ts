/**
 * Position vectors: the SSE `Last-Event-ID` and the long-poll `cursor`.
 *
 * A vector lists, for each recoverable subscription of a connection, the
 * channel's stream epoch and the offset of the last publication the client
 * has seen:
 *
 *   vector = entry *( " " entry )
 *   entry  = channel "|" epoch "|" offset
 *   epoch  = 1*32 ( A-Z / a-z / 0-9 / "_" / "-" )
 *   offset = 1*16 DIGIT            ; ≤ Number.MAX_SAFE_INTEGER
 *
 * Channel names never contain " " or "|" (see channel-name.ts), so no escaping
 * is needed. Decoding is strict, bounded and never throws.
 */
import { parseChannel, isChannelNameError } from './channel-name.ts';

export interface StreamPosition {
  readonly epoch: string;
  readonly offset: number;
}

export const MAX_VECTOR_ENTRIES = 128;
export const MAX_VECTOR_LENGTH = 8192;

const epochPattern = /^[A-Za-z0-9_-]{1,32}$/;
const offsetPattern = /^[0-9]{1,16}$/;

export function isValidEpoch(value: unknown): value is string {
  return typeof value === 'string' && epochPattern.test(value);
}

export function isValidOffset(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export function encodePositionEntry(channel: string, epoch: string, offset: number): string {
  return channel + '|' + epoch + '|' + offset;
}

export function encodePositions(positions: Iterable<readonly [string, StreamPosition]>): string {
  let out = '';
  for (const [channel, position] of positions) {
    if (out.length > 0) out += ' ';
    out += encodePositionEntry(channel, position.epoch, position.offset);
  }
  return out;
}

/**
 * Decodes a vector. Returns `null` for anything malformed (the caller then
 * treats the client as having no position: subscriptions start fresh and say
 * `recovered: false`). An empty string is a valid, empty vector.
 */
export function decodePositions(
  text: unknown,
  maxChannelBytes?: number,
): Map<string, StreamPosition> | null {
  if (typeof text !== 'string' || text.length > MAX_VECTOR_LENGTH) return null;
  const result = new Map<string, StreamPosition>();
  if (text.length === 0) return result;
  const entries = text.split(' ', MAX_VECTOR_ENTRIES + 1);
  if (entries.length > MAX_VECTOR_ENTRIES) return null;
  for (const entry of entries) {
    const parts = entry.split('|');
    if (parts.length !== 3) return null;
    const [channel, epoch, offsetText] = parts as [string, string, string];
    if (isChannelNameError(parseChannel(channel, maxChannelBytes))) return null;
    if (!epochPattern.test(epoch) || !offsetPattern.test(offsetText)) return null;
    const offset = Number(offsetText);
    if (!Number.isSafeInteger(offset)) return null;
    if (result.has(channel)) return null;
    result.set(channel, { epoch, offset });
  }
  return result;
}
