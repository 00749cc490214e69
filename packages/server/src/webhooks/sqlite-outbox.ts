/**
 * The sqlite engine's webhook outbox: the `webhook_outbox` table of the
 * state file (store/sqlite-store.ts, migration 9). A row is committed
 * before its first delivery attempt, so events survive a crash or SIGKILL
 * and are sent after the restart. Dead letters are rows with `dead_at` set;
 * `herald webhooks list-dead` and `replay` read and change them beside the
 * running server (WAL; the server's dispatcher sees replayed rows on its
 * next poll).
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { writeTransaction } from '../store/sqlite-store.ts';
import type { DeadEntry, NewEntry, OutboxEntry, WebhookOutbox } from './outbox.ts';

interface Row {
  seq: number;
  endpoint: string;
  event_id: string;
  event: string;
  attempts: number;
  next_at: number;
  created_at: number;
  dead_at: number | null;
  reason: string | null;
}

export class SqliteOutbox implements WebhookOutbox {
  readonly #db: DatabaseSync;
  readonly #insert: StatementSync;
  readonly #head: StatementSync;
  readonly #delete: StatementSync;
  readonly #retry: StatementSync;
  readonly #bury: StatementSync;
  readonly #counts: StatementSync;
  readonly #endpoints: StatementSync;
  readonly #byEndpoint: StatementSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#insert = db.prepare('INSERT INTO webhook_outbox (endpoint, event_id, event, attempts, next_at, created_at) VALUES (?, ?, ?, 0, ?, ?)');
    this.#head = db.prepare('SELECT * FROM webhook_outbox WHERE endpoint = ? AND dead_at IS NULL ORDER BY seq LIMIT ?');
    this.#delete = db.prepare('DELETE FROM webhook_outbox WHERE seq = ?');
    this.#retry = db.prepare('UPDATE webhook_outbox SET next_at = ?, attempts = ? WHERE seq = ? AND dead_at IS NULL');
    this.#bury = db.prepare('UPDATE webhook_outbox SET dead_at = ?, reason = ? WHERE seq = ? AND dead_at IS NULL');
    this.#counts = db.prepare('SELECT SUM(dead_at IS NULL) AS pending, SUM(dead_at IS NOT NULL) AS dead FROM webhook_outbox');
    this.#endpoints = db.prepare('SELECT DISTINCT endpoint FROM webhook_outbox WHERE dead_at IS NULL');
    this.#byEndpoint = db.prepare('SELECT endpoint, COUNT(*) AS pending FROM webhook_outbox WHERE dead_at IS NULL GROUP BY endpoint');
  }

  append(entries: readonly NewEntry[], now: number): void {
    if (entries.length === 0) return;
    writeTransaction(this.#db, () => {
      for (const entry of entries) this.#insert.run(entry.endpoint, entry.eventId, entry.event, now, now);
    });
  }

  head(endpoint: string, limit: number): OutboxEntry[] {
    return (this.#head.all(endpoint, limit) as unknown as Row[]).map((row) => ({
      seq: row.seq,
      endpoint: row.endpoint,
      eventId: row.event_id,
      event: row.event,
      attempts: row.attempts,
      nextAt: row.next_at,
      createdAt: row.created_at,
    }));
  }

  delivered(seqs: readonly number[]): void {
    writeTransaction(this.#db, () => {
      for (const seq of seqs) this.#delete.run(seq);
    });
  }

  retryLater(seqs: readonly number[], nextAt: number, attempts: number): void {
    writeTransaction(this.#db, () => {
      for (const seq of seqs) this.#retry.run(nextAt, attempts, seq);
    });
  }

  bury(seqs: readonly number[], reason: string, now: number): void {
    writeTransaction(this.#db, () => {
      for (const seq of seqs) this.#bury.run(now, reason, seq);
    });
  }

  listDead(limit: number, endpoint?: string): DeadEntry[] {
    const rows = (
      endpoint === undefined
        ? this.#db.prepare('SELECT * FROM webhook_outbox WHERE dead_at IS NOT NULL ORDER BY seq LIMIT ?').all(limit)
        : this.#db.prepare('SELECT * FROM webhook_outbox WHERE dead_at IS NOT NULL AND endpoint = ? ORDER BY seq LIMIT ?').all(endpoint, limit)
    ) as unknown as Row[];
    return rows.map((row) => ({
      seq: row.seq,
      endpoint: row.endpoint,
      eventId: row.event_id,
      event: row.event,
      attempts: row.attempts,
      createdAt: row.created_at,
      deadAt: row.dead_at ?? 0,
      reason: row.reason ?? '',
    }));
  }

  replay(now: number, filter: { readonly seqs?: readonly number[]; readonly endpoint?: string }): number {
    let count = 0;
    // A replayed row gets a new seq (re-inserted), so it queues behind what is pending now.
    const move = this.#db.prepare(
      'INSERT INTO webhook_outbox (endpoint, event_id, event, attempts, next_at, created_at) SELECT endpoint, event_id, event, 0, ?, ? FROM webhook_outbox WHERE seq = ? AND dead_at IS NOT NULL',
    );
    writeTransaction(this.#db, () => {
      const seqs =
        filter.seqs ??
        (
          (filter.endpoint === undefined
            ? this.#db.prepare('SELECT seq FROM webhook_outbox WHERE dead_at IS NOT NULL ORDER BY seq').all()
            : this.#db.prepare('SELECT seq FROM webhook_outbox WHERE dead_at IS NOT NULL AND endpoint = ? ORDER BY seq').all(filter.endpoint)) as unknown as { seq: number }[]
        ).map((row) => row.seq);
      for (const seq of seqs) {
        if (filter.endpoint !== undefined && filter.seqs !== undefined) {
          const row = this.#db.prepare('SELECT endpoint FROM webhook_outbox WHERE seq = ?').get(seq) as { endpoint: string } | undefined;
          if (row?.endpoint !== filter.endpoint) continue;
        }
        if (Number(move.run(now, now, seq).changes) === 1) {
          this.#delete.run(seq);
          count++;
        }
      }
    });
    return count;
  }

  counts(): { pending: number; dead: number } {
    const row = this.#counts.get() as { pending: number | null; dead: number | null };
    return { pending: row.pending ?? 0, dead: row.dead ?? 0 };
  }

  endpoints(): string[] {
    return (this.#endpoints.all() as unknown as { endpoint: string }[]).map((row) => row.endpoint);
  }

  pendingByEndpoint(): Record<string, number> {
    const counts: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const row of this.#byEndpoint.all() as unknown as { endpoint: string; pending: number }[]) counts[row.endpoint] = row.pending;
    return counts;
  }
}
