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

/** A frame of a `length`-byte text payload with its header written, the payload still to write. */
function frameWithHeader(length: number): Buffer {
  const headerLength = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerLength + length);
  frame[0] = 0x81;
  if (length < 126) {
    frame[1] = length;
  } else if (length < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  return frame;
}
