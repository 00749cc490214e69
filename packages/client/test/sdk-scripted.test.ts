/**
 * The SDK against a scripted SSE endpoint, for what a correct Herald rarely
 * does on purpose: an `unsubscribed` push with 3006, a gap in offsets, a
 * duplicate, a `ping` that an interactive SSE connection must answer. The
 * script plays the server's side of docs/protocol.md by hand; everything
 * else is tested against the real server (sdk-*.test.ts).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HeraldClient, type PublicationEvent, type SubscribedEvent } from '../src/index.ts';
import { waitUntil } from '../../server/test/helpers/rt-util.ts';

interface Script {
  stream: ServerResponse | undefined;
  streamUrls: string[];
  commands: Record<string, any>[];
  onCommand: (command: Record<string, any>) => Record<string, any> | undefined;
}

const SESSION = 'S'.repeat(22);

function event(frame: unknown, id?: string): string {
  return (id === undefined ? '' : `id: ${id}\n`) + `data: ${JSON.stringify(frame)}\n\n`;
}

async function readBody(req: IncomingMessage): Promise<string> {
  let body = '';
  for await (const chunk of req) body += chunk;
  return body;
}

describe('SDK against a scripted SSE server', { timeout: 30000 }, () => {
  let server: Server;
  let url: string;
  const script: Script = { stream: undefined, streamUrls: [], commands: [], onCommand: () => undefined };
  const clients: HeraldClient[] = [];

  before(async () => {
    const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
      if (req.method === 'GET' && req.url?.startsWith('/connection/sse')) {
        script.streamUrls.push(req.url);
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('retry: 1000\n\n');
        script.stream = res;
        return;
      }
      if (req.method === 'POST' && req.url === '/connection/command') {
        assert.equal(req.headers['herald-session'], SESSION);
        const body: unknown = JSON.parse(await readBody(req));
        const list = (Array.isArray(body) ? body : [body]) as Record<string, any>[];
        const replies = [];
        for (const command of list) {
          script.commands.push(command);
          const reply = script.onCommand(command);
          if (command['id'] !== undefined) replies.push(reply ?? { id: command['id'], result: {} });
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(replies));
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"not_found","message":"no such endpoint"}}');
    };
    server = createServer((req, res) => {
      handle(req, res).catch((error: unknown) => res.destroy(error as Error));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    for (const client of clients) client.disconnect();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  function reset(): void {
    script.stream = undefined;
    script.streamUrls.length = 0;
    script.commands.length = 0;
    script.onCommand = () => undefined;
  }

  function startClient(channel: string) {
    const client = new HeraldClient({ url, transports: ['sse'], reconnectDelayMs: 10 });
    clients.push(client);
    const sub = client.subscribe(channel);
    const publications: PublicationEvent[] = [];
    const subscribed: SubscribedEvent[] = [];
    sub.on('publication', (p) => publications.push(p));
    sub.on('subscribed', (s) => subscribed.push(s));
    client.connect();
    return { client, sub, publications, subscribed };
  }

  const write = (text: string) => script.stream!.write(text);
  const subscribedPush = (channel: string, offset: number, wasRecovering: boolean, recovered: boolean) =>
    event({ push: 'subscribed', channel, recoverable: true, epoch: 'E1', offset, was_recovering: wasRecovering, recovered });
  const publication = (channel: string, offset: number) => event({ push: 'publication', channel, offset, data: { n: offset } });

  test('unsubscribed 3006: resubscribes with recover from the last delivered offset; duplicates are dropped; pings are answered', async () => {
    reset();
    const channel = 'chat:scripted-3006';
    const { client, publications, subscribed } = startClient(channel);
    await waitUntil(() => script.stream, { label: 'SSE stream' });
    assert.match(script.streamUrls[0]!, /channel=chat%3Ascripted-3006/, 'a fresh subscription is made at open with `channel`');
    write(event({ push: 'connected', client: 'c1', version: 't', ping: 25, session: SESSION }));
    write(subscribedPush(channel, 0, false, false));
    write(publication(channel, 1) + publication(channel, 2) + publication(channel, 2) + publication(channel, 1));
    await waitUntil(() => publications.length === 2, { label: 'two publications' });
    assert.equal(client.transport, 'sse');

    write(event({ push: 'ping' }));
    await waitUntil(() => script.commands.find((c) => c['method'] === 'pong'), { label: 'pong POSTed' });

    script.onCommand = (command) => {
      if (command['method'] !== 'subscribe') return undefined;
      queueMicrotask(() => write(subscribedPush(channel, 4, true, true) + publication(channel, 3) + publication(channel, 4)));
      return { id: command['id'], result: { recoverable: true, epoch: 'E1', offset: 4, was_recovering: true, recovered: true } };
    };
    write(event({ push: 'unsubscribed', channel, code: 3006, reason: 'insufficient state' }));
    await waitUntil(() => publications.length === 4, { label: 'recovered publications' });
    const subscribe = script.commands.find((c) => c['method'] === 'subscribe');
    assert.deepEqual(subscribe?.['params'], { channel, recover: true, epoch: 'E1', offset: 2 });
    assert.deepEqual(publications.map((p) => p.offset), [1, 2, 3, 4]);
    assert.deepEqual(subscribed.map((s) => [s.wasRecovering, s.recovered]), [[false, false], [true, true]]);
    client.disconnect();
  });

  test('a server resynchronization (a subscribed push for a live subscription) is applied: recovered:true continues in order, recovered:false moves to the new position; the client sends no command', async () => {
    reset();
    const channel = 'chat:scripted-resync';
    const { client, publications, subscribed } = startClient(channel);
    await waitUntil(() => script.stream, { label: 'SSE stream' });
    write(event({ push: 'connected', client: 'c5', version: 't', ping: 25, session: SESSION }));
    write(subscribedPush(channel, 0, false, false) + publication(channel, 1) + publication(channel, 2));
    await waitUntil(() => publications.length === 2, { label: 'two publications' });
    write(subscribedPush(channel, 4, true, true) + publication(channel, 3) + publication(channel, 4));
    await waitUntil(() => publications.length === 4, { label: 'recovered publications' });
    write(event({ push: 'subscribed', channel, recoverable: true, epoch: 'E2', offset: 9, was_recovering: true, recovered: false }) + publication(channel, 10));
    await waitUntil(() => publications.length === 5, { label: 'live after recovered:false' });
    assert.deepEqual(publications.map((p) => p.offset), [1, 2, 3, 4, 10]);
    assert.deepEqual(
      subscribed.map((s) => [s.wasRecovering, s.recovered, s.epoch, s.offset]),
      [
        [false, false, 'E1', 0],
        [true, true, 'E1', 4],
        [true, false, 'E2', 9],
      ],
    );
    assert.deepEqual(script.commands.filter((c) => c['method'] !== 'pong'), [], 'no unsubscribe or subscribe sent');
    client.disconnect();
  });

  test('a gap in offsets is never skipped: unsubscribe, then subscribe with recover from the last delivered offset', async () => {
    reset();
    const channel = 'chat:scripted-gap';
    const { client, publications } = startClient(channel);
    await waitUntil(() => script.stream, { label: 'SSE stream' });
    write(event({ push: 'connected', client: 'c2', version: 't', ping: 25, session: SESSION }));
    write(subscribedPush(channel, 0, false, false));
    script.onCommand = (command) => {
      if (command['method'] !== 'subscribe') return undefined;
      queueMicrotask(() => write(subscribedPush(channel, 3, true, true) + publication(channel, 2) + publication(channel, 3)));
      return undefined;
    };
    write(publication(channel, 1) + publication(channel, 3));
    await waitUntil(() => publications.length === 3, { label: 'publications after the gap' });
    assert.deepEqual(publications.map((p) => p.offset), [1, 2, 3]);
    assert.deepEqual(
      script.commands.filter((c) => c['method'] !== 'pong').map((c) => [c['method'], c['params']]),
      [
        ['unsubscribe', { channel }],
        ['subscribe', { channel, recover: true, epoch: 'E1', offset: 1 }],
      ],
    );
    client.disconnect();
  });

  test('recovered: false after a reconnect is reported with wasRecovering, and delivery continues from the new position', async () => {
    reset();
    const channel = 'chat:scripted-lost';
    const { client, publications, subscribed } = startClient(channel);
    await waitUntil(() => script.stream, { label: 'SSE stream' });
    write(event({ push: 'connected', client: 'c3', version: 't', ping: 25, session: SESSION }));
    write(subscribedPush(channel, 0, false, false) + publication(channel, 1));
    await waitUntil(() => publications.length === 1, { label: 'first publication' });
    const first = script.stream!;
    script.stream = undefined;
    first.end(event({ push: 'disconnect', code: 3001, reason: 'server shutting down', reconnect: true }));
    await waitUntil(() => script.stream, { label: 'reconnected stream' });
    assert.match(script.streamUrls[1]!, /last_event_id=chat%3Ascripted-lost%7CE1%7C1/, 'the reconnect carries the position vector');
    write(event({ push: 'connected', client: 'c4', version: 't', ping: 25, session: SESSION }));
    write(event({ push: 'subscribed', channel, recoverable: true, epoch: 'E2', offset: 7, was_recovering: true, recovered: false }));
    write(publication(channel, 8));
    await waitUntil(() => publications.length === 2, { label: 'live publication after reload' });
    assert.deepEqual(subscribed.map((s) => [s.wasRecovering, s.recovered, s.epoch]), [[false, false, 'E1'], [true, false, 'E2']]);
    assert.deepEqual(publications.map((p) => p.offset), [1, 8]);
    client.disconnect();
  });
});
