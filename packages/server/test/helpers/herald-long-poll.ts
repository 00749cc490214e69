/**
 * A long-polling client for integration tests (docs/protocol.md, "Long
 * polling"): open, poll with the last seq, commands by POST with the
 * `Herald-Session` header, close.
 */
import assert from 'node:assert/strict';
import { http, WAIT_MS, type HttpAnswer, type Json } from './herald-ws.ts';

export class LongPollSession {
  readonly url: string;
  readonly session: string;
  /** Seq of the last message received. */
  seq: number;
  /** Cursor of the last answer. */
  cursor: string;
  /** Every message received (open answer and polls), in order. */
  readonly messages: Json[] = [];
  #nextId = 1;

  constructor(url: string, opened: Json) {
    this.url = url;
    this.session = opened.session;
    this.seq = opened.seq;
    this.cursor = opened.cursor;
    this.messages.push(...opened.messages);
  }

  /** Opens a session; fails the test unless the answer is 200 with a session. */
  static async open(url: string, body: Record<string, unknown>): Promise<LongPollSession> {
    const answer = await http(`${url}/connection/poll/open`, { body });
    assert.equal(answer.status, 200, `poll/open answered ${answer.status} ${answer.text}`);
    assert.equal(typeof answer.body.session, 'string', `no session in ${answer.text}`);
    assert.ok(Array.isArray(answer.body.messages), `no messages in ${answer.text}`);
    return new LongPollSession(url, answer.body);
  }

  /** One raw poll with an explicit seq (does not update state). */
  rawPoll(seq: number, session: string = this.session): Promise<HttpAnswer> {
    return http(`${this.url}/connection/poll`, { headers: { 'herald-session': session }, body: { seq } });
  }

  /** Polls with the current seq and records the answer. */
  async poll(): Promise<Json[]> {
    const answer = await this.rawPoll(this.seq);
    assert.equal(answer.status, 200, `poll answered ${answer.status} ${answer.text}`);
    const messages: Json[] = answer.body.messages;
    assert.ok(Array.isArray(messages), `poll answer without messages: ${answer.text}`);
    if (messages.length > 0) {
      assert.ok(answer.body.seq > this.seq, `seq did not grow: ${this.seq} -> ${answer.body.seq}`);
    }
    this.seq = answer.body.seq;
    if (typeof answer.body.cursor === 'string') this.cursor = answer.body.cursor;
    this.messages.push(...messages);
    return messages;
  }

  /** Polls until `check` over all received messages returns a value. */
  async pollUntil<T>(check: (all: Json[]) => T | undefined, what: string, timeoutMs = WAIT_MS): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = check(this.messages);
      if (value !== undefined) return value;
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}; messages: ${JSON.stringify(this.messages.slice(-8))}`);
      }
      await this.poll();
    }
  }

  publications(channel: string): Json[] {
    return this.messages.filter((m) => m.push === 'publication' && m.channel === channel);
  }

  /** Polls until a publication whose data equals `marker` arrives; returns the channel's publications up to it. */
  waitMarker(channel: string, marker: unknown): Promise<Json[]> {
    const text = JSON.stringify(marker);
    return this.pollUntil(() => {
      const list = this.publications(channel);
      const index = list.findIndex((p) => JSON.stringify(p.data) === text);
      return index === -1 ? undefined : list.slice(0, index + 1);
    }, `marker ${text} on ${channel}`);
  }

  /** POST /connection/command with raw body and session (defaults to this session). */
  rawCommand(body: unknown, session: string | null = this.session, headers: Record<string, string> = {}): Promise<HttpAnswer> {
    return http(`${this.url}/connection/command`, {
      headers: session === null ? headers : { 'herald-session': session, ...headers },
      body,
    });
  }

  /** Sends one command; returns its reply. */
  async request(method: string, params?: unknown): Promise<Json> {
    const id = this.#nextId++;
    const command: Record<string, unknown> = { id, method };
    if (params !== undefined) command['params'] = params;
    const answer = await this.rawCommand(command);
    assert.equal(answer.status, 200, `command ${method} answered ${answer.status} ${answer.text}`);
    assert.ok(Array.isArray(answer.body) && answer.body.length === 1, `expected one reply, got ${answer.text}`);
    const reply = answer.body[0];
    assert.equal(reply.id, id);
    return reply;
  }

  async call(method: string, params?: unknown): Promise<Json> {
    const reply = await this.request(method, params);
    assert.equal(reply.error, undefined, `${method} failed: ${JSON.stringify(reply.error)}`);
    return reply.result;
  }

  close(): Promise<HttpAnswer> {
    return http(`${this.url}/connection/close`, { method: 'POST', headers: { 'herald-session': this.session } });
  }
}
