/**
 * A real HTTP server that receives Herald's webhook batches for tests: it
 * verifies each request's signature with the keys it holds (as a backend
 * would), records the events of the batches it accepted, and answers as the
 * test's `behave` says (status, delay, never, redirect).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { verifySignature, type SigningKey } from '../../src/webhooks/signing.ts';

export interface ReceivedBatch {
  readonly body: string;
  readonly headers: IncomingMessage['headers'];
  /** Which of the receiver's keys verified it (ids). */
  readonly verifiedBy: string[];
  readonly events: { id: string; name: string; channel?: string; user?: string; [key: string]: unknown }[];
}

/** What to do with request number `n` (0-based): answer `status` (with headers), or `hang` (never answer). */
export type Behaviour = (n: number, req: IncomingMessage) => { status: number; headers?: Record<string, string> } | 'hang' | { write: (res: ServerResponse) => void };

export class WebhookReceiver {
  readonly server: Server;
  readonly keys: readonly SigningKey[];
  /** Every request, accepted or not. */
  readonly requests: ReceivedBatch[] = [];
  /** Batches answered 2xx. */
  readonly accepted: ReceivedBatch[] = [];
  behave: Behaviour;
  readonly #hanging = new Set<ServerResponse>();

  private constructor(keys: readonly SigningKey[], behave: Behaviour) {
    this.keys = keys;
    this.behave = behave;
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const header = req.headers['herald-webhook-signature'];
        const verifiedBy = keys.filter((key) => verifySignature(body, typeof header === 'string' ? header : undefined, key)).map((key) => key.id);
        const batch: ReceivedBatch = { body, headers: req.headers, verifiedBy, events: (JSON.parse(body) as { events: ReceivedBatch['events'] }).events };
        const n = this.requests.length;
        this.requests.push(batch);
        const answer = this.behave(n, req);
        if (answer === 'hang') {
          this.#hanging.add(res);
          return;
        }
        if ('write' in answer) {
          answer.write(res);
          return;
        }
        if (answer.status >= 200 && answer.status < 300 && verifiedBy.length > 0) this.accepted.push(batch);
        res.writeHead(answer.status, answer.headers).end();
      });
    });
  }

  static async start(keys: readonly SigningKey[], behave: Behaviour = () => ({ status: 204 })): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver(keys, behave);
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}/hooks`;
  }

  /** Events of the accepted batches, in arrival order. */
  events(): ReceivedBatch['events'] {
    return this.accepted.flatMap((batch) => batch.events);
  }

  async close(): Promise<void> {
    for (const res of this.#hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
