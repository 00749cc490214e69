/**
 * The durable single-process broker: streams live in the SQLite state file
 * (packages/server/src/store/sqlite-store.ts), fan-out stays in memory as in
 * the memory broker.
 *
 * Guarantees:
 * - A publication with history is acknowledged (its promise resolves) and
 *   delivered only after the transaction holding it has committed.
 *   Publishes arriving in the same turn of the event loop are committed in
 *   one transaction (group commit), so durability costs one commit per turn,
 *   not one per message.
 * - Per channel, offsets are assigned in acceptance order and delivered in
 *   that order, each once. A stream's epoch and top offset are persisted, so
 *   they survive a restart, a crash included; size and TTL limits apply to
 *   what was stored before the restart too. The epoch is written with the
 *   stream's first commit; its row's top, last publish time and TTL are
 *   written behind (by the sweep, before anything expires, and at close),
 *   not with every publication: until then the stream's newest publication,
 *   which every commit holds (trim keeps it), carries them, and the first
 *   sweep after a start rebuilds the rows a crash left behind from it.
 * - A stream whose history has fully expired and that no subscriber on this
 *   node holds is deleted by the sweep (with its publications); the next
 *   publication starts a new epoch, as on the memory broker.
 * - A commit the disk refuses (full, I/O error, busy or locked file) rejects
 *   every publish of that transaction with BrokerUnavailableError (API 503
 *   `unavailable`, reply 116): nothing of it was stored or delivered. Health
 *   reports `degraded` with the reason until a commit succeeds again. The
 *   process keeps running.
 * - Publications without history (size 0) are not stored: delivered at once.
 * - Recent `since` reads are answered from a bounded cache (a reconnect
 *   storm reads the same page thousands of times): an entry is used only
 *   while its stream object, committed top, size, TTL window and oldest
 *   row's liveness are unchanged, so it answers exactly what the file would.
 * - Idempotency keys (broker.ts Idempotency) are stored in the same
 *   transaction as their publication, so a retry after a restart is still
 *   recognised; a duplicate arriving while the first is uncommitted gets the
 *   first one's promise. Expired keys go with the sweep.
 */
import type { StatementSync } from 'node:sqlite';
import type { ClientInfo, StreamPosition } from '@herald/protocol';
import { parseJsonSafely } from '@herald/protocol/json';
import { BrokerUnavailableError, type Broker, type BrokerEventHandler, type HistoryPage, type HistoryQuery, type PublishOptions, type StoredPublication, type StreamOptions } from './broker.ts';
import { newEpoch } from './memory-broker.ts';
import { idempotencyId } from './idempotency.ts';
import { storageFailure, writeTransaction, type SqliteStore } from '../store/sqlite-store.ts';

interface Stream {
  readonly epoch: string;
  /** Highest offset assigned (committed or pending). */
  top: number;
  /** Highest committed offset: what history reports as the position. */
  committed: number;
  lastPublishAt: number;
  ttlMs: number;
  /** Whether the stream row has to be written with the next commit (a new stream: its epoch). */
  dirty: boolean;
  /** Whether its row is in the file (read from it, or committed): then an UPDATE writes it, cheaper than the upsert. */
  persisted: boolean;
  /**
   * Whether the row is behind (top, last publish time or TTL changed since
   * it was written): written behind, by the next sweep or at close. Until
   * then the file's truth is the row and the stream's newest publication,
   * which every commit holds (trim keeps the newest; expiry writes the rows
   * first).
   */
  stale: boolean;
}

interface Pending {
  readonly channel: string;
  readonly stream: Stream;
  readonly publication: StoredPublication;
  readonly size: number;
  readonly once: Once | undefined;
  readonly resolve: (position: StreamPosition) => void;
  readonly reject: (error: Error) => void;
}

/** An idempotency key to store with its publication. */
interface Once {
  readonly key: string;
  readonly expiresAt: number;
}

export interface SqliteBrokerOptions {
  readonly now?: () => number;
  /** How often expired history and dead streams are deleted. */
  readonly sweepIntervalMs?: number;
  /** Called when commits start failing (healthy false, with the reason) or succeed again. */
  readonly onHealthChange?: (healthy: boolean, reason: string) => void;
}

export type SqliteBrokerHealth = { readonly status: 'ok' } | { readonly status: 'degraded'; readonly reason: string };

const VACUUM_PAGES_PER_SWEEP = 1024;
/** Rows one sweep transaction deletes at most (a few milliseconds of work). */
const SWEEP_BATCH = 2000;

/** Pages the `since` cache keeps at most, and the bytes of publication data in them. */
const SINCE_CACHE_ENTRIES = 256;
const SINCE_CACHE_BYTES = 4 * 1024 * 1024;

/** A `since` read, valid while its stream is the same object at the same committed top and nothing in it expired. */
interface CachedPage {
  readonly stream: Stream;
  readonly committed: number;
  /** The cutoff it was read with: a later read may use it only with a cutoff at least as late. */
  readonly cutoff: number;
  /** The oldest acceptance time among its publications (Infinity when none): past it the page is stale. */
  readonly oldest: number;
  readonly bytes: number;
  readonly publications: readonly StoredPublication[];
}

const noHistoryPosition: StreamPosition = Object.freeze({ epoch: '', offset: 0 });

interface PublicationRow {
  offset: number;
  time: number;
  data: string;
  info: string | null;
}

export class SqliteBroker implements Broker {
  #handler: BrokerEventHandler | undefined;
  readonly #store: SqliteStore;
  readonly #subscribed = new Set<string>();
  /** Streams read or written since start (a cache of the streams table). */
  readonly #streams = new Map<string, Stream>();
  readonly #now: () => number;
  readonly #sweep: NodeJS.Timeout;
  readonly #onHealthChange: ((healthy: boolean, reason: string) => void) | undefined;
  #pending: Pending[] = [];
  /** Streams created by a read, to be persisted with the next commit. */
  #created: Array<() => void> = [];
  /** Channels whose stream row is new since the last commit. */
  #dirty = new Set<string>();
  /** Channels whose stream row is behind (Stream.stale), for the next sweep. */
  #stale = new Set<string>();
  /** Idempotent publishes not yet committed, by idempotencyId. */
  readonly #inflight = new Map<string, Promise<StreamPosition>>();
  /** Recent `since` pages by channel, offset, limit, size and TTL (SINCE_CACHE_*), oldest first. */
  readonly #sinceCache = new Map<string, CachedPage>();
  #sinceCacheBytes = 0;
  #flushScheduled = false;
  /** Whether rows a crash left behind have been rebuilt from the publications (the first sweep does it). */
  #repaired = false;
  #failure: string | undefined;
  #closed = false;
  readonly #sql: {
    readonly getStream: StatementSync;
    readonly newestPublication: StatementSync;
    readonly repairStreams: StatementSync;
    readonly putStream: StatementSync;
    readonly updateStream: StatementSync;
    readonly insert: StatementSync;
    readonly trim: StatementSync;
    readonly since: StatementSync;
    readonly oldest: StatementSync;
    readonly newest: StatementSync;
    readonly expire: StatementSync;
    readonly minTtl: StatementSync;
    readonly deadStreams: StatementSync;
    readonly deleteStream: StatementSync;
    readonly deletePublications: StatementSync;
    readonly getOnce: StatementSync;
    readonly putOnce: StatementSync;
    readonly expireOnce: StatementSync;
  };

  constructor(store: SqliteStore, options: SqliteBrokerOptions = {}) {
    this.#store = store;
    this.#now = options.now ?? Date.now;
    this.#onHealthChange = options.onHealthChange;
    const db = store.db;
    this.#sql = {
      getStream: db.prepare('SELECT epoch, top, last_publish_at, ttl_ms FROM streams WHERE channel = ?'),
      newestPublication: db.prepare('SELECT offset, time FROM publications WHERE channel = ? ORDER BY offset DESC LIMIT 1'),
      // After a crash rows may be behind their streams: the newest publication of each holds the truth.
      repairStreams: db.prepare(
        `UPDATE streams SET
           top = (SELECT offset FROM publications p WHERE p.channel = streams.channel ORDER BY offset DESC LIMIT 1),
           last_publish_at = max(last_publish_at, (SELECT time FROM publications p WHERE p.channel = streams.channel ORDER BY offset DESC LIMIT 1))
         WHERE top < coalesce((SELECT offset FROM publications p WHERE p.channel = streams.channel ORDER BY offset DESC LIMIT 1), 0)`,
      ),
      putStream: db.prepare(
        `INSERT INTO streams (channel, epoch, top, last_publish_at, ttl_ms) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (channel) DO UPDATE SET top = excluded.top, last_publish_at = excluded.last_publish_at, ttl_ms = excluded.ttl_ms`,
      ),
      updateStream: db.prepare('UPDATE streams SET top = ?, last_publish_at = ?, ttl_ms = ? WHERE channel = ?'),
      insert: db.prepare('INSERT INTO publications (channel, offset, time, data, info) VALUES (?, ?, ?, ?, ?)'),
      trim: db.prepare('DELETE FROM publications WHERE channel = ? AND offset <= ?'),
      since: db.prepare('SELECT offset, time, data, info FROM publications WHERE channel = ? AND offset > ? AND time > ? ORDER BY offset LIMIT ?'),
      oldest: db.prepare('SELECT offset, time, data, info FROM publications WHERE channel = ? AND time > ? ORDER BY offset LIMIT ?'),
      newest: db.prepare('SELECT offset, time, data, info FROM publications WHERE channel = ? AND time > ? ORDER BY offset DESC LIMIT ?'),
      // Range-scans the time index up to the shortest TTL, a bounded batch at a time.
      expire: db.prepare(
        `DELETE FROM publications WHERE (channel, offset) IN (
           SELECT channel, offset FROM publications
           WHERE time <= ?1 - ?2 AND time <= ?1 - coalesce((SELECT ttl_ms FROM streams s WHERE s.channel = publications.channel), 0)
           LIMIT ?3)`,
      ),
      minTtl: db.prepare('SELECT coalesce(min(ttl_ms), 0) AS ttl FROM streams'),
      deadStreams: db.prepare('SELECT channel FROM streams WHERE last_publish_at < ?1 - ?2 AND ?1 - last_publish_at > ttl_ms LIMIT ?3'),
      deleteStream: db.prepare('DELETE FROM streams WHERE channel = ?'),
      deletePublications: db.prepare('DELETE FROM publications WHERE channel = ?'),
      getOnce: db.prepare('SELECT epoch, offset FROM idempotency_keys WHERE channel = ? AND key = ? AND expires_at > ?'),
      putOnce: db.prepare('INSERT OR REPLACE INTO idempotency_keys (channel, key, epoch, offset, expires_at) VALUES (?, ?, ?, ?, ?)'),
      expireOnce: db.prepare('DELETE FROM idempotency_keys WHERE (channel, key) IN (SELECT channel, key FROM idempotency_keys WHERE expires_at <= ?1 LIMIT ?2)'),
    };
    this.#sweep = setInterval(() => this.#sweepSafely(), options.sweepIntervalMs ?? 5000);
    this.#sweep.unref();
    // What expired while the server was down goes now, before anyone reads it.
    this.#sweepSafely();
  }

  setEventHandler(handler: BrokerEventHandler): void {
    this.#handler = handler;
  }

  health(): SqliteBrokerHealth {
    return this.#failure === undefined ? { status: 'ok' } : { status: 'degraded', reason: this.#failure };
  }

  publish(channel: string, data: string, options: PublishOptions): Promise<StreamPosition> {
    if (this.#closed) return Promise.reject(new BrokerUnavailableError('sqlite engine closed'));
    const now = this.#now();
    const idempotency = options.idempotency;
    if (idempotency === undefined) return this.#accept(channel, data, options, now, undefined);
    const id = idempotencyId(channel, idempotency.key);
    const inflight = this.#inflight.get(id);
    if (inflight !== undefined) return inflight;
    let row: { epoch: string; offset: number } | undefined;
    try {
      row = this.#sql.getOnce.get(channel, idempotency.key, now) as { epoch: string; offset: number } | undefined;
    } catch (error) {
      return Promise.reject(this.#unavailable(error));
    }
    if (row !== undefined) return Promise.resolve({ epoch: row.epoch, offset: Number(row.offset) });
    const promise = this.#accept(channel, data, options, now, { key: idempotency.key, expiresAt: now + idempotency.windowMs });
    this.#inflight.set(id, promise);
    // Forgotten once settled: committed, its row answers; failed, a retry publishes.
    const forget = () => {
      if (this.#inflight.get(id) === promise) this.#inflight.delete(id);
    };
    promise.then(forget, forget);
    return promise;
  }

  #accept(channel: string, data: string, options: PublishOptions, now: number, once: Once | undefined): Promise<StreamPosition> {
    if (options.stream.size === 0) {
      if (once !== undefined) {
        try {
          this.#sql.putOnce.run(channel, once.key, '', 0, once.expiresAt);
        } catch (error) {
          return Promise.reject(this.#unavailable(error));
        }
      }
      if (this.#subscribed.has(channel)) this.#handler?.onPublication(channel, { offset: 0, data, info: options.info, time: now });
      return Promise.resolve(noHistoryPosition);
    }
    let stream: Stream;
    try {
      stream = this.#stream(channel, options.stream, now);
    } catch (error) {
      return Promise.reject(this.#unavailable(error));
    }
    stream.top += 1;
    stream.lastPublishAt = now;
    stream.ttlMs = options.stream.ttlMs;
    // A new stream's row (its epoch) goes with this commit; an existing row is written behind.
    if (!stream.persisted) {
      stream.dirty = true;
      this.#dirty.add(channel);
    } else if (!stream.stale) {
      stream.stale = true;
      this.#stale.add(channel);
    }
    const publication: StoredPublication = { offset: stream.top, epoch: stream.epoch, data, info: options.info, time: now };
    return new Promise<StreamPosition>((resolve, reject) => {
      this.#pending.push({ channel, stream, publication, size: options.stream.size, once, resolve, reject });
      this.#scheduleFlush();
    });
  }

  async publishJoin(channel: string, info: ClientInfo): Promise<void> {
    if (this.#subscribed.has(channel)) this.#handler?.onJoin(channel, info);
  }

  async publishLeave(channel: string, info: ClientInfo): Promise<void> {
    if (this.#subscribed.has(channel)) this.#handler?.onLeave(channel, info);
  }

  async subscribe(channel: string): Promise<void> {
    this.#subscribed.add(channel);
  }

  async unsubscribe(channel: string): Promise<void> {
    this.#subscribed.delete(channel);
  }

  async history(channel: string, query: HistoryQuery, options: StreamOptions): Promise<HistoryPage> {
    if (options.size === 0) return { position: noHistoryPosition, publications: [] };
    if (this.#closed) throw new BrokerUnavailableError('sqlite engine closed');
    const now = this.#now();
    let stream: Stream;
    try {
      stream = this.#stream(channel, options, now);
    } catch (error) {
      throw this.#unavailable(error);
    }
    if (stream.dirty && stream.committed === 0 && stream.top === 0) {
      // A stream created by this read: its epoch is persisted before it is handed out.
      await new Promise<void>((resolve, reject) => {
        this.#created.push(() => (stream.dirty ? reject(new BrokerUnavailableError(this.#failure ?? 'sqlite commit failed')) : resolve()));
        this.#scheduleFlush();
      });
    }
    const position = { epoch: stream.epoch, offset: stream.committed };
    if (query.limit === 0) return { position, publications: [] };
    const cutoff = now - options.ttlMs;
    const limit = Math.min(query.limit, options.size);
    let rows: PublicationRow[];
    try {
      if (query.since !== undefined) {
        if (query.since.epoch !== stream.epoch) return { position, publications: [] };
        // Numbers first, the channel last: unambiguous whatever the channel holds.
        const key = `${query.since.offset}:${limit}:${options.size}:${options.ttlMs}:${channel}`;
        const cached = this.#sinceCache.get(key);
        if (cached !== undefined) {
          if (cached.stream === stream && cached.committed === stream.committed && cutoff >= cached.cutoff && cached.oldest > cutoff) {
            return { position, publications: cached.publications };
          }
          this.#forget(key, cached);
        }
        rows = this.#sql.since.all(channel, query.since.offset, cutoff, limit) as unknown as PublicationRow[];
        const publications = this.#committedRows(rows, stream, options.size);
        this.#remember(key, { stream, committed: stream.committed, cutoff, publications });
        return { position, publications };
      } else if (query.reverse === true) {
        rows = this.#sql.newest.all(channel, cutoff, limit) as unknown as PublicationRow[];
      } else {
        rows = this.#sql.oldest.all(channel, cutoff, limit) as unknown as PublicationRow[];
      }
    } catch (error) {
      throw this.#unavailable(error);
    }
    return { position, publications: this.#committedRows(rows, stream, options.size) };
  }

  /** Only committed publications, within the size window of the committed top. */
  #committedRows(rows: readonly PublicationRow[], stream: Stream, size: number): StoredPublication[] {
    const floor = stream.committed - size;
    const publications: StoredPublication[] = [];
    for (const row of rows) {
      if (row.offset > stream.committed || row.offset <= floor) continue;
      publications.push(toPublication(row, stream.epoch));
    }
    return publications;
  }

  #remember(key: string, page: Omit<CachedPage, 'oldest' | 'bytes'>): void {
    let bytes = 0;
    let oldest = Infinity;
    for (const pub of page.publications) {
      bytes += pub.data.length;
      if (pub.time < oldest) oldest = pub.time;
    }
    if (bytes > SINCE_CACHE_BYTES / 16) return;
    Object.freeze(page.publications);
    this.#sinceCache.set(key, { ...page, oldest, bytes });
    this.#sinceCacheBytes += bytes;
    for (const [first, entry] of this.#sinceCache) {
      if (this.#sinceCache.size <= SINCE_CACHE_ENTRIES && this.#sinceCacheBytes <= SINCE_CACHE_BYTES) break;
      this.#forget(first, entry);
    }
  }

  #forget(key: string, entry: CachedPage): void {
    this.#sinceCache.delete(key);
    this.#sinceCacheBytes -= entry.bytes;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    clearInterval(this.#sweep);
    this.#flush();
    try {
      writeTransaction(this.#store.db, () => this.#writeStale());
      this.#wroteStale();
    } catch (error) {
      // The rows stay behind: the next start rebuilds them from the publications.
      this.#unavailable(error);
    }
    this.#closed = true;
  }

  /** Writes the rows that are behind (inside the caller's transaction). */
  #writeStale(): void {
    for (const channel of this.#stale) {
      const stream = this.#streams.get(channel);
      if (stream === undefined || !stream.stale) continue;
      if (Number(this.#sql.updateStream.run(stream.top, stream.lastPublishAt, stream.ttlMs, channel).changes) !== 1) {
        this.#sql.putStream.run(channel, stream.epoch, stream.top, stream.lastPublishAt, stream.ttlMs);
      }
    }
  }

  /** After the commit of `#writeStale`'s transaction: the rows are current. */
  #wroteStale(): void {
    for (const channel of this.#stale) {
      const stream = this.#streams.get(channel);
      if (stream !== undefined) stream.stale = false;
    }
    this.#stale.clear();
  }

  /**
   * Deletes expired publications, and streams that fully expired and that
   * nobody here subscribes to, all of them now (tests, the cluster hub). The
   * timer's sweep deletes at most SWEEP_BATCH rows of each per transaction
   * and continues on later turns of the event loop, so it never blocks the
   * loop for long.
   */
  sweep(): void {
    while (!this.#sweepBatch());
  }

  /** One sweep transaction; whether everything expired is gone. */
  #sweepBatch(): boolean {
    this.#flush();
    const now = this.#now();
    const db = this.#store.db;
    const done = writeTransaction(db, () => {
      // Rows left behind by a crash catch up with their publications (once, before the first sweep judges them).
      if (!this.#repaired) this.#sql.repairStreams.run();
      // Before anything expires: a stream whose publications all go keeps its top in its row.
      this.#writeStale();
      const minTtl = Number((this.#sql.minTtl.get() as { ttl: number }).ttl);
      const expired = Number(this.#sql.expire.run(now, minTtl, SWEEP_BATCH).changes);
      const expiredKeys = Number(this.#sql.expireOnce.run(now, SWEEP_BATCH).changes);
      this.#store.heartbeat(Date.now());
      const dead = this.#sql.deadStreams.all(now, minTtl, SWEEP_BATCH) as { channel: string }[];
      let deleted = 0;
      for (const row of dead) {
        if (this.#subscribed.has(row.channel)) continue;
        deleted += Number(this.#sql.deletePublications.run(row.channel).changes);
        this.#sql.deleteStream.run(row.channel);
        this.#streams.delete(row.channel);
        if (deleted >= SWEEP_BATCH) break;
      }
      return expired < SWEEP_BATCH && expiredKeys < SWEEP_BATCH && dead.length < SWEEP_BATCH && deleted < SWEEP_BATCH;
    });
    this.#repaired = true;
    this.#wroteStale();
    // Gives up to 4 MB of freed pages (deleted history) back to the file system per sweep.
    db.exec(`PRAGMA incremental_vacuum(${VACUUM_PAGES_PER_SWEEP})`);
    this.#recovered();
    // Cached streams that are dead and unsubscribed are forgotten with their rows.
    for (const [channel, stream] of this.#streams) {
      if (!stream.dirty && !stream.stale && now - stream.lastPublishAt > stream.ttlMs && !this.#subscribed.has(channel)) this.#streams.delete(channel);
    }
    return done;
  }

  #sweepSafely(): void {
    if (this.#closed) return;
    try {
      if (!this.#sweepBatch()) setImmediate(() => this.#sweepSafely());
    } catch (error) {
      this.#unavailable(error);
    }
  }

  /** The stream of a channel (from the cache, the file, or new), with its TTL applied to its liveness. */
  #stream(channel: string, options: StreamOptions, now: number): Stream {
    let stream = this.#streams.get(channel);
    if (stream !== undefined) return stream;
    const row = this.#sql.getStream.get(channel) as { epoch: string; top: number; last_publish_at: number; ttl_ms: number } | undefined;
    if (row !== undefined) {
      // The row may be behind (written behind, and this stream left the cache after a failed commit): its newest publication is not.
      const newest = this.#sql.newestPublication.get(channel) as { offset: number; time: number } | undefined;
      const top = Math.max(Number(row.top), Number(newest?.offset ?? 0));
      const lastPublishAt = Math.max(Number(row.last_publish_at), Number(newest?.time ?? 0));
      stream = { epoch: row.epoch, top, committed: top, lastPublishAt, ttlMs: row.ttl_ms, dirty: false, persisted: true, stale: top !== Number(row.top) };
      if (stream.stale) this.#stale.add(channel);
    } else {
      stream = { epoch: newEpoch(), top: 0, committed: 0, lastPublishAt: now, ttlMs: options.ttlMs, dirty: true, persisted: false, stale: false };
      this.#dirty.add(channel);
    }
    this.#streams.set(channel, stream);
    return stream;
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  /** Commits every pending publication and new stream in one transaction, then acknowledges and delivers them. */
  #flush(): void {
    this.#flushScheduled = false;
    const batch = this.#pending;
    const created = this.#created;
    const dirty = this.#dirty;
    if (batch.length === 0 && created.length === 0 && dirty.size === 0) return;
    this.#pending = [];
    this.#created = [];
    this.#dirty = new Set();
    const written: Array<[string, Stream]> = [];
    try {
      writeTransaction(this.#store.db, () => {
        const trimTo = new Map<string, number>();
        for (const p of batch) {
          const pub = p.publication;
          this.#sql.insert.run(p.channel, pub.offset, pub.time, pub.data, pub.info === undefined ? null : JSON.stringify(pub.info));
          trimTo.set(p.channel, pub.offset - p.size);
          if (p.once !== undefined) this.#sql.putOnce.run(p.channel, p.once.key, pub.epoch ?? '', pub.offset, p.once.expiresAt);
        }
        for (const [channel, floor] of trimTo) if (floor > 0) this.#sql.trim.run(channel, floor);
        for (const channel of dirty) {
          const stream = this.#streams.get(channel);
          if (stream === undefined) continue;
          const updated = stream.persisted && Number(this.#sql.updateStream.run(stream.top, stream.lastPublishAt, stream.ttlMs, channel).changes) === 1;
          if (!updated) this.#sql.putStream.run(channel, stream.epoch, stream.top, stream.lastPublishAt, stream.ttlMs);
          written.push([channel, stream]);
        }
      });
    } catch (error) {
      const failure = this.#unavailable(error);
      // The file is the truth: cached streams touched by this batch are read again next time.
      for (const p of batch) this.#streams.delete(p.channel);
      for (const channel of dirty) this.#streams.delete(channel);
      for (const p of batch) p.reject(failure);
      for (const done of created) done();
      return;
    }
    for (const [, stream] of written) {
      stream.dirty = false;
      stream.persisted = true;
    }
    for (const p of batch) if (p.publication.offset > p.stream.committed) p.stream.committed = p.publication.offset;
    this.#recovered();
    for (const done of created) done();
    for (const p of batch) {
      if (this.#subscribed.has(p.channel)) this.#handler?.onPublication(p.channel, p.publication);
      p.resolve({ epoch: p.publication.epoch ?? '', offset: p.publication.offset });
    }
  }

  #recovered(): void {
    if (this.#failure === undefined) return;
    const was = this.#failure;
    this.#failure = undefined;
    this.#onHealthChange?.(true, `commits succeed again (after: ${was})`);
  }

  /** Records a storage failure (health degraded) and returns the error callers get. */
  #unavailable(error: unknown): BrokerUnavailableError {
    const reason = storageFailure(error) ?? `sqlite: ${(error as Error).message}`;
    if (this.#failure !== reason) {
      this.#failure = reason;
      this.#onHealthChange?.(false, reason);
    }
    return new BrokerUnavailableError(`sqlite engine: ${reason}`);
  }
}

function toPublication(row: PublicationRow, epoch: string): StoredPublication {
  const info = row.info === null ? undefined : (parseJsonSafely(row.info) as ClientInfo);
  return { offset: Number(row.offset), epoch, data: row.data, info, time: Number(row.time) };
}
