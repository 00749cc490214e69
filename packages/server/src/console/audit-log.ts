/**
 * The audit log: who did what, when, from where, with what outcome. Every
 * console action, every sign-in (success or failure, locks), and admin
 * changes made by the CLI or the API are recorded in the console store
 * (admin-store.ts), kept `admin.console.auditRetentionDays`, readable and
 * exportable by owners through the console.
 */
import type { AdminStore, AuditInput } from './admin-store.ts';

export interface AuditLog {
  /**
   * Records one entry. Never throws and never blocks the caller: the write
   * happens in the background; a failure is logged (the action itself is
   * not undone).
   */
  record(entry: AuditInput): void;
}

export interface StoreAuditLogOptions {
  readonly now?: () => number;
  readonly onError?: (error: unknown, entry: AuditInput) => void;
}

/** Strings in entries are cut to this many characters (the store holds what an attacker typed). */
const MAX_FIELD = 256;

function cut(text: string | undefined): string | undefined {
  return text === undefined || text.length <= MAX_FIELD ? text : text.slice(0, MAX_FIELD) + '…';
}

export function createAuditLog(store: AdminStore, options: StoreAuditLogOptions = {}): AuditLog & { flush(): Promise<void> } {
  const now = options.now ?? Date.now;
  let pending: Promise<void> = Promise.resolve();
  return {
    record(entry) {
      const clean: AuditInput = { ...entry, actor: cut(entry.actor) ?? '', action: cut(entry.action) ?? '', target: cut(entry.target), address: cut(entry.address) };
      const at = now();
      const write = store.appendAudit(clean, at).catch((error: unknown) => options.onError?.(error, clean));
      pending = pending.then(() => write);
    },
    /** Resolves when the entries recorded so far are written (tests, shutdown). */
    flush: () => pending,
  };
}
