/**
 * Over a WebSocket opened by commands (`websocketConnectInUrl: false`; by
 * default the SDK opens in the upgrade request, sdk-websocket-open) the SDK sends its subscribes right behind `connect`, before
 * the connect reply (docs/protocol.md, Order): one round trip to a
 * subscribed connection. A scripted WebSocket endpoint (`ws`) holds the
 * connect reply until it has read the subscribes, so an SDK that waited for
 * the reply would never get one; subscriptions that must first fetch their
 * token wait for the reply; a refused connect leaves the subscription
 * subscribing, and the next connection subscribes it. The real server's
 * side (commands pipelined behind connect run after it, in order) is
 * covered by the SDK's tests against Herald (sdk-transports, sdk-recovery).
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket as ServerSocket } from 'ws';
import { recordedClient, recordSubscription, type RecordedClient } from './sdk-helpers.ts';
import { waitUntil } from '../../server/test/helpers/rt-util.ts';

interface Command {
  readonly id?: number;
  readonly method?: string;
  readonly params?: Record<string, unknown>;
}

/** What each connection to the scripted endpoint received, in order, and whether its connect reply was sent. */
interface Connection {
  readonly socket: ServerSocket;
  readonly commands: Command[];
  /** Number of commands received when the connect reply was sent (-1: not yet). */
  connectRepliedAt: number;
}

const SUBSCRIBED = { recoverable: true, epoch: 'E1', offset: 0, was_recovering: false, recovered: false };

describe('SDK over WebSocket: subscribes pipelined behind connect', { timeout: 30000 }, () => {
  let server: WebSocketServer;
  let url: string;
  const connections: Connection[] = [];
  /** Decides each connect reply: `undefined` keeps holding it (called again at every command). */
  let answerConnect: (connection: Connection, index: number) => object | undefined = () => undefined;
  const clients: RecordedClient[] = [];

  before(async () => {
    server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    server.on('connection', (socket) => {
      const connection: Connection = { socket, commands: [], connectRepliedAt: -1 };
      const index = connections.push(connection) - 1;
      let connectId: number | undefined;
      socket.on('message', (data) => {
        const command = JSON.parse(String(data)) as Command;
        connection.commands.push(command);
        if (command.method === 'connect') connectId = command.id;
        if (connectId !== undefined && connection.connectRepliedAt === -1) {
          const reply = answerConnect(connection, index);
          if (reply === undefined) return;
          connection.connectRepliedAt = connection.commands.length;
          socket.send(JSON.stringify({ id: connectId, ...reply }));
          // The commands held behind connect, answered in order as Herald does.
          for (const held of connection.commands.slice(1)) answer(connection, held, 'error' in reply);
          return;
        }
        if (connection.connectRepliedAt !== -1) answer(connection, command, false);
      });
    });
  });

  function answer(connection: Connection, command: Command, connectFailed: boolean): void {
    if (command.method !== 'subscribe' || command.id === undefined) return;
    const reply = connectFailed ? { error: { code: 115, message: 'not connected' } } : { result: SUBSCRIBED };
    connection.socket.send(JSON.stringify({ id: command.id, ...reply }));
  }

  beforeEach(() => {
    connections.length = 0;
  });

  after(async () => {
    for (const { client } of clients) client.disconnect();
    for (const client of server.clients) client.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  function client(options: Parameters<typeof recordedClient>[0]): RecordedClient {
    // Opened by commands: the mode this file is about (the default opens in the upgrade request).
    const recorded = recordedClient({ url, transports: ['websocket'], websocketConnectInUrl: false, ...options });
    clients.push(recorded);
    return recorded;
  }

  const subscribes = (connection: Connection) => connection.commands.filter((c) => c.method === 'subscribe').map((c) => c.params?.['channel']);
  const connectResult = { result: { client: 'C1', version: '0.1.0', protocol: 1, ping: 25 } };

  test('the subscribes leave before the connect reply; one that fetches its token waits for it', async () => {
    // The connect reply only once both plain subscribes have arrived behind connect.
    answerConnect = (connection) => (subscribes(connection).length >= 2 ? connectResult : undefined);
    const alice = client({});
    const a = recordSubscription(alice.client.subscribe('room:a'));
    const b = recordSubscription(alice.client.subscribe('room:b'));
    const secret = recordSubscription(alice.client.subscribe('secret:c', { getToken: () => Promise.resolve('sub-token') }));
    alice.client.connect();
    await a.waitForSubscribed();
    await b.waitForSubscribed();
    await secret.waitForSubscribed();
    const connection = connections[0]!;
    assert.deepEqual(
      connection.commands.map((c) => c.method),
      ['connect', 'subscribe', 'subscribe', 'subscribe'],
    );
    assert.equal(connection.connectRepliedAt, 3, 'connect answered after connect and the two pipelined subscribes');
    assert.deepEqual(subscribes(connection), ['room:a', 'room:b', 'secret:c']);
    assert.equal(connection.commands[3]!.params?.['token'], 'sub-token');
    assert.equal(connections.length, 1);
  });

  test('a refused connect does not end the pipelined subscription: the next connection subscribes it', async () => {
    // First connection: connect refused with a reply error (the held subscribe then gets 115); then accepted.
    answerConnect = (connection, index) => (subscribes(connection).length < 1 ? undefined : index === 0 ? { error: { code: 101, message: 'unauthorized' } } : connectResult);
    const bob = client({});
    const room = recordSubscription(bob.client.subscribe('room:d'));
    bob.client.connect();
    await room.waitForSubscribed();
    await waitUntil(() => connections.length >= 2, { label: 'a second connection' });
    assert.deepEqual(subscribes(connections[0]!), ['room:d']);
    assert.deepEqual(subscribes(connections[1]!), ['room:d']);
    assert.equal(room.unsubscribed.length, 0, 'the subscription was not ended');
    assert.equal(room.sub.state, 'subscribed');
  });
});
