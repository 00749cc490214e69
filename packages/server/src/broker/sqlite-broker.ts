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
 *
 * Layout (schema 15): publications are appended to one log table in commit
 * order (`history_log`, keyed by its rowid `seq`), so a commit's rows share
 * the log's last page whatever their channels: a commit of publications to
 * five channels writes about 1.7 pages to the WAL instead of 5.7 with rows
 * keyed by channel and an index by time (bench/sqlite-layout.ts). There is
 * no index of the log by channel or time in the file: each channel's
 * stored publications (offset, seq, time: about 34 bytes each, and about
 * 180 per channel) are indexed in memory, rebuilt from the log when the
 * broker opens. Reads, trimming by
 * size (in the commit that passes the size) and expiry (by the sweep) find
 * the rows there and read or delete them by `seq`.
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
/**
 * Channels of the index one sweep transaction looks at for expired
 * publications (about 150 ns each: 2–3 ms). A pass over more channels takes
 * several sweeps; reads never answer an expired publication meanwhile, only
 * its disk space waits.
 */
const EXPIRY_WALK = 16_384;

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
  seq: number;
  offset: number;
  time: number;
  data: string;
  info: string | null;
}

/**
 * A channel's publications in the log, oldest first, as flat triples in
 * `rows`: offset, seq (the log's rowid), acceptance time (at 0, SEQ and
 * TIME within each triple of STRIDE numbers). Offsets increase along the list.
 */
interface Held {
  /** The TTL its newest publication was stored with: what the sweep expires it by. */
  ttlMs: number;
  readonly rows: number[];
}
const STRIDE = 3;
const SEQ = 1;
const TIME = 2;
const noRows: readonly number[] = [];

export class SqliteBroker implements Broker {
  #handler: BrokerEventHandler | undefined;
  readonly #store: SqliteStore;
  readonly #subscribed = new Set<string>();
  /** Streams read or written since start (a cache of the streams table). */
  readonly #streams = new Map<string, Stream>();
  /** Every channel's publications in the log (the log's index by channel, in memory), by channel. */
  readonly #held = new Map<string, Held>();
  /**
   * Where the sweep's expiry walk through #held is (a live iterator of the
   * map: it skips channels deleted since and visits those added), undefined
   * before the first channel.
   */
  #walk: MapIterator<[string, Held]> | undefined;
  /** Channels whose stream row is behind their newest publication at open (a crash): the first sweep catches them up. */
  #behind: Array<{ channel: string; offset: number; time: number }> = [];
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
    readonly repairStream: StatementSync;
    readonly putStream: StatementSync;
    readonly updateStream: StatementSync;
    readonly insert: StatementSync;
    readonly deleteRow: StatementSync;
    readonly read: StatementSync;
    readonly minTtl: StatementSync;
    readonly deadStreams: StatementSync;
    readonly deleteStream: StatementSync;
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
      // After a crash rows may be behind their streams: the newest publication of each holds the truth.
      repairStream: db.prepare('UPDATE streams SET top = ?1, last_publish_at = max(last_publish_at, ?2) WHERE channel = ?3 AND top < ?1'),
      putStream: db.prepare(
        `INSERT INTO streams (channel, epoch, top, last_publish_at, ttl_ms) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (channel) DO UPDATE SET top = excluded.top, last_publish_at = excluded.last_publish_at, ttl_ms = excluded.ttl_ms`,
      ),
      updateStream: db.prepare('UPDATE streams SET top = ?, last_publish_at = ?, ttl_ms = ? WHERE channel = ?'),
      insert: db.prepare('INSERT INTO history_log (channel, offset, time, data, info) VALUES (?, ?, ?, ?, ?)'),
      deleteRow: db.prepare('DELETE FROM history_log WHERE seq = ?'),
      // The rows of a page by their seqs (a JSON array).
      read: db.prepare('SELECT seq, offset, time, data, info FROM history_log WHERE seq IN (SELECT value FROM json_each(?))'),
      minTtl: db.prepare('SELECT coalesce(min(ttl_ms), 0) AS ttl FROM streams'),
      deadStreams: db.prepare('SELECT channel FROM streams WHERE last_publish_at < ?1 - ?2 AND ?1 - last_publish_at > ttl_ms LIMIT ?3'),
      deleteStream: db.prepare('DELETE FROM streams WHERE channel = ?'),
      getOnce: db.prepare('SELECT epoch, offset FROM idempotency_keys WHERE channel = ? AND key = ? AND expires_at > ?'),
      putOnce: db.prepare('INSERT OR REPLACE INTO idempotency_keys (channel, key, epoch, offset, expires_at) VALUES (?, ?, ?, ?, ?)'),
      expireOnce: db.prepare('DELETE FROM idempotency_keys WHERE (channel, key) IN (SELECT channel, key FROM idempotency_keys WHERE expires_at <= ?1 LIMIT ?2)'),
    };
    this.#load();
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
    const page = this.historyNow(channel, query, options);
    if (page !== undefined) return page;
    // A stream created by this read: its epoch is persisted before it is handed out.
    const now = this.#now();
    const stream = this.#readStream(channel, options, now);
    await new Promise<void>((resolve, reject) => {
      this.#created.push(() => (stream.dirty ? reject(new BrokerUnavailableError(this.#failure ?? 'sqlite commit failed')) : resolve()));
      this.#scheduleFlush();
    });
    return this.#page(channel, stream, query, options, now);
  }

  /** `history` from the index and the `since` cache; undefined for a stream this read creates (its epoch must be committed first: `history`). */
  historyNow(channel: string, query: HistoryQuery, options: StreamOptions): HistoryPage | undefined {
    if (options.size === 0) return { position: noHistoryPosition, publications: [] };
    const now = this.#now();
    const stream = this.#readStream(channel, options, now);
    if (stream.dirty && stream.committed === 0 && stream.top === 0) return undefined;
    return this.#page(channel, stream, query, options, now);
  }

  /** The stream a read is answered from (created if needed). */
  #readStream(channel: string, options: StreamOptions, now: number): Stream {
    if (this.#closed) throw new BrokerUnavailableError('sqlite engine closed');
    try {
      return this.#stream(channel, options, now);
    } catch (error) {
      throw this.#unavailable(error);
    }
  }

  /** The page `query` asks of a stream whose epoch is committed. */
  #page(channel: string, stream: Stream, query: HistoryQuery, options: StreamOptions, now: number): HistoryPage {
    const position = { epoch: stream.epoch, offset: stream.committed };
    if (query.limit === 0) return { position, publications: [] };
    const cutoff = now - options.ttlMs;
    const limit = Math.min(query.limit, options.size);
    // Only committed publications, within the size window of the committed top, not expired.
    const floor = stream.committed - options.size;
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
        const publications = this.#read(channel, stream, Math.max(floor, query.since.offset), cutoff, limit, false);
        this.#remember(key, { stream, committed: stream.committed, cutoff, publications });
        return { position, publications };
      }
      return { position, publications: this.#read(channel, stream, floor, cutoff, limit, query.reverse === true) };
    } catch (error) {
      throw this.#unavailable(error);
    }
  }

  /**
   * Up to `limit` of a channel's publications with an offset above `above`
   * and at most the committed top, accepted after `cutoff`: the oldest first,
   * or the newest first when `reverse`. Chosen in the index, read by seq.
   */
  #read(channel: string, stream: Stream, above: number, cutoff: number, limit: number, reverse: boolean): StoredPublication[] {
    const rows = this.#held.get(channel)?.rows ?? noRows;
    const seqs: number[] = [];
    if (reverse) {
      for (let i = rows.length - STRIDE; i >= 0 && seqs.length < limit; i -= STRIDE) {
        const offset = rows[i]!;
        if (offset <= above) break;
        if (offset <= stream.committed && rows[i + TIME]! > cutoff) seqs.push(rows[i + SEQ]!);
      }
    } else {
      for (let i = 0; i < rows.length && seqs.length < limit; i += STRIDE) {
        const offset = rows[i]!;
        if (offset > stream.committed) break;
        if (offset > above && rows[i + TIME]! > cutoff) seqs.push(rows[i + SEQ]!);
      }
    }
    if (seqs.length === 0) return [];
    const found = this.#sql.read.all(JSON.stringify(seqs)) as unknown as PublicationRow[];
    // In the index's order (offsets), which is the log's in every file but a hand-made one.
    const bySeq = new Map<number, PublicationRow>();
    for (const row of found) bySeq.set(Number(row.seq), row);
    const publications: StoredPublication[] = [];
    for (const seq of seqs) {
      const row = bySeq.get(seq);
      if (row !== undefined) publications.push(toPublication(row, stream.epoch));
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
   * nobody here subscribes to, all of them now (tests, the cluster hub): a
   * whole walk of the index. The timer's sweep deletes at most SWEEP_BATCH
   * rows of each per transaction and continues on later turns of the event
   * loop while there are more, and walks on by EXPIRY_WALK channels per
   * sweep, so it never blocks the loop for long.
   */
  sweep(): void {
    this.#walk = undefined;
    while (!this.#sweepBatch() || this.#walk !== undefined);
  }

  /** One sweep transaction; whether everything expired is gone. */
  #sweepBatch(): boolean {
    this.#flush();
    const now = this.#now();
    const db = this.#store.db;
    // What the transaction took out of the log, applied to the index once it committed.
    const expiredRows: Array<[string, Held, number]> = [];
    const gone: string[] = [];
    const done = writeTransaction(db, () => {
      // Rows left behind by a crash catch up with their publications (once, before the first sweep judges them).
      if (!this.#repaired) for (const row of this.#behind) this.#sql.repairStream.run(row.offset, row.time, row.channel);
      // Before anything expires: a stream whose publications all go keeps its top in its row.
      this.#writeStale();
      const minTtl = Number((this.#sql.minTtl.get() as { ttl: number }).ttl);
      const expired = this.#expire(now, expiredRows);
      const expiredKeys = Number(this.#sql.expireOnce.run(now, SWEEP_BATCH).changes);
      this.#store.heartbeat(Date.now());
      const dead = this.#sql.deadStreams.all(now, minTtl, SWEEP_BATCH) as { channel: string }[];
      let deleted = 0;
      for (const row of dead) {
        if (this.#subscribed.has(row.channel)) continue;
        const rows = this.#held.get(row.channel)?.rows ?? noRows;
        for (let i = 0; i < rows.length; i += STRIDE) this.#sql.deleteRow.run(rows[i + SEQ]!);
        deleted += rows.length / STRIDE;
        this.#sql.deleteStream.run(row.channel);
        this.#streams.delete(row.channel);
        gone.push(row.channel);
        if (deleted >= SWEEP_BATCH) break;
      }
      return expired < SWEEP_BATCH && expiredKeys < SWEEP_BATCH && dead.length < SWEEP_BATCH && deleted < SWEEP_BATCH;
    });
    this.#repaired = true;
    this.#behind = [];
    for (const [channel, held, count] of expiredRows) {
      held.rows.splice(0, count * STRIDE);
      if (held.rows.length === 0) this.#held.delete(channel);
    }
    for (const channel of gone) this.#held.delete(channel);
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

  /**
   * Deletes (inside the sweep's transaction) the publications past their
   * channel's TTL, oldest first, walking on through the index from where the
   * last call stopped (#walk): at most EXPIRY_WALK channels, and stopping
   * after the channel that brings the count to SWEEP_BATCH. Records in
   * `expired` how many rows of each channel went, for the index once the
   * transaction committed. Answers the count; #walk is undefined once the
   * walk went past the last channel (the next call starts over).
   */
  #expire(now: number, expired: Array<[string, Held, number]>): number {
    let deleted = 0;
    const walk = (this.#walk ??= this.#held.entries());
    for (let visited = 0; visited < EXPIRY_WALK && deleted < SWEEP_BATCH; visited++) {
      const next = walk.next();
      if (next.done === true) {
        this.#walk = undefined;
        break;
      }
      const [channel, held] = next.value;
      const cutoff = now - held.ttlMs;
      const rows = held.rows;
      let count = 0;
      for (let i = 0; i < rows.length && rows[i + TIME]! <= cutoff; i += STRIDE, count++) this.#sql.deleteRow.run(rows[i + SEQ]!);
      if (count === 0) continue;
      expired.push([channel, held, count]);
      deleted += count;
    }
    return deleted;
  }

  /**
   * Builds the index of the log (every channel's publications in log order),
   * and notes the stream rows a crash left behind their newest publication.
   */
  #load(): void {
    const db = this.#store.db;
    const unsorted = new Set<Held>();
    const log = db.prepare('SELECT channel, offset, seq, time FROM history_log ORDER BY seq');
    // Rows as arrays, not objects: a third less time for a large log.
    log.setReturnArrays(true);
    for (const row of log.iterate() as unknown as Iterable<[string, number, number, number]>) {
      const channel = row[0];
      const offset = Number(row[1]);
      const held = this.#held.get(channel);
      // TTLs come from the streams below; a channel without a stream row expires at the first sweep.
      if (held === undefined) this.#held.set(channel, { ttlMs: 0, rows: [offset, Number(row[2]), Number(row[3])] });
      else {
        if (held.rows[held.rows.length - STRIDE]! >= offset) unsorted.add(held);
        held.rows.push(offset, Number(row[2]), Number(row[3]));
      }
    }
    // Offsets grow with the log in every file this broker wrote: only a hand-made file needs the sort.
    for (const held of unsorted) {
      const triples: number[][] = [];
      for (let i = 0; i < held.rows.length; i += STRIDE) triples.push(held.rows.slice(i, i + STRIDE));
      triples.sort((a, b) => a[0]! - b[0]!);
      held.rows.length = 0;
      for (const triple of triples) held.rows.push(...triple);
    }
    // One pass over the streams (not a lookup per channel): their TTLs, and the rows a crash left behind.
    const streams = db.prepare('SELECT channel, top, ttl_ms FROM streams');
    streams.setReturnArrays(true);
    for (const [channel, top, ttlMs] of streams.iterate() as unknown as Iterable<[string, number, number]>) {
      const held = this.#held.get(channel);
      if (held === undefined) continue;
      held.ttlMs = Number(ttlMs);
      const last = held.rows.length - STRIDE;
      if (Number(top) < held.rows[last]!) this.#behind.push({ channel, offset: held.rows[last]!, time: held.rows[last + TIME]! });
    }
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
      const rows = this.#held.get(channel)?.rows ?? noRows;
      const last = rows.length - STRIDE;
      const top = Math.max(Number(row.top), last >= 0 ? rows[last]! : 0);
      const lastPublishAt = Math.max(Number(row.last_publish_at), last >= 0 ? rows[last + TIME]! : 0);
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
    /** Per channel of the batch: its new rows (triples), and how many rows of the index the size trims off. */
    const added = new Map<string, { rows: number[]; floor: number; ttlMs: number; trimmed: number }>();
    try {
      writeTransaction(this.#store.db, () => {
        for (const p of batch) {
          const pub = p.publication;
          const seq = Number(this.#sql.insert.run(p.channel, pub.offset, pub.time, pub.data, pub.info === undefined ? null : JSON.stringify(pub.info)).lastInsertRowid);
          const entry = added.get(p.channel);
          if (entry === undefined) added.set(p.channel, { rows: [pub.offset, seq, pub.time], floor: pub.offset - p.size, ttlMs: p.stream.ttlMs, trimmed: 0 });
          else {
            entry.rows.push(pub.offset, seq, pub.time);
            entry.floor = pub.offset - p.size;
            entry.ttlMs = p.stream.ttlMs;
          }
          if (p.once !== undefined) this.#sql.putOnce.run(p.channel, p.once.key, pub.epoch ?? '', pub.offset, p.once.expiresAt);
        }
        // The size window: rows at or below the floor go, the index's and this batch's own.
        for (const [channel, entry] of added) {
          if (entry.floor <= 0) continue;
          const rows = this.#held.get(channel)?.rows ?? noRows;
          let i = 0;
          for (; i < rows.length && rows[i]! <= entry.floor; i += STRIDE) this.#sql.deleteRow.run(rows[i + SEQ]!);
          entry.trimmed = i;
          let j = 0;
          for (; j < entry.rows.length && entry.rows[j]! <= entry.floor; j += STRIDE) this.#sql.deleteRow.run(entry.rows[j + SEQ]!);
          if (j > 0) entry.rows.splice(0, j);
        }
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
    for (const [channel, entry] of added) {
      const held = this.#held.get(channel);
      // A new channel's array is the batch's own, without spare room: most channels hold few publications.
      if (held === undefined) this.#held.set(channel, { ttlMs: entry.ttlMs, rows: entry.rows });
      else {
        held.ttlMs = entry.ttlMs;
        if (entry.trimmed > 0) held.rows.splice(0, entry.trimmed);
        for (const value of entry.rows) held.rows.push(value);
      }
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
