/**
 * Helpers for SDK tests: a client whose events are all recorded, and waits
 * on them. Timeouts only bound a hang; they assert nothing about speed.
 */
import { HeraldClient, type ClientOptions, type Subscription, type PublicationEvent, type SubscribedEvent, type UnsubscribedEvent, type JoinLeaveEvent, type SubscriptionErrorEvent } from '../src/index.ts';
import { waitUntil } from '../../server/test/helpers/rt-util.ts';

export interface RecordedClient {
  readonly client: HeraldClient;
  /** Every client event in order, as `[name, payload]`. */
  readonly events: [string, any][];
  waitFor(name: string, predicate?: (payload: any) => boolean, label?: string): Promise<any>;
  count(name: string): number;
}

export function recordedClient(options: ClientOptions): RecordedClient {
  const client = new HeraldClient({ reconnectDelayMs: 50, maxReconnectDelayMs: 200, ...options });
  const events: [string, any][] = [];
  for (const name of ['connecting', 'connected', 'disconnected', 'error'] as const) client.on(name, (payload) => events.push([name, payload]));
  return {
    client,
    events,
    count: (name) => events.filter(([n]) => n === name).length,
    async waitFor(name, predicate = () => true, label) {
      const found = await waitUntil(() => events.find(([n, p]) => n === name && predicate(p)), {
        timeoutMs: 15000,
        label: label ?? `client event ${name}`,
        describe: () => JSON.stringify(events),
      });
      return found[1];
    },
  };
}

export interface RecordedSubscription<T = unknown> {
  readonly sub: Subscription<T>;
  readonly publications: PublicationEvent<T>[];
  readonly subscribed: SubscribedEvent[];
  readonly unsubscribed: UnsubscribedEvent[];
  readonly joins: JoinLeaveEvent[];
  readonly leaves: JoinLeaveEvent[];
  readonly errors: SubscriptionErrorEvent[];
  waitForPublications(count: number): Promise<void>;
  waitForSubscribed(count?: number): Promise<SubscribedEvent>;
}

export function recordSubscription<T = unknown>(sub: Subscription<T>): RecordedSubscription<T> {
  const publications: PublicationEvent<T>[] = [];
  const subscribed: SubscribedEvent[] = [];
  const unsubscribed: UnsubscribedEvent[] = [];
  const joins: JoinLeaveEvent[] = [];
  const leaves: JoinLeaveEvent[] = [];
  const errors: SubscriptionErrorEvent[] = [];
  sub.on('publication', (p) => publications.push(p));
  sub.on('subscribed', (s) => subscribed.push(s));
  sub.on('unsubscribed', (u) => unsubscribed.push(u));
  sub.on('join', (j) => joins.push(j));
  sub.on('leave', (l) => leaves.push(l));
  sub.on('error', (e) => errors.push(e));
  const describe = () => JSON.stringify({ publications: publications.map((p) => p.offset), subscribed, unsubscribed, errors });
  return {
    sub,
    publications,
    subscribed,
    unsubscribed,
    joins,
    leaves,
    errors,
    async waitForPublications(count) {
      await waitUntil(() => publications.length >= count, { timeoutMs: 15000, label: `${count} publications on ${sub.channel}`, describe });
    },
    async waitForSubscribed(count = 1) {
      await waitUntil(() => subscribed.length >= count, { timeoutMs: 15000, label: `subscribed #${count} on ${sub.channel}`, describe });
      return subscribed[count - 1]!;
    },
  };
}
