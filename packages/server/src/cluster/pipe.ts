/**
 * The pipe between the primary and one worker: typed messages, batched into
 * one envelope per event-loop turn, in order, until either side closes. The
 * carrier is node:cluster's IPC channel in production and a MessagePort in
 * the in-process tests; nothing above this file knows which.
 */
import type { Worker as ClusterWorker } from 'node:cluster';
import type { MessagePort } from 'node:worker_threads';
import { isEnvelope, type Envelope } from './ipc-messages.ts';

export interface Pipe<In, Out> {
  /** Queues a message; dropped silently once the pipe is closed. */
  send(message: Out): void;
  /** Set once, before messages are expected. */
  onMessage(handler: (message: In) => void): void;
  /** Called once when the pipe closes (either side, or the carrier died). */
  onClose(handler: () => void): void;
  readonly closed: boolean;
  /** Flushes what is queued, then closes. */
  close(): void;
}

/** What a carrier must do: post one value (`sent` once it left this process), deliver values, report its end. */
export interface Carrier {
  post(value: unknown, sent?: () => void): void;
  listen(onValue: (value: unknown) => void, onEnd: () => void): void;
  end(): void;
}

export class BatchingPipe<In, Out> implements Pipe<In, Out> {
  readonly #carrier: Carrier;
  #queue: Out[] = [];
  #scheduled = false;
  #closed = false;
  #handler: ((message: In) => void) | undefined;
  #closeHandlers: (() => void)[] = [];
  /** Messages that arrived before a handler was set. */
  #early: In[] = [];

  constructor(carrier: Carrier) {
    this.#carrier = carrier;
    carrier.listen(
      (value) => {
        if (!isEnvelope<In>(value)) return;
        for (const message of value.batch) {
          if (this.#handler === undefined) this.#early.push(message);
          else this.#handler(message);
        }
      },
      () => this.#ended(),
    );
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(message: Out): void {
    if (this.#closed) return;
    this.#queue.push(message);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#flush());
  }

  #flush(sent?: () => void): void {
    this.#scheduled = false;
    if (this.#queue.length === 0 || this.#closed) {
      sent?.();
      return;
    }
    const envelope: Envelope<Out> = { herald: 1, batch: this.#queue };
    this.#queue = [];
    try {
      this.#carrier.post(envelope, sent);
    } catch {
      this.#ended();
      sent?.();
    }
  }

  /** Sends what is queued now; resolves once it has left this process (before an exit). */
  flushed(): Promise<void> {
    return new Promise((resolve) => this.#flush(resolve));
  }

  onMessage(handler: (message: In) => void): void {
    this.#handler = handler;
    const early = this.#early;
    this.#early = [];
    for (const message of early) handler(message);
  }

  onClose(handler: () => void): void {
    if (this.#closed) handler();
    else this.#closeHandlers.push(handler);
  }

  close(): void {
    if (this.#closed) return;
    this.#flush();
    this.#ended();
    this.#carrier.end();
  }

  #ended(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    const handlers = this.#closeHandlers;
    this.#closeHandlers = [];
    for (const handler of handlers) handler();
  }
}

/** The worker's end of node:cluster IPC. */
export function processCarrier(proc: NodeJS.Process = process): Carrier {
  return {
    post(value, sent) {
      if (proc.send === undefined || !proc.connected) throw new Error('no IPC channel');
      proc.send(value as object, undefined, {}, () => sent?.());
    },
    listen(onValue, onEnd) {
      proc.on('message', onValue);
      proc.once('disconnect', onEnd);
    },
    end() {
      // The worker leaves by exiting; its channel closes with it.
    },
  };
}

/** The primary's end of one worker's IPC channel. */
export function clusterWorkerCarrier(worker: ClusterWorker): Carrier {
  return {
    post(value, sent) {
      if (!worker.isConnected()) throw new Error('worker disconnected');
      worker.send(value as object, undefined, () => sent?.());
    },
    listen(onValue, onEnd) {
      worker.on('message', onValue);
      worker.once('disconnect', onEnd);
      worker.once('exit', onEnd);
    },
    end() {
      // Ending is the worker's exit; the supervisor decides when.
    },
  };
}

/** One end of a MessageChannel (in-process tests and the contract suite). */
export function messagePortCarrier(port: MessagePort): Carrier {
  return {
    post(value, sent) {
      port.postMessage(value);
      sent?.();
    },
    listen(onValue, onEnd) {
      port.on('message', onValue);
      port.once('close', onEnd);
    },
    end() {
      port.close();
    },
  };
}
