/**
 * SECURITY-TESTS 42: the Pusher socket. Channel auth signed for another
 * socket id or channel, presence channel_data not matching its signature,
 * client events on a public channel or above the rate, a subscription to
 * another app's channel, a user sign-in with forged user_data: each refused
 * with Pusher's codes, and nothing reaches the other subscribers. Also:
 * a wrong app key on the socket, oversized and malformed messages, and no
 * answer carries a secret. Signatures here are made by an implementation of
 * Pusher's rules written in this file (independent of the server's); the
 * comparison itself is `crypto.timingSafeEqual` (pusher/channel-auth.ts):
 * timing is not asserted in tests.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { unique } from '../helpers/herald-ws.ts';
import { RawPusher, startPusherHerald, testApp, type PusherHerald, type TestApp } from '../helpers/pusher-socket.ts';
import { encodePusherData } from '../../src/pusher/pusher-publication.ts';
import { channelPrefixOf } from '../../src/apps/apps.ts';

const hmac = (secret: string, text: string) => createHmac('sha256', secret).update(text).digest('hex');

describe('SECURITY-TESTS 42: Pusher sockets', { timeout: 60000 }, () => {
  let h: PusherHerald;
  const a = testApp('alpha', { clientEvents: true, limits: { clientEventsPerSecond: 5, maxEventPayloadBytes: 128 } });
  const b = testApp('beta', { clientEvents: true });
  const opened: RawPusher[] = [];

  before(async () => {
    h = await startPusherHerald([a, b]);
  });
  afterEach(() => {
    for (const r of opened.splice(0)) r.close();
  });
  after(async () => {
    await h.close();
  });

  async function connect(app: TestApp = a): Promise<[RawPusher, string]> {
    const r = new RawPusher(h.appUrl(app.key));
    opened.push(r);
    return [r, await r.established()];
  }

  function auth(app: TestApp, text: string): string {
    return `${app.key}:${hmac(app.secret, text)}`;
  }

  /** Subscribes with a correct signature; resolves at subscription_succeeded. */
  async function join(r: RawPusher, socketId: string, channel: string, app: TestApp = a, channelData?: string): Promise<void> {
    const text = channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
    const from = r.frames.length;
    r.send({ event: 'pusher:subscribe', data: { channel, auth: auth(app, text), ...(channelData === undefined ? {} : { channel_data: channelData }) } });
    await r.next((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === channel, 5000, from);
  }

  /** Sends, and resolves with the first pusher:error or pusher:subscription_error after it. */
  async function refusal(r: RawPusher, frame: unknown): Promise<any> {
    const from = r.frames.length;
    r.send(frame);
    return r.next((f) => f.event === 'pusher:error' || f.event === 'pusher:subscription_error', 5000, from);
  }

  /** A publication into an app's channel, as the HTTP API makes it. */
  async function trigger(app: TestApp, channel: string, event: string, data: string): Promise<void> {
    const node = h.server.node;
    const internal = (app.id === a.id ? '' : channelPrefixOf(app.id)) + channel;
    await node.publish({ channel: internal, namespace: '', options: node.rules.namespaceOptions('')! }, encodePusherData({ event, data }), undefined, 'api');
  }

  /** A round trip: everything the server sent before the pong has arrived. */
  async function settle(r: RawPusher): Promise<void> {
    const from = r.frames.length;
    r.send({ event: 'pusher:ping', data: {} });
    await r.next((f) => f.event === 'pusher:pong', 5000, from);
  }

  test('channel auth signed for another socket id or another channel is refused (401), and the refused socket gets nothing', async () => {
    const channel = unique('private-vault');
    const [victim, victimId] = await connect();
    await join(victim, victimId, channel);
    const [mallory, malloryId] = await connect();
    // A signature the auth endpoint made for the victim's socket id, replayed on another socket.
    const stolen = await refusal(mallory, { event: 'pusher:subscribe', data: { channel, auth: auth(a, `${victimId}:${channel}`) } });
    assert.equal(stolen.event, 'pusher:subscription_error');
    assert.equal(stolen.data.status, 401);
    // A signature for another channel of the same socket.
    const other = await refusal(mallory, { event: 'pusher:subscribe', data: { channel, auth: auth(a, `${malloryId}:private-open`) } });
    assert.equal(other.data.status, 401);
    await trigger(a, channel, 'secret', 'for the victim');
    await victim.event('secret');
    await settle(mallory);
    assert.equal(mallory.frames.filter((f) => f.event === 'secret').length, 0);
  });

  test('presence channel_data that does not match its signature is refused; no member_added reaches the members', async () => {
    const channel = unique('presence-board');
    const [member, memberId] = await connect();
    await join(member, memberId, channel, a, JSON.stringify({ user_id: 'member' }));
    const [mallory, malloryId] = await connect();
    const signed = JSON.stringify({ user_id: 'mallory' });
    const forged = JSON.stringify({ user_id: 'ceo', user_info: { role: 'admin' } });
    const answer = await refusal(mallory, { event: 'pusher:subscribe', data: { channel, auth: auth(a, `${malloryId}:${channel}:${signed}`), channel_data: forged } });
    assert.equal(answer.data.status, 401);
    // Without channel_data at all, with a private-style signature.
    const bare = await refusal(mallory, { event: 'pusher:subscribe', data: { channel, auth: auth(a, `${malloryId}:${channel}`) } });
    assert.equal(bare.data.status, 400);
    await settle(member);
    assert.equal(member.frames.filter((f) => f.event === 'pusher_internal:member_added').length, 0);
  });

  test('client events on a public channel, on a channel not subscribed, oversized, or above the rate: 4301, nothing reaches the others', async () => {
    const open = unique('lobby');
    const priv = unique('private-room');
    const [sender, senderId] = await connect();
    const [receiver, receiverId] = await connect();
    for (const r of [sender, receiver]) r.send({ event: 'pusher:subscribe', data: { channel: open } });
    await sender.event('pusher_internal:subscription_succeeded');
    await receiver.event('pusher_internal:subscription_succeeded');
    assert.equal((await refusal(sender, { event: 'client-x', channel: open, data: {} })).data.code, 4301);
    assert.equal((await refusal(sender, { event: 'client-x', channel: priv, data: {} })).data.code, 4301);
    await join(sender, senderId, priv);
    await join(receiver, receiverId, priv);
    assert.equal((await refusal(sender, { event: 'client-x', channel: priv, data: { pad: 'x'.repeat(200) } })).data.code, 4301);
    const burst = 20;
    const from = sender.frames.length;
    for (let i = 0; i < burst; i++) sender.send({ event: 'client-n', channel: priv, data: { i } });
    await settle(sender);
    const refused = sender.frames.slice(from).filter((f) => f.event === 'pusher:error' && f.data.code === 4301).length;
    // 5 per second: a burst spans at most two seconds, so at least 10 of 20 are refused.
    assert.ok(refused >= 10, `refused ${refused}`);
    await settle(receiver);
    await settle(receiver);
    assert.equal(receiver.frames.filter((f) => f.event === 'client-x').length, 0);
    assert.equal(receiver.frames.filter((f) => f.event === 'client-n').length, burst - refused);
  });

  test("another app's channel: its key does not sign for this app, its channels are not reachable by name, events never cross", async () => {
    const channel = unique('private-shared');
    const [inA, inAId] = await connect(a);
    await join(inA, inAId, channel, a);
    const [inB, inBId] = await connect(b);
    // B's connection with A's valid signature for B's socket id: A's key is not B's.
    const crossKey = await refusal(inB, { event: 'pusher:subscribe', data: { channel, auth: auth(a, `${inBId}:${channel}`) } });
    assert.equal(crossKey.data.status, 401);
    // The internal name of A's channel as seen from B (apps' prefixes use `~`): not a channel name.
    const internalName = await refusal(inB, { event: 'pusher:subscribe', data: { channel: `${channelPrefixOf(a.id)}${channel}` } });
    assert.equal(internalName.data.status, 400);
    const hash = await refusal(inB, { event: 'pusher:subscribe', data: { channel: `#online-alice` } });
    assert.equal(hash.data.status, 400);
    // Same name in B, properly signed by B: its own channel.
    await join(inB, inBId, channel, b);
    await trigger(a, channel, 'for-a', 'a only');
    await inA.event('for-a');
    await trigger(b, channel, 'for-b', 'b only');
    await inB.event('for-b');
    await settle(inA);
    await settle(inB);
    assert.equal(inB.frames.filter((f) => f.event === 'for-a').length, 0);
    assert.equal(inA.frames.filter((f) => f.event === 'for-b').length, 0);
    // Client events of B never reach A.
    inB.send({ event: 'client-hello', channel, data: {} });
    await settle(inB);
    await settle(inA);
    assert.equal(inA.frames.filter((f) => f.event === 'client-hello').length, 0);
  });

  test('a sign-in with forged user_data is refused (4302) and gives no server-to-user channel', async () => {
    const [r, socketId] = await connect();
    const signedData = JSON.stringify({ id: 'mallory' });
    const forged = JSON.stringify({ id: 'admin' });
    assert.equal((await refusal(r, { event: 'pusher:signin', data: { auth: auth(a, `${socketId}::user::${signedData}`), user_data: forged } })).data.code, 4302);
    assert.equal((await refusal(r, { event: 'pusher:signin', data: { auth: auth(b, `${socketId}::user::${forged}`), user_data: forged } })).data.code, 4302);
    const denied = await refusal(r, { event: 'pusher:subscribe', data: { channel: '#server-to-user-admin' } });
    assert.equal(denied.data.status, 401);
    assert.equal(r.frames.filter((f) => f.event === 'pusher:signin_success').length, 0);
  });

  test('a wrong app key, malformed, deep, binary and oversized messages: Pusher codes, no secret or stack in any answer', async () => {
    const wrong = new RawPusher(h.appUrl(`${a.key}x`));
    opened.push(wrong);
    assert.equal((await wrong.event('pusher:error')).data.code, 4001);
    assert.equal((await wrong.closed).code, 4001);
    const [r] = await connect();
    for (const bad of ['{', '[]', '"text"', JSON.stringify({ event: 42 }), '['.repeat(200) + ']'.repeat(200), JSON.stringify({ event: 'pusher:nope' })]) {
      assert.equal((await refusal(r, bad)).data.code, 4300, bad.slice(0, 40));
    }
    const beforeBinary = r.frames.length;
    r.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await r.next((f) => f.event === 'pusher:error' && f.data.code === 4300, 5000, beforeBinary);
    await settle(r);
    r.send({ event: 'pusher:subscribe', data: { channel: 'x', pad: 'y'.repeat(70000) } });
    assert.equal((await r.closed).code, 1009);
    const everything = JSON.stringify([...r.frames, ...wrong.frames]);
    for (const secret of [a.secret, b.secret]) assert.equal(everything.includes(secret), false);
    assert.equal(/\bat .+:\d+:\d+/.test(everything), false, 'a stack trace in an answer');
  });
});
