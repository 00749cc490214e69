/**
 * edge/first-connection.ts on a real net.Server: the connections that arrive
 * while the layer loads wait and then reach it, none lost, the
 * bytes they sent meanwhile included; a load that fails leaves the server's
 * own listener serving.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { installAtFirstConnection } from '../../src/edge/first-connection.ts';

/** A server whose own listener answers each line with `own:<line>`. */
async function echoServer(): Promise<Server> {
  const server = createServer();
  server.on('connection', (socket: Socket) => socket.on('data', (data) => socket.end(`own:${String(data)}`)));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** Opens a connection, writes `line` at once, answers what comes back before the server ends it. */
async function say(server: Server, line: string): Promise<string> {
  const socket = connect((server.address() as { port: number }).port, '127.0.0.1');
  socket.write(line);
  let text = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  await once(socket, 'end');
  return text;
}

test('connections that arrive while the layer loads wait for it and then reach it, with what they sent', async (t) => {
  const server = await echoServer();
  t.after(() => server.close());
  let arrived = 0;
  server.prependListener('connection', () => arrived++);
  let release!: () => void;
  const loaded = new Promise<void>((resolve) => (release = resolve));
  const reached: string[] = [];
  installAtFirstConnection(
    server,
    async () => {
      await loaded;
      return () => {
        // As LeanHttp does: in front of the server's listeners, which it calls itself.
        const own = server.listeners('connection') as ((socket: Socket) => void)[];
        server.removeAllListeners('connection');
        server.on('connection', (socket: Socket) => {
          reached.push(`${socket.remotePort}`);
          for (const listener of own) listener.call(server, socket);
        });
      };
    },
    (error) => assert.fail(String(error)),
  );
  const answers = Array.from({ length: 5 }, (_, i) => say(server, `line ${i}`));
  // Every connection is in before the load ends: they are all waiting.
  const until = Date.now() + 5000;
  while ((await new Promise<number>((resolve) => server.getConnections((_, n) => resolve(n)))) < 5 && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(arrived, 0, 'the listeners it found were set aside while it loads');
  release();
  assert.deepEqual(await Promise.all(answers), Array.from({ length: 5 }, (_, i) => `own:line ${i}`), 'every connection answered, its early bytes included');
  assert.equal(reached.length, 5, 'every waiting connection went through the installed layer');
  assert.equal(arrived, 5, 'and then to the listeners the server had');
  assert.deepEqual(await say(server, 'later'), 'own:later', 'a later connection goes straight to the layer');
  assert.equal(reached.length, 6);
});

test('a load that fails is reported and the server serves as before', async (t) => {
  const server = await echoServer();
  t.after(() => server.close());
  const failures: unknown[] = [];
  installAtFirstConnection(
    server,
    async () => {
      await new Promise((resolve) => setTimeout(resolve, 50));
      throw new Error('no layer');
    },
    (error) => failures.push(error),
  );
  const answers = await Promise.all([say(server, 'a'), say(server, 'b')]);
  assert.deepEqual(answers, ['own:a', 'own:b']);
  assert.equal(failures.length, 1);
  assert.equal(await say(server, 'c'), 'own:c');
});
