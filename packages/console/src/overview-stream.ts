/**
 * The overview's live data: one EventSource on `B/api/overview/stream`
 * (a `data:` JSON sample per second, authenticated by the session cookie),
 * the last {@link KEEP} samples kept in a signal for the charts. The stream
 * runs while someone is signed in; when the server closes it for good (the
 * session ended) the page asks for the session, and a 401 shows the login.
 */
import { signal } from '@preact/signals';
import { apiUrl, call } from './api.ts';

export interface NodeSample {
  readonly node: string;
  readonly worker?: number | string;
  readonly host?: string;
  readonly connections: { readonly websocket: number; readonly sse: number; readonly longPoll: number; readonly pusher: number };
  readonly subscriptions: number;
  readonly publicationsPerSecond: number;
  readonly deliveriesPerSecond: number;
  readonly eventLoopDelayMs: number;
  readonly heapUsedBytes: number;
  readonly rssBytes: number;
  readonly watchdog: readonly string[];
}

export interface Sample {
  /** Seconds since the epoch (uPlot's time scale). */
  readonly t: number;
  readonly nodes: readonly NodeSample[];
}

/** Two minutes at one sample a second. */
export const KEEP = 120;

export const samples = signal<readonly Sample[]>([]);
export const streamState = signal<'connecting' | 'live' | 'reconnecting' | 'closed'>('closed');

let source: EventSource | undefined;
let retry: ReturnType<typeof setTimeout> | undefined;

/** A node (or one worker of it) as the charts name it. */
export function nodeLabel(sample: NodeSample): string {
  const name = `${sample.host === undefined || sample.host === '' ? 'node' : sample.host} ${shortId(sample.node)}`;
  return sample.worker === undefined || sample.worker === null ? name : `${name} · worker ${sample.worker}`;
}

/** A node id (a UUID) shortened for people: its first 8 characters. */
export function shortId(id: string): string {
  return /^[0-9a-f]{8}-/.test(id) ? id.slice(0, 8) : id;
}

function toSample(raw: unknown): Sample | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const { t, nodes } = raw as { t?: unknown; nodes?: unknown };
  if (!Array.isArray(nodes)) return undefined;
  const time = typeof t === 'number' ? (t > 1e11 ? t / 1000 : t) : typeof t === 'string' ? Date.parse(t) / 1000 : Date.now() / 1000;
  return { t: Number.isFinite(time) ? time : Date.now() / 1000, nodes: nodes as NodeSample[] };
}

export function startOverviewStream(): void {
  if (source !== undefined) return;
  clearTimeout(retry);
  streamState.value = 'connecting';
  const es = new EventSource(apiUrl('overview/stream'));
  source = es;
  es.onopen = () => {
    streamState.value = 'live';
  };
  es.onmessage = (event: MessageEvent<string>) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(event.data);
    } catch {
      return;
    }
    const sample = toSample(parsed);
    if (sample === undefined) return;
    const kept = samples.value.length >= KEEP ? samples.value.slice(samples.value.length - KEEP + 1) : samples.value.slice();
    kept.push(sample);
    samples.value = kept;
  };
  // Closed for good (an error status, or the server's `end` event: the session ended, the server stops):
  // is the session still there? A 401 shows the login; otherwise open a new stream in a while.
  const closed = () => {
    if (source !== es) return;
    es.close();
    source = undefined;
    streamState.value = 'reconnecting';
    call('session', {})
      .then(() => {
        retry = setTimeout(startOverviewStream, 3000);
      })
      .catch(() => {
        streamState.value = 'closed';
      });
  };
  es.addEventListener('end', closed);
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) closed();
    else streamState.value = 'reconnecting';
  };
}

export function stopOverviewStream(): void {
  clearTimeout(retry);
  source?.close();
  source = undefined;
  streamState.value = 'closed';
  samples.value = [];
}
