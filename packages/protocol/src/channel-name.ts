/**
 * Channel-name grammar (documented in docs/protocol.md):
 *
 *   channel   = [ namespace ":" ] name
 *   namespace = 1*64 ( a-z / 0-9 / "_" / "-" )
 *   name      = 1* ( A-Z / a-z / 0-9 / "_" / "-" / "." / ":" / "@" / "/" / "=" / "," / ";" )
 *
 * At most `maxBytes` bytes in all (default 255). Only the first ":" splits:
 * `chat:room:1` is name `room:1` in namespace `chat`. A channel without ":"
 * belongs to the default namespace. Everything else (spaces, control bytes,
 * NUL, `|`, non-ASCII) is rejected, so a channel name never needs escaping in
 * an SSE event id, a log line or a metric label. `;` is there because Pusher
 * channel names may hold it (docs/pusher.md): every Pusher name is a native name.
 */

export const DEFAULT_MAX_CHANNEL_BYTES = 255;

const namePattern = /^[A-Za-z0-9_\-.:@/=,;]+$/;
const namespacePattern = /^[a-z0-9_-]{1,64}$/;

export interface ParsedChannel {
  readonly channel: string;
  /** Namespace name; `''` is the default namespace. */
  readonly namespace: string;
  readonly name: string;
}

export type ChannelNameError = 'empty' | 'too_long' | 'bad_character' | 'bad_namespace';

export function parseChannel(
  value: unknown,
  maxBytes: number = DEFAULT_MAX_CHANNEL_BYTES,
): ParsedChannel | ChannelNameError {
  if (typeof value !== 'string' || value.length === 0) return 'empty';
  // The grammar is ASCII-only, so length in UTF-16 units equals bytes for
  // every accepted name; check length first to bound the regex work.
  if (value.length > maxBytes) return 'too_long';
  if (!namePattern.test(value)) return 'bad_character';
  const colon = value.indexOf(':');
  if (colon === -1) return { channel: value, namespace: '', name: value };
  const namespace = value.slice(0, colon);
  const name = value.slice(colon + 1);
  if (!namespacePattern.test(namespace)) return 'bad_namespace';
  if (name.length === 0) return 'empty';
  return { channel: value, namespace, name };
}

/** The rule a name broke, in words (the `detail` of `invalid_channel`). */
export function describeChannelNameError(error: ChannelNameError, maxBytes: number = DEFAULT_MAX_CHANNEL_BYTES): string {
  switch (error) {
    case 'empty':
      return 'channel name is empty (or has nothing after the namespace and ":")';
    case 'too_long':
      return `channel name is longer than ${maxBytes} bytes`;
    case 'bad_character':
      return 'channel name may contain only A-Z a-z 0-9 and _ - . : @ / = , ;';
    case 'bad_namespace':
      return 'namespace (before the first ":") must be 1 to 64 of a-z 0-9 _ -';
  }
}

export function isChannelNameError(value: ParsedChannel | ChannelNameError): value is ChannelNameError {
  return typeof value === 'string';
}
