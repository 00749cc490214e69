/**
 * Load-generator process of the fan-out benchmark, forked by `fanout.ts` (it
 * talks to its parent over the IPC channel only). Opens `count` subscribers
 * of one transport to `bench:fanout`, counts every publication each of them
 * receives (distinct, duplicate, out of order) and records the publish →
 * delivery latency from the timestamp in the payload.
 */
import http from 'node:http';
import { WebSocket, type RawData } from 'ws';
import {
  CHANNEL,
  isPayload,
  newHistogram,
  nowUs,
  record,
  type FromClient,
  type Payload,
  type StartMessage,
  type ToClient,
} from './lib.ts';

if (process.send === undefined) {
  console.error('fanout-client.ts is started by bench/fanout.ts (needs an IPC channel)');
  process.exit(2);
}

function send(message: FromClient): void {
  process.send?.(message);
}

let config: StartMessage | undefined;
let total = 0; // warm-up + measured messages
let bitmap = new Uint8Array(0); // [subscriber * total + seq] = received
let perSubscriber = new Uint32Array(0); // measured publications per subscriber
const lastSeq: number[] = [];
const histogram = newHistogram();
let measured = 0;
let warmupReceived = 0;
let duplicates = 0;
let outOfOrder = 0;
let closed = 0;
let polls = 0;
let lastDeliveryUs = 0;
const closeReasons: Record<string, number> = {};
const otherFrames: Record<string, number> = {};
let stopping = false;
const closers: Array<() => void> = [];

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

function deliver(sub: number, payload: Payload, now: number): void {
  const cfg = config;
  if (cfg === undefined) return;
  const seq = payload.s;
  if (!Number.isInteger(seq) || seq < 0 || seq >= total) {
    bump(otherFrames, 'bad-seq');
    return;
  }
  const previous = lastSeq[sub] ?? -1;
  if (seq < previous) outOfOrder++;
  else lastSeq[sub] = seq;
  const index = sub * total + seq;
  if (bitmap[index] === 1) {
    duplicates++;
    return;
  }
  bitmap[index] = 1;
  if (seq < cfg.warmup) {
    warmupReceived++;
    return;
  }
  measured++;
  perSubscriber[sub] = (perSubscriber[sub] ?? 0) + 1;
  record(histogram, now - payload.t);
  lastDeliveryUs = now;
}

function lostAfterReady(reason: string): void {
  if (stopping) return;
  closed++;
  bump(closeReasons, reason);
}

/**
 * Handles one Herald frame (any transport). Returns the frame when it is a
 * reply (has `id`), for the WebSocket handshake.
 */
function onHeraldFrame(sub: number, frame: unknown, now: number, onSubscribed: (() => void) | undefined): Record<string, unknown> | undefined {
  if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
    bump(otherFrames, 'non-object');
    return undefined;
  }
  const f = frame as Record<string, unknown>;
  if (f.push === 'publication') {
    if (f.channel === CHANNEL && isPayload(f.data)) deliver(sub, f.data, now);
    else bump(otherFrames, 'publication-unexpected');
    return undefined;
  }
  if (typeof f.push === 'string') {
    if (f.push === 'subscribed' && f.channel === CHANNEL) onSubscribed?.();
    else if (f.push === 'disconnect') lostAfterReady(`disconnect ${String(f.code)} ${String(f.reason)}`);
    else if (f.push !== 'connected') bump(otherFrames, `push:${f.push}`);
    return undefined;
  }
  if (f.id !== undefined) return f;
  bump(otherFrames, 'unknown-frame');
  return undefined;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

// ---- transports: each returns a promise that resolves once subscribed ----

function openRawWs(sub: number, cfg: StartMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${cfg.hostPort}/`, { perMessageDeflate: false });
    let ready = false;
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error('connect timeout'));
    }, cfg.connectTimeoutMs);
    ws.on('open', () => {
      ready = true;
      clearTimeout(timer);
      closers.push(() => ws.terminate());
      resolve();
    });
    ws.on('message', (data: RawData) => {
      const now = nowUs();
      const parsed = parseJson(data.toString());
      // the bare payload, or (--raw-frame=envelope) a publication-shaped wrapper
      const payload =
        typeof parsed === 'object' && parsed !== null && (parsed as Record<string, unknown>).push === 'publication'
          ? (parsed as Record<string, unknown>).data
          : parsed;
      if (isPayload(payload)) deliver(sub, payload, now);
      else bump(otherFrames, 'raw-unexpected');
    });
    ws.on('error', (err) => {
      if (!ready) {
        clearTimeout(timer);
        reject(err);
      }
    });
    ws.on('close', (code) => {
      if (ready) lostAfterReady(`ws close ${code}`);
    });
  });
}

function openHeraldWs(sub: number, cfg: StartMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${cfg.hostPort}/connection/websocket`, { perMessageDeflate: false });
    let ready = false;
    const fail = (err: Error): void => {
      if (ready) return;
      clearTimeout(timer);
      ws.terminate();
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error('connect/subscribe timeout')), cfg.connectTimeoutMs);
    ws.on('open', () => {
      ws.send(JSON.stringify({ id: 1, method: 'connect', params: {} }));
    });
    ws.on('message', (data: RawData) => {
      const now = nowUs();
      const frame = parseJson(data.toString());
      if (frame !== null && typeof frame === 'object' && (frame as Record<string, unknown>).push === 'ping') {
        ws.send('{"method":"pong"}');
      }
      const reply = onHeraldFrame(sub, frame, now, undefined);
      if (reply === undefined) return;
      if (reply.error !== undefined) {
        fail(new Error(`reply ${String(reply.id)} error ${JSON.stringify(reply.error)}`));
        return;
      }
      if (reply.id === 1) {
        ws.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel: CHANNEL } }));
      } else if (reply.id === 2 && !ready) {
        ready = true;
        clearTimeout(timer);
        closers.push(() => ws.terminate());
        resolve();
      } else {
        bump(otherFrames, `reply:${String(reply.id)}`);
      }
    });
    ws.on('error', (err) => fail(err));
    ws.on('close', (code, reason) => {
      if (ready) lostAfterReady(`ws close ${code} ${reason.toString()}`);
      else fail(new Error(`closed before subscribed: ${code} ${reason.toString()}`));
    });
  });
}

const sseAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

function hostAndPort(cfg: StartMessage): { host: string; port: number } {
  const [host, port] = cfg.hostPort.split(':');
  return { host: host ?? '127.0.0.1', port: Number(port) };
}

function openSse(sub: number, cfg: StartMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    const { host, port } = hostAndPort(cfg);
    let ready = false;
    const req = http.get({
      host,
      port,
      path: `/connection/sse?channel=${encodeURIComponent(CHANNEL)}`,
      agent: sseAgent,
      headers: { accept: 'text/event-stream' },
    });
    const fail = (err: Error): void => {
      if (ready) return;
      clearTimeout(timer);
      req.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error('connect/subscribe timeout')), cfg.connectTimeoutMs);
    const onSubscribed = (): void => {
      if (ready) return;
      ready = true;
      clearTimeout(timer);
      closers.push(() => req.destroy());
      resolve();
    };
    req.on('error', (err) => fail(err));
    req.on('response', (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let body = '';
        res.on('data', (c: string) => (body += c));
        res.on('end', () => fail(new Error(`SSE status ${res.statusCode}: ${body.slice(0, 200)}`)));
        return;
      }
      let buffer = '';
      res.on('data', (chunk: string) => {
        const now = nowUs();
        buffer += chunk.includes('\r') ? chunk.replace(/\r\n?/g, '\n') : chunk;
        let end = buffer.indexOf('\n\n');
        while (end !== -1) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let data: string | undefined;
          for (const line of event.split('\n')) {
            if (line.startsWith('data:')) {
              const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
              data = data === undefined ? value : `${data}\n${value}`;
            }
          }
          if (data !== undefined) onHeraldFrame(sub, parseJson(data), now, onSubscribed);
          end = buffer.indexOf('\n\n');
        }
      });
      res.on('close', () => {
        if (ready) lostAfterReady('sse stream ended');
        else fail(new Error('SSE stream ended before subscribed'));
      });
    });
  });
}

const pollAgent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: Infinity });

function post(cfg: StartMessage, path: string, body: string, session?: string): Promise<{ status: number; body: string }> {
  const { host, port } = hostAndPort(cfg);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    if (session !== undefined) headers['herald-session'] = session;
    const req = http.request({ host, port, path, method: 'POST', agent: pollAgent, headers }, (res) => {
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

interface PollAnswer {
  seq: number;
  session?: string;
  messages: unknown[];
}

function asPollAnswer(value: unknown): PollAnswer | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.seq !== 'number' || !Array.isArray(v.messages)) return undefined;
  return { seq: v.seq, session: typeof v.session === 'string' ? v.session : undefined, messages: v.messages as unknown[] };
}

function openLongPoll(sub: number, cfg: StartMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    let ready = false;
    let settled = false;
    const timer = setTimeout(() => {
      if (!settled) {
        settled = true;
        reject(new Error('open/subscribe timeout'));
      }
    }, cfg.connectTimeoutMs);
    const onSubscribed = (): void => {
      if (ready) return;
      ready = true;
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve();
      }
    };
    const fail = (err: Error): void => {
      if (ready) {
        lostAfterReady(err.message);
        return;
      }
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(err);
      }
    };
    const run = async (): Promise<void> => {
      const opened = await post(cfg, '/connection/poll/open', JSON.stringify({ channels: [CHANNEL] }));
      if (opened.status !== 200) throw new Error(`poll/open status ${opened.status}: ${opened.body.slice(0, 200)}`);
      const first = asPollAnswer(parseJson(opened.body));
      if (first === undefined || first.session === undefined) throw new Error(`poll/open bad answer: ${opened.body.slice(0, 200)}`);
      const session = first.session;
      let seq = first.seq;
      let now = nowUs();
      for (const m of first.messages) onHeraldFrame(sub, m, now, onSubscribed);
      let failures = 0;
      while (!stopping) {
        polls++;
        let answer: { status: number; body: string };
        try {
          answer = await post(cfg, '/connection/poll', JSON.stringify({ seq }), session);
          failures = 0;
        } catch (err) {
          // A kept-alive socket closed under us (the server's keep-alive
          // timeout racing the next poll): poll again with the same seq, as
          // the protocol intends for a lost answer.
          if (stopping || ++failures > 5) throw err;
          bump(otherFrames, `poll retry: ${err instanceof Error ? err.message : String(err)}`);
          continue;
        }
        if (stopping) return;
        now = nowUs();
        if (answer.status !== 200) throw new Error(`poll status ${answer.status}: ${answer.body.slice(0, 120)}`);
        const parsed = asPollAnswer(parseJson(answer.body));
        if (parsed === undefined) throw new Error(`poll bad answer: ${answer.body.slice(0, 120)}`);
        for (const m of parsed.messages) onHeraldFrame(sub, m, now, onSubscribed);
        if (parsed.seq > seq) seq = parsed.seq;
      }
    };
    run().catch((err: unknown) => {
      if (!stopping) fail(err instanceof Error ? err : new Error(String(err)));
    });
  });
}

function opener(transport: StartMessage['transport']): (sub: number, cfg: StartMessage) => Promise<void> {
  switch (transport) {
    case 'raw-ws':
      return openRawWs;
    case 'websocket':
      return openHeraldWs;
    case 'sse':
      return openSse;
    case 'long-poll':
      return openLongPoll;
  }
}

async function start(cfg: StartMessage): Promise<void> {
  config = cfg;
  total = cfg.warmup + cfg.messages;
  bitmap = new Uint8Array(cfg.count * total);
  perSubscriber = new Uint32Array(cfg.count);
  const open = opener(cfg.transport);
  const began = Date.now();
  let next = 0;
  let ready = 0;
  let failed = 0;
  const failures: string[] = [];
  const lane = async (): Promise<void> => {
    while (next < cfg.count && !stopping) {
      const sub = next++;
      try {
        await open(sub, cfg);
        ready++;
      } catch (err) {
        failed++;
        if (failures.length < 5) failures.push(err instanceof Error ? err.message : String(err));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.concurrency, cfg.count) }, lane));
  send({ type: 'connected', ready, failed, failures, ms: Date.now() - began });
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

function stop(): void {
  stopping = true;
  for (const close of closers) {
    try {
      close();
    } catch {
      // already gone
    }
  }
  pollAgent.destroy();
  sseAgent.destroy();
  setTimeout(() => process.exit(0), 300).unref();
}

process.on('message', (message: ToClient) => {
  switch (message.type) {
    case 'start':
      void start(message);
      break;
    case 'status':
      send({ type: 'status', measured, warmup: warmupReceived, closed, cpuUs: cpuUs() });
      break;
    case 'report': {
      let complete = 0;
      const cfg = config;
      if (cfg !== undefined) for (const n of perSubscriber) if (n === cfg.messages) complete++;
      send({
        type: 'report',
        measured,
        warmup: warmupReceived,
        duplicates,
        outOfOrder,
        complete,
        closed,
        closeReasons,
        otherFrames,
        lastDeliveryUs,
        histogram,
        cpuUs: cpuUs(),
        polls,
      });
      break;
    }
    case 'stop':
      stop();
      break;
  }
});

// The orchestrator going away (or its hard timeout) ends this process too.
process.on('disconnect', () => {
  stop();
  setTimeout(() => process.exit(0), 500).unref();
});
