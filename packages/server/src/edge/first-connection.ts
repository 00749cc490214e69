/**
 * A connection layer installed at a server's first connection instead of at
 * start: what it loads (a module, a WebAssembly build) then costs the idle
 * process nothing until a client comes.
 */
import type { Server } from 'node:net';
import type { Socket } from 'node:net';

/**
 * At the server's first connection, runs `load` once; its answer (a
 * synchronous install, or undefined to stay as is) runs before any
 * connection is handed on. Guarantees: the connections that arrive while
 * `load` runs wait, paused, and reach the server's `connection` listeners
 * (those it had when this was called, plus whatever the install puts in
 * front of them) in their order of arrival, after the install; none is
 * dropped (one its client closed meanwhile is skipped); a `load` that throws
 * is reported to `failed` and the server stays as it was. Call it after
 * every other `connection` listener is on: one added later would see each
 * held connection twice.
 */
export function installAtFirstConnection(server: Server, load: () => Promise<(() => void) | undefined>, failed: (error: unknown) => void): void {
  const listeners = server.listeners('connection') as ((socket: Socket) => void)[];
  const waiting: Socket[] = [];
  const finish = (install: (() => void) | undefined): void => {
    server.removeListener('connection', hold);
    for (const listener of listeners) server.on('connection', listener);
    install?.();
    for (const socket of waiting.splice(0)) {
      if (socket.destroyed) continue;
      // resume() lets the bytes read meanwhile flow on the next tick, after the listeners below attached theirs.
      socket.resume();
      server.emit('connection', socket);
    }
  };
  const hold = (socket: Socket): void => {
    socket.pause();
    waiting.push(socket);
    if (waiting.length > 1) return;
    load().then(finish, (error: unknown) => {
      failed(error);
      finish(undefined);
    });
  };
  server.removeAllListeners('connection');
  server.on('connection', hold);
}
