/**
 * RFC 6455 framing of one server-to-client text message: FIN, opcode 1, no
 * mask (servers never mask), no extension bits. A publication's frame is the
 * same for every subscriber, so it is built once and written as is to each
 * socket (see EncodedFrame.wsFrame): one write per delivery instead of a
 * header and a payload write per subscriber.
 */
export function encodeServerTextFrame(payload: Buffer): Buffer {
  const length = payload.length;
  const frame = frameWithHeader(length);
  payload.copy(frame, frame.length - length);
  return frame;
}

/** `encodeServerTextFrame` of `text`'s UTF-8 bytes, encoded straight into the frame (no payload buffer of its own). */
export function encodeServerTextFrameOf(text: string): Buffer {
  const length = Buffer.byteLength(text, 'utf8');
  const frame = frameWithHeader(length);
  frame.write(text, frame.length - length, length, 'utf8');
  return frame;
}

/**
 * Several messages in one buffer, in order: a string is framed as a text
 * message (its UTF-8 bytes), a Buffer is taken as an already framed message
 * (EncodedFrame.wsFrame) and copied as is. `prefix` (ASCII, e.g. the 101
 * answer of the handshake) goes before them, unframed.
 */
export function encodeServerTextFrames(parts: readonly (string | Buffer)[], prefix = ''): Buffer {
  const lengths: number[] = [];
  let total = prefix.length;
  for (const part of parts) {
    if (typeof part === 'string') {
      const length = Buffer.byteLength(part, 'utf8');
      lengths.push(length);
      total += headerLengthOf(length) + length;
    } else total += part.length;
  }
  const out = Buffer.allocUnsafe(total);
  let at = prefix === '' ? 0 : out.write(prefix, 0, 'latin1');
  let next = 0;
  for (const part of parts) {
    if (typeof part === 'string') {
      const length = lengths[next++]!;
      at = writeHeader(out, at, length);
      at += out.write(part, at, length, 'utf8');
    } else at += part.copy(out, at);
  }
  return out;
}

function headerLengthOf(length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/** Writes the header of a `length`-byte text message at `at`; returns where its payload starts. */
function writeHeader(frame: Buffer, at: number, length: number): number {
  frame[at] = 0x81;
  if (length < 126) {
    frame[at + 1] = length;
    return at + 2;
  }
  if (length < 65536) {
    frame[at + 1] = 126;
    frame.writeUInt16BE(length, at + 2);
    return at + 4;
  }
  frame[at + 1] = 127;
  frame.writeUInt32BE(Math.floor(length / 2 ** 32), at + 2);
  frame.writeUInt32BE(length >>> 0, at + 6);
  return at + 10;
}

/** A frame of a `length`-byte text payload with its header written, the payload still to write. */
function frameWithHeader(length: number): Buffer {
  const frame = Buffer.allocUnsafe(headerLengthOf(length) + length);
  writeHeader(frame, 0, length);
  return frame;
}
