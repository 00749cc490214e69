/**
 * Test helpers for the Pusher endpoint: a Herald with apps (secrets in
 * files of its own), real pusher-js clients in Node pointed at it, an auth
 * endpoint signing with the official `pusher` SDK, and a raw WebSocket
 * client for what pusher-js never sends.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHmac, randomBytes } from 'node:crypto';
import pusherJsModule from 'pusher-js';
import type { Options as PusherJsOptions } from 'pusher-js';

/** pusher-js's client class: its CommonJS main exports the class, its types declare it as the default export. */
type PusherJs = (typeof pusherJsModule)['default']['prototype'];
const PusherJs = pusherJsModule as unknown as new (key: string, options: PusherJsOptions) => PusherJs;
/** A pusher-js client, as `pusherClient` answers it. */
export type PusherClient = PusherJs;
import Pusher from 'pusher';
import WebSocket from 'ws';
import { startHerald, type TestHerald } from './herald.ts';

export interface TestApp {
  readonly id: string;
  readonly key: string;
  readonly secret: string;
  readonly [option: string]: unknown;
}

export interface PusherHerald extends TestHerald {
  readonly apps: readonly TestApp[];
  /** `ws://127.0.0.1:PORT/app/{key}?protocol=7&client=test&version=1` */
  appUrl(key: string, query?: string): string;
}

/** An app for `startPusherHerald` (random key and secret); `options` go to its apps.list entry. */
export function testApp(id: string, options: Record<string, unknown> = {}): TestApp {
  return { id, key: `key-${id}-${randomBytes(4).toString('hex')}`, secret: randomBytes(16).toString('hex'), ...options };
}

/** A Herald with these apps (the first is the default app unless `overrides.apps.default` says otherwise). */
export async function startPusherHerald(apps: readonly TestApp[], overrides: Record<string, any> = {}): Promise<PusherHerald> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-secrets-'));
  const list = apps.map((app) => {
    const { secret, ...entry } = app;
    const secretFile = join(dir, `${app.id}.secret`);
    writeFileSync(secretFile, secret, { mode: 0o600 });
    return { ...entry, secretFile };
  });
  let herald: TestHerald;
  try {
    herald = await startHerald({ ...overrides, apps: { default: apps[0]?.id, ...overrides['apps'], list } });
  } finally {
    // Secrets are read at start.
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    ...herald,
    apps,
    appUrl(key, query = 'protocol=7&client=test&version=1.0.0') {
      return `ws://127.0.0.1:${herald.server.port}/app/${key}?${query}`;
    },
  };
}

/** The official server SDK for an app, pointed at the test server (or at a Herald listening on 127.0.0.1:`herald`, a cluster). */
export function serverSdk(herald: PusherHerald | number, app: TestApp): Pusher {
  const port = typeof herald === 'number' ? herald : herald.server.port;
  return new Pusher({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(port), useTLS: false });
}

/** A channel subscription's `auth` as Pusher defines it: `key:HMAC-SHA256(secret, "socketId:channel[:channelData]")`. */
export function signSubscription(app: Pick<TestApp, 'key' | 'secret'>, socketId: string, channel: string, channelData?: string): string {
  const text = channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
  return `${app.key}:${createHmac('sha256', app.secret).update(text).digest('hex')}`;
}

const clients = new Set<PusherJs>();

/** A pusher-js client (Node) for an app of the test server; `options` are pusher-js options. */
export function pusherClient(herald: PusherHerald, key: string, options: Record<string, unknown> = {}): PusherJs {
  return pusherClientOnPort(herald.server.port, key, options);
}

/** A pusher-js client (Node) for a Herald listening on 127.0.0.1:`port` (a cluster, another node). */
export function pusherClientOnPort(port: number, key: string, options: Record<string, unknown> = {}): PusherJs {
  const client = new PusherJs(key, {
    cluster: 'local',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    ...options,
  } as PusherJsOptions);
  clients.add(client);
  return client;
}

/** Resolves with the socket id once the client is connected. */
export function connected(client: PusherJs, timeoutMs = 5000): Promise<string> {
  if (client.connection.state === 'connected') return Promise.resolve(client.connection.socket_id);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pusher-js not connected (state ${client.connection.state})`)), timeoutMs);
    client.connection.bind('connected', () => {
      clearTimeout(timer);
      resolve(client.connection.socket_id);
    });
  });
}

/** Subscribes and resolves with the subscription_succeeded data; rejects on pusher:subscription_error. */
export function subscribed(client: PusherJs, channel: string, timeoutMs = 5000): Promise<any> {
  const ch = client.subscribe(channel);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no subscription_succeeded on ${channel}`)), timeoutMs);
    ch.bind('pusher:subscription_succeeded', (data: unknown) => {
      clearTimeout(timer);
      resolve(data);
    });
    ch.bind('pusher:subscription_error', (error: unknown) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`subscription_error on ${channel}: ${JSON.stringify(error)}`), { detail: error }));
    });
  });
}

/** The next `event` on a channel (already subscribed). */
export function nextEvent(client: PusherJs, channel: string, event: string, timeoutMs = 5000): Promise<any> {
  const ch = client.channel(channel);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} on ${channel}`)), timeoutMs);
    const handler = (data: unknown, metadata: unknown): void => {
      clearTimeout(timer);
      ch.unbind(event, handler);
      void metadata;
      resolve(data);
    };
    ch.bind(event, handler);
  });
}

/** Disconnects every pusher-js client and closes every `rawPusher` socket opened since the last call. */
export function disconnectAll(): void {
  for (const client of clients) client.disconnect();
  clients.clear();
  for (const raw of raws) raw.close();
  raws.clear();
}

const raws = new Set<RawPusher>();

/** A raw protocol 7 socket to an app of the test server, once established: the socket and its socket id (closed by `disconnectAll`). */
export async function rawPusher(herald: PusherHerald, key: string): Promise<[RawPusher, string]> {
  const raw = new RawPusher(herald.appUrl(key));
  raws.add(raw);
  return [raw, await raw.established()];
}

/**
 * An auth endpoint as an application runs it: signs private and presence
 * subscriptions (`pusher.authorizeChannel`) and sign-ins
 * (`pusher.authenticateUser`) with the official SDK. `presence(socketId)`
 * says who the requester is; `user(socketId)` what it signs in as.
 */
export interface AuthServer {
  readonly channelUrl: string;
  readonly userUrl: string;
  /** Requests seen (channel names), for assertions. */
  readonly seen: string[];
  close(): Promise<void>;
}

export async function startAuthServer(
  sdk: Pick<Pusher, 'authorizeChannel' | 'authenticateUser'>,
  presence: (socketId: string, channel: string) => { user_id: string; user_info?: Record<string, unknown> },
  user: (socketId: string) => { id: string; watchlist?: string[]; [key: string]: unknown } = () => ({ id: 'nobody' }),
): Promise<AuthServer> {
  const seen: string[] = [];
  const server: Server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      const params = new URLSearchParams(body);
      const socketId = params.get('socket_id') ?? '';
      let answer: unknown;
      if (request.url === '/user') {
        answer = sdk.authenticateUser(socketId, user(socketId) as Pusher.UserChannelData);
      } else {
        const channel = params.get('channel_name') ?? '';
        seen.push(channel);
        answer = channel.startsWith('presence-') ? sdk.authorizeChannel(socketId, channel, presence(socketId, channel)) : sdk.authorizeChannel(socketId, channel);
      }
      response.writeHead(200, { 'content-type': 'application/json', 'access-control-allow-origin': '*' });
      response.end(JSON.stringify(answer));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    channelUrl: `http://127.0.0.1:${port}/channel`,
    userUrl: `http://127.0.0.1:${port}/user`,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Users of one app as its backend signs them: an auth endpoint
 * (`startAuthServer` with the app's `serverSdk`) that answers for each
 * socket as the user `client(user)` connected it as (presence `user_id`,
 * with `info` as `user_info`; the sign-in's `id`), and "anonymous" for any
 * other socket.
 */
export interface SignedUsers extends AuthServer {
  /**
   * A connected pusher-js client of the app, its channel authorization and
   * user authentication pointed at this endpoint; `on`: another node or
   * cluster port than the one the users were started for; `signIn`: signs
   * in (`client.signin()`) before answering.
   */
  client(user?: string, options?: { info?: Record<string, unknown>; on?: PusherHerald | number; signIn?: boolean }): Promise<{ c: PusherJs; socketId: string }>;
}

/** Starts the auth endpoint of `app` on `herald` (a test server, or a cluster's port); close it with `close()`. */
export async function startSignedUsers(herald: PusherHerald | number, app: TestApp): Promise<SignedUsers> {
  const who = new Map<string, { user_id: string; user_info?: Record<string, unknown> }>();
  const auth = await startAuthServer(
    serverSdk(herald, app),
    (socketId) => who.get(socketId) ?? { user_id: 'anonymous' },
    (socketId) => ({ id: who.get(socketId)?.user_id ?? 'anonymous' }),
  );
  return {
    ...auth,
    async client(user, options = {}) {
      const on = options.on ?? herald;
      const c = pusherClientOnPort(typeof on === 'number' ? on : on.server.port, app.key, {
        channelAuthorization: { endpoint: auth.channelUrl, transport: 'ajax' },
        userAuthentication: { endpoint: auth.userUrl, transport: 'ajax' },
      });
      const socketId = await connected(c);
      if (user !== undefined) who.set(socketId, { user_id: user, ...(options.info === undefined ? {} : { user_info: options.info }) });
      if (options.signIn === true) {
        c.signin();
        await c.user.signinDonePromise;
      }
      return { c, socketId };
    },
  };
}

/** A raw protocol 7 client: frames as parsed JSON (with `data` parsed when it is a JSON string). */
export class RawPusher {
  readonly ws: WebSocket;
  readonly frames: any[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  #waiters: (() => void)[] = [];

  constructor(url: string, options: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, options);
    this.ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (typeof frame.data === 'string') {
        try {
          frame.data = JSON.parse(frame.data);
        } catch {
          // a plain string
        }
      }
      this.frames.push(frame);
      for (const waiter of this.#waiters.splice(0)) waiter();
    });
    this.ws.on('error', () => undefined);
    this.closed = new Promise((resolve) => this.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The first frame (from `from` on) matching, waiting for it. */
  async next(match: (frame: any) => boolean, timeoutMs = 5000, from = 0): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.slice(from).find(match);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching frame; got ${JSON.stringify(this.frames).slice(0, 500)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  event(name: string, timeoutMs?: number): Promise<any> {
    return this.next((frame) => frame.event === name, timeoutMs);
  }

  /** Waits for pusher:connection_established; answers the socket id. */
  async established(): Promise<string> {
    return (await this.event('pusher:connection_established')).data.socket_id;
  }

  close(): void {
    this.ws.terminate();
  }
}
