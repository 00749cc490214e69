/**
 * A real HTTP server receiving a Pusher app's webhooks for tests, as a
 * backend built on the official `pusher` SDK does: every request is checked
 * with `pusher.webhook({headers, rawBody}).isValid()` (X-Pusher-Key,
 * X-Pusher-Signature over the raw body, content type application/json).
 * Only valid requests answered 2xx count as accepted.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import Pusher from 'pusher';

export interface PusherWebhookRequest {
  readonly rawBody: string;
  readonly headers: IncomingMessage['headers'];
  /** What the `pusher` SDK's verifier said. */
  readonly valid: boolean;
  readonly timeMs: number | undefined;
  readonly events: { name: string; channel?: string; user_id?: string; [key: string]: unknown }[];
}

export class PusherWebhookReceiver {
  readonly server: Server;
  readonly pusher: Pusher;
  readonly requests: PusherWebhookRequest[] = [];
  readonly accepted: PusherWebhookRequest[] = [];
  /** The status of request number n (0-based); 200 by default. */
  status: (n: number) => number;

  private constructor(app: { id: string; key: string; secret: string }, status: (n: number) => number) {
    this.pusher = new Pusher({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1' });
    this.status = status;
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const rawBody = Buffer.concat(chunks).toString('utf8');
        const webhook = this.pusher.webhook({ headers: req.headers as Record<string, string>, rawBody });
        const valid = webhook.isValid();
        const request: PusherWebhookRequest = {
          rawBody,
          headers: req.headers,
          valid,
          timeMs: valid ? webhook.getTime().getTime() : undefined,
          events: valid ? (webhook.getEvents() as unknown as PusherWebhookRequest['events']) : [],
        };
        const status = this.status(this.requests.length);
        this.requests.push(request);
        if (valid && status >= 200 && status < 300) this.accepted.push(request);
        res.writeHead(valid ? status : 401).end();
      });
    });
  }

  static async start(app: { id: string; key: string; secret: string }, status: (n: number) => number = () => 200): Promise<PusherWebhookReceiver> {
    const receiver = new PusherWebhookReceiver(app, status);
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}/pusher/webhooks`;
  }

  /** Events of the accepted requests, in arrival order. */
  events(): PusherWebhookRequest['events'] {
    return this.accepted.flatMap((request) => request.events);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
