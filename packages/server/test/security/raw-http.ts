/**
 * Raw-socket HTTP for the security tests: send exact bytes (hostile heads,
 * smuggling vectors, slow headers) and read exactly what comes back. Waits
 * fail with a clear error after a generous timeout; no assertion is decided
 * by timing.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';

export interface RawAnswer {
  /** Everything the server sent, as latin1 text. */
  readonly text: string;
  /** Status codes of every response head in `text`, in order. */
  readonly statuses: number[];
  /** Status of the first response (0 when none). */
  readonly status: number;
  /** Header block of the first response, lower-cased names. */
  readonly headers: Map<string, string>;
  /** Body of the first response (after the blank line). */
  readonly body: string;
  /** True when the server ended the connection. */
  readonly closed: boolean;
}

export function parseAnswer(text: string, closed: boolean): RawAnswer {
  const statuses = [...text.matchAll(/(?:^|\r\n)HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
  const end = text.indexOf('\r\n\r\n');
  const head = end === -1 ? text : text.slice(0, end);
  const headers = new Map<string, string>();
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { text, statuses, status: statuses[0] ?? 0, headers, body: end === -1 ? '' : text.slice(end + 4), closed };
}

export interface RawOptions {
  /** 'close': until the server ends the connection; 'head': until one response head arrived. */
  readonly until?: 'close' | 'head';
  readonly timeoutMs?: number;
  readonly host?: string;
}

/** Opens a socket, writes `data`, and resolves with the answer (rejects on timeout). */
export function rawExchange(port: number, data: string | Buffer, options: RawOptions = {}): Promise<RawAnswer> {
  const until = options.until ?? 'close';
  const timeoutMs = options.timeoutMs ?? 10000;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: options.host ?? '127.0.0.1' });
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const answer = parseAnswer(Buffer.concat(chunks).toString('latin1'), closed);
      if (!closed) socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(new Error(`no ${until === 'close' ? 'close' : 'response head'} within ${timeoutMs} ms; got: ${Buffer.concat(chunks).toString('latin1').slice(0, 300)}`));
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (until === 'head' && Buffer.concat(chunks).includes('\r\n\r\n')) finish(false);
    });
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
    socket.write(data);
  });
}

/** The head of a WebSocket upgrade request for `/connection/websocket`. */
export function upgradeHead(port: number, extra: readonly string[] = [], target = '/connection/websocket'): string {
  return [
    `GET ${target} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    ...extra,
    '',
    '',
  ].join('\r\n');
}

/** Tries an upgrade with extra header lines; resolves with the answer's status (101 or the refusal). */
export async function upgradeStatus(port: number, extra: readonly string[] = []): Promise<RawAnswer> {
  return rawExchange(port, upgradeHead(port, extra), { until: 'head' });
}
