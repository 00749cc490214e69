/**
 * The SDK's side of a transport: open a connection, send commands, hand
 * every server frame to the client, and report once how it ended. The
 * client (client.ts) owns every decision (fallback, reconnect, recovery);
 * a transport only moves frames.
 *
 * Guarantees a transport gives the client:
 * - frames are handed over in the order the server sent them, synchronously
 *   one after the other (a reply is handled before the frame after it);
 * - `onClose` is called at most once, and nothing is called after it;
 * - nothing is called after the client called `close()`.
 */
import type { ServerFrame } from '@herald/protocol';

export type TransportName = 'websocket' | 'sse' | 'long-poll';

export const transportNames: readonly TransportName[] = ['websocket', 'sse', 'long-poll'];

export interface OutboundCommand {
  readonly id?: number;
  readonly method: string;
  readonly params?: object;
}

export interface TransportClose {
  readonly code: number;
  readonly reason: string;
  /** An HTTP open was refused, possibly because of a requested channel: open again without channels. */
  readonly channelsRefused?: boolean;
  /**
   * A WebSocket opened in the upgrade request (`connect=1`) closed before it
   * opened: refused (the page cannot see why) or unreachable. The next
   * attempt opens by commands, whose close code says why.
   */
  readonly openInUrlFailed?: boolean;
}

export interface TransportHandlers {
  /** WebSocket opened by commands only: the socket is open, the client sends `connect` now. */
  onOpen(): void;
  onFrame(frame: ServerFrame): void;
  onClose(close: TransportClose): void;
}

/** What the connection is opened with. SSE, long polling and a WebSocket opened in its upgrade request subscribe at open time. */
export interface OpenRequest {
  readonly token: string | undefined;
  readonly name: string | undefined;
  /** Channels to subscribe fresh (SSE `channel`, long-poll `channels`). */
  readonly channels: readonly string[];
  /** Position vector of the channels to recover (SSE `last_event_id`, long-poll `cursor`); '' for none. */
  readonly vector: string;
}

export interface ClientTransport {
  readonly name: TransportName;
  /**
   * True when the connection opens with its token and channels and the
   * server announces it with a `connected` push (SSE, long polling, a
   * WebSocket opened in its upgrade request): no `connect` command.
   */
  readonly pushesConnected: boolean;
  /** True when a subscribe command's result arrives as a `subscribed` push on the stream, not in its reply (SSE, long polling). */
  readonly pushesSubscribed: boolean;
  /** True when a `ping` push should be answered with a `pong` command (SSE). */
  readonly answersPing: boolean;
  open(request: OpenRequest): void;
  send(command: OutboundCommand): void;
  close(): void;
}

export interface Endpoints {
  readonly websocket: string;
  readonly sse: string;
  readonly pollOpen: string;
  readonly poll: string;
  readonly command: string;
  readonly close: string;
}

export type FetchFunction = (input: string, init?: RequestInit) => Promise<Response>;

export interface TransportEnvironment {
  readonly endpoints: Endpoints;
  readonly fetch: FetchFunction | undefined;
  readonly WebSocket: typeof WebSocket | undefined;
}

/** Reads `{"error":{"code":…}}` from a failed HTTP answer, if it is one. */
export async function readApiError(response: Response): Promise<string | undefined> {
  try {
    const body = (await response.json()) as { error?: { code?: unknown } };
    return typeof body?.error?.code === 'string' ? body.error.code : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `url` with `batch=1`: the client announces batched frames (docs/protocol.md,
 * "Batched frames"). A query parameter, because every server version reads
 * or ignores it; older servers refuse unknown `connect` params and open-body keys.
 */
export function withBatch(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // A relative URL (a browser resolves it): append.
    return url + (url.includes('?') ? '&' : '?') + 'batch=1';
  }
  parsed.searchParams.set('batch', '1');
  return parsed.toString();
}

/**
 * The frames of one WebSocket message or SSE event: a batch holds several
 * joined by "\n"; a frame never holds a raw line break. Unparsable lines
 * are skipped.
 */
export function parseFrames(text: string, batched: boolean): ServerFrame[] {
  if (!batched || !text.includes('\n')) {
    const frame = parseFrame(text);
    return frame === undefined ? [] : [frame];
  }
  const frames: ServerFrame[] = [];
  for (const line of text.split('\n')) {
    const frame = parseFrame(line);
    if (frame !== undefined) frames.push(frame);
  }
  return frames;
}

function parseFrame(text: string): ServerFrame | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return isFrame(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

export function isFrame(value: unknown): value is ServerFrame {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
