/**
 * How `herald apps` tells running servers at once that it changed an app,
 * as the console does with the `apps_changed` control command
 * (docs/pusher.md, "Apps"). The store's version, polled every
 * `apps.pollIntervalMs`, stays the safety net for a notice that is lost.
 *
 * - Redis engine: the CLI publishes `apps_changed` on the engine's control
 *   topic (broker/redis-engine.ts, publishControlCommand), the pipe the
 *   console's notice takes: every node and cluster worker gets it.
 * - sqlite engine: no process but the one that owns the state file (the
 *   server, or the cluster primary) is on its control pipe. After its
 *   transaction commits, the CLI writes `<stateDir>/notices/apps-changed`;
 *   the owner watches that directory (a directory of its own, so the state
 *   file's writes wake nobody) and reloads its apps; a cluster primary also
 *   sends `apps_changed` to its workers.
 * - memory engine: `herald apps` cannot reach it (the console can).
 *
 * Guarantees: a notice is written only after the change is committed, so
 * a reload it causes sees the change; writing or watching never throws (a
 * failure leaves the change to the next poll, and the watcher's failure is
 * reported once through `onError`); notices that come in a burst are one
 * reload.
 */
import { mkdirSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';

/** The directory of notices to the server, in the state directory. */
function noticeDir(stateDir: string): string {
  return join(stateDir, 'notices');
}

const APPS_NOTICE = 'apps-changed';

/** Notices closer than this are one reload (a write is two events: truncate and write). */
const COALESCE_MS = 20;

/** Writes the apps notice (the app's id in it, for people); false when it could not be written. */
export function writeAppsNotice(stateDir: string, id: string): boolean {
  try {
    const dir = noticeDir(stateDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, APPS_NOTICE), `${id}\n`, { mode: 0o600 });
    return true;
  } catch {
    return false;
  }
}

/**
 * Calls `onNotice` when `herald apps` wrote a notice beside the state
 * file; undefined (after `onError`) when the directory cannot be watched.
 */
export function watchAppsNotices(stateDir: string, onNotice: () => void, onError: (error: unknown) => void): { close(): void } | undefined {
  let watcher: FSWatcher;
  let timer: NodeJS.Timeout | undefined;
  try {
    const dir = noticeDir(stateDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    watcher = watch(dir, { persistent: false }, (_event, filename) => {
      // Some platforms do not say which file: any event may be the notice.
      if ((filename !== null && filename !== APPS_NOTICE) || timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        onNotice();
      }, COALESCE_MS);
      timer.unref();
    });
  } catch (error) {
    onError(error);
    return undefined;
  }
  let failed = false;
  watcher.on('error', (error) => {
    if (failed) return;
    failed = true;
    onError(error);
  });
  return {
    close: () => {
      clearTimeout(timer);
      watcher.close();
    },
  };
}
