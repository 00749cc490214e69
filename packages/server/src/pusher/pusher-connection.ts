/**
 * One Pusher protocol 7 connection (docs/pusher.md, "The socket"): the `ws`
 * socket class of the endpoint, carrying the connection's state and
 * handling its own events in `emit` (as transports/websocket.ts does: an
 * idle connection holds no listeners or closures of ours), and the
 * messages a client sends: pusher:ping, pusher:subscribe,
 * pusher:unsubscribe, pusher:signin and client-* events.
 */
import type { Duplex } from 'node:stream';
import { WebSocket } from 'ws';
import { readJson } from '@herald/protocol/json';
import type { ClientInfo } from '@herald/protocol';
import type { App } from '../apps/apps.ts';
import { encodeServerTextFrameOf } from '../util/websocket-frame.ts';
import { pusherErrorFrame, pusherErrors, subscriptionErrorFrame, type PusherErrorName, type SubscriptionErrorName } from './pusher-errors.ts';
import { channelSigned, verifyAuth } from './channel-auth.ts';
import { channelKind, type PusherChannel, type PusherSubscriber } from './pusher-channels.ts';
import { encodePusherData, excludeSocket } from './pusher-publication.ts';
import { counted } from './subscription-counts.ts';
import type { PusherContext } from './pusher-context.ts';
import { diagnostics } from '../observability/diagnostics.ts';

const OPEN = 1;

/** One subscription of a connection. */
interface Subscribed {
  readonly tap: PusherChannel;
  /** Presence channels: the member this connection is (its info in the channel). */
  readonly member: ClientInfo | undefined;
}

export class PusherSocket extends WebSocket implements PusherSubscriber {
  context!: PusherContext;
  app!: App;
  socketId = '';
  /** The upgraded TCP socket: frames built once go straight to it. */
  raw: Duplex | undefined = undefined;
  /** Subscribed (or subscribing: undefined) channels by app-local name. */
  readonly channels = new Map<string, Subscribed | undefined>();
  /** The signed-in user (pusher:signin), or undefined. */
  userId: string | undefined = undefined;
  /** Watchlist of the signed-in user (user ids), or undefined. */
  watchlist: readonly string[] | undefined = undefined;
  lastActivity = 0;
  /** When the server's pusher:ping went out unanswered (0: none). */
  pingSentAt = 0;
  /** Messages in the current second, and that second. */
  messages = 0;
  clientEvents = 0;
  second = 0;
  closing = false;

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    switch (event) {
      case 'message':
        onMessage(this, args[0] as Buffer, args[1] as boolean);
        return true;
      case 'pong':
        this.lastActivity = this.context.now();
        this.pingSentAt = 0;
        return true;
      case 'error':
        // ws closes the socket itself (1002/1007/1009); 'close' follows.
        return true;
      case 'close':
        this.context.closed(this, args[0] as number);
        return true;
      default:
        return super.emit(event, ...args);
    }
  }

  writeFrame(frame: Buffer): void {
    const raw = this.raw;
    if (this.closing || raw === undefined || this.readyState !== OPEN) return;
    if (this.bufferedAmount > this.context.config.limits.outboundQueueBytes) {
      // Not reading: a close handshake would queue behind the backlog (as the native protocol's "slow").
      this.closing = true;
      this.terminate();
      return;
    }
    raw.write(frame);
  }

  sendText(text: string): void {
    this.writeFrame(encodeServerTextFrameOf(text));
  }

  /** Sends a registry error; closes with its code when the entry says so. */
  fail(name: PusherErrorName): void {
    if (this.closing) return;
    this.sendText(pusherErrorFrame(name));
    const entry = pusherErrors[name];
    if (entry.close) this.shut(entry.code, entry.message);
  }

  /** Closes with a code; a peer that does not answer the close handshake is cut after the close grace. */
  shut(code: number, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    if (this.readyState !== OPEN) return;
    this.close(code, reason.slice(0, 120));
    const timer = setTimeout(() => this.terminate(), this.context.config.limits.closeGraceMs);
    timer.unref();
    this.once('close', () => clearTimeout(timer));
  }

  subscriptionError(channel: string, name: SubscriptionErrorName): void {
    this.sendText(subscriptionErrorFrame(channel, name));
  }
}

function onMessage(socket: PusherSocket, data: Buffer, isBinary: boolean): void {
  if (socket.closing) return;
  const context = socket.context;
  const now = context.now();
  socket.lastActivity = now;
  socket.pingSentAt = 0;
  const second = Math.floor(now / 1000);
  if (second !== socket.second) {
    socket.second = second;
    socket.messages = 0;
    socket.clientEvents = 0;
  }
  if (++socket.messages > context.config.limits.inboundHardPerSecond) return socket.fail('flooding');
  if (isBinary) return socket.fail('bad_message');
  const read = readJson(data.toString('utf8'), context.config.limits.maxJsonDepth);
  if (!read.ok || typeof read.value !== 'object' || read.value === null || Array.isArray(read.value)) return socket.fail('bad_message');
  const message = read.value as Record<string, unknown>;
  const event = message['event'];
  if (typeof event !== 'string') return socket.fail('bad_message');
  switch (event) {
    case 'pusher:ping':
      socket.sendText('{"event":"pusher:pong","data":"{}"}');
      return;
    case 'pusher:pong':
      return;
    case 'pusher:subscribe':
      void subscribe(socket, message['data']).catch((error: unknown) => context.logger.warn({ err: error }, 'pusher subscribe failed'));
      return;
    case 'pusher:unsubscribe': {
      const body = message['data'];
      const channel = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)['channel'] : undefined;
      if (typeof channel === 'string') void unsubscribe(socket, channel);
      return;
    }
    case 'pusher:signin':
      context.users.signin(socket, message['data']);
      return;
    default:
      if (event.startsWith('client-')) return clientEvent(socket, event, message['channel'], message['data']);
      socket.fail('bad_message');
  }
}

async function subscribe(socket: PusherSocket, body: unknown): Promise<void> {
  if (typeof body !== 'object' || body === null) return socket.fail('bad_message');
  const params = body as Record<string, unknown>;
  const name = params['channel'];
  if (typeof name !== 'string') return socket.fail('bad_message');
  const app = socket.app;
  const context = socket.context;
  const kind = channelKind(name, app.limits.maxChannelNameLength);
  if (kind === undefined) return socket.subscriptionError(name.slice(0, 200), 'bad_channel');
  if (socket.channels.has(name)) {
    // Subscribed already (or subscribing): pusher-js does not ask twice; answer as Pusher does, with success.
    const subscribed = socket.channels.get(name);
    if (subscribed !== undefined && !kind.presence) socket.sendText(subscribed.tap.frame('pusher_internal:subscription_succeeded', '{}'));
    return;
  }
  if (socket.channels.size >= context.config.limits.maxChannelsPerConnection) return socket.subscriptionError(name, 'too_many_channels');
  let member: ClientInfo | undefined;
  if (kind.serverToUser !== undefined) {
    if (socket.userId !== kind.serverToUser) return socket.subscriptionError(name, 'not_signed_in');
  } else if (kind.signed) {
    const auth = params['auth'];
    if (typeof auth !== 'string' || auth === '') return socket.subscriptionError(name, 'auth_required');
    const channelData = params['channel_data'];
    if (kind.presence) {
      if (typeof channelData !== 'string') return socket.subscriptionError(name, 'bad_channel_data');
      if (!verifyAuth(app, auth, channelSigned(socket.socketId, name, channelData))) return socket.subscriptionError(name, 'bad_signature');
      const parsed = readJson(channelData, context.config.limits.maxJsonDepth);
      const value = parsed.ok ? parsed.value : undefined;
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return socket.subscriptionError(name, 'bad_channel_data');
      const record = value as Record<string, unknown>;
      const userId = record['user_id'];
      if ((typeof userId !== 'string' && typeof userId !== 'number') || String(userId) === '') return socket.subscriptionError(name, 'bad_channel_data');
      const userInfo = record['user_info'];
      if (userInfo !== undefined && Buffer.byteLength(JSON.stringify(userInfo)) > app.limits.maxPresenceMemberBytes) return socket.subscriptionError(name, 'member_too_large');
      member = { client: socket.socketId, user: String(userId), chan_info: userInfo };
    } else if (!verifyAuth(app, auth, channelSigned(socket.socketId, name, undefined))) {
      return socket.subscriptionError(name, 'bad_signature');
    }
  }
  socket.channels.set(name, undefined);
  const tap = context.acquire(app, name, kind);
  try {
    await tap.ready;
    if (member !== undefined && !tap.hasRoomFor(member.user, socket.app.limits.maxPresenceMembers)) {
      socket.channels.delete(name);
      context.release(tap);
      return socket.subscriptionError(name, 'presence_full');
    }
    if (member !== undefined) await context.node.addMember(tap.internal, member, true, true);
  } catch (error) {
    if (socket.channels.get(name) === undefined) socket.channels.delete(name);
    context.release(tap);
    context.logger.warn({ err: error, app: app.id }, 'pusher subscription failed');
    if (!socket.closing) socket.subscriptionError(name, 'unavailable');
    return;
  }
  if (socket.closing || !socket.channels.has(name)) {
    // Closed or unsubscribed meanwhile.
    if (member !== undefined) void context.node.removeMember(tap.internal, member, true, true).catch(() => undefined);
    context.release(tap);
    return;
  }
  socket.channels.set(name, { tap, member });
  tap.subscribers.set(socket, member?.user);
  context.release(tap);
  socket.sendText(tap.frame('pusher_internal:subscription_succeeded', member === undefined ? '{}' : tap.presenceData(member)));
  if (app.subscriptionCount && counted(kind)) tap.countWaiting.add(socket);
  if (kind.cache) await context.replayCache(socket, tap);
}

/** Leaves a channel (the client's pusher:unsubscribe, or the connection's close). */
export async function unsubscribe(socket: PusherSocket, name: string): Promise<void> {
  const subscribed = socket.channels.get(name);
  if (!socket.channels.delete(name) || subscribed === undefined) return;
  const tap = subscribed.tap;
  tap.subscribers.delete(socket);
  tap.countWaiting.delete(socket);
  const context = socket.context;
  try {
    if (subscribed.member !== undefined) await context.node.removeMember(tap.internal, subscribed.member, true, true);
  } catch (error) {
    context.logger.warn({ err: error, app: socket.app.id }, 'pusher presence leave failed');
  } finally {
    context.releaseIfEmpty(tap);
  }
}

function clientEvent(socket: PusherSocket, event: string, channel: unknown, data: unknown): void {
  const app = socket.app;
  const context = socket.context;
  const refuse = (name: 'client_event_refused' | 'client_event_rate' | 'client_event_too_large'): void => {
    if (diagnostics.pusherClientEvent.hasSubscribers) diagnostics.pusherClientEvent.publish({ node: context.node.id, app: app.id, outcome: 'refused' });
    socket.fail(name);
  };
  if (typeof channel !== 'string' || event.length > app.limits.maxEventNameLength) return refuse('client_event_refused');
  const subscribed = socket.channels.get(channel);
  if (!app.clientEvents || subscribed === undefined || !subscribed.tap.kind.signed || subscribed.tap.kind.encrypted) return refuse('client_event_refused');
  if (++socket.clientEvents > app.limits.clientEventsPerSecond) return refuse('client_event_rate');
  // The event's data as the HTTP API would count it: its JSON text.
  if (Buffer.byteLength(JSON.stringify(data) ?? '') > app.limits.maxEventPayloadBytes) return refuse('client_event_too_large');
  const userId = subscribed.member?.user;
  const text = encodePusherData({ event, data, userId });
  context.node.publish(context.resolved(subscribed.tap.internal), text, excludeSocket(socket.socketId), 'client').then(
    () => {
      if (diagnostics.pusherClientEvent.hasSubscribers) diagnostics.pusherClientEvent.publish({ node: context.node.id, app: app.id, outcome: 'accepted' });
      context.events?.clientEvent(app, channel, event, data, socket.socketId, userId);
    },
    (error: unknown) => context.logger.warn({ err: error, app: app.id }, 'pusher client event not published'),
  );
}
