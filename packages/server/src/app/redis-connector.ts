/**
 * ioredis's own connector (StandaloneConnector), with one fix: ioredis
 * listens for a single `error` per socket (`once`), and a TLS socket whose
 * handshake fails (a certificate not trusted, a client certificate
 * refused) can emit a second one (the server's alert). With no listener
 * left that second error is thrown at the process: an uncaught exception
 * instead of a refused connection (ioredis PRs #961/#962, not merged).
 * Here every socket keeps a listener of its own; ioredis still handles the
 * first error (reconnect, `error` event) as before.
 */
import standalone from 'ioredis/built/connectors/StandaloneConnector.js';
import type { ErrorEmitter } from 'ioredis/built/connectors/AbstractConnector.js';
import type { StandaloneConnectionOptions } from 'ioredis/built/connectors/StandaloneConnector.js';
import type { NetStream } from 'ioredis/built/types.js';

export class GuardedConnector extends standalone.default {
  /** ioredis hands a connector the client's options (ConnectorConstructor takes `unknown`). */
  constructor(options: unknown) {
    super(options as StandaloneConnectionOptions);
  }

  override async connect(onEvent: ErrorEmitter): Promise<NetStream> {
    const stream = await super.connect(onEvent);
    stream.on('error', () => {});
    return stream;
  }
}
