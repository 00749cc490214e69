/**
 * What webhooks announced and did not end yet: channels occupied and not
 * vacated, members added and not removed. The sqlite engine keeps it in
 * the state file (table `webhook_open`), written with each transition, so
 * that after a crash (SIGKILL, power loss) the next start announces the
 * end of what was open: the new process has no subscribers, and receivers
 * would otherwise see a channel occupied forever. A graceful stop ends
 * everything itself (every connection closes) and leaves the table empty.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { MemberRef } from './transitions.ts';

export interface OpenTransitions {
  readonly channels: readonly string[];
  readonly members: readonly { readonly channel: string; readonly member: MemberRef }[];
}

export interface TransitionJournal {
  opened(channel: string, member?: MemberRef): void;
  closed(channel: string, member?: MemberRef): void;
  /** What the previous process left open; cleared by `clear`. */
  leftovers(): OpenTransitions;
  clear(): void;
}

function memberKey(member: MemberRef): string {
  return member.user !== '' ? 'u' + member.user : 'c' + (member.client ?? '');
}

export class SqliteJournal implements TransitionJournal {
  readonly #db: DatabaseSync;
  readonly #insert: StatementSync;
  readonly #delete: StatementSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#insert = db.prepare('INSERT OR REPLACE INTO webhook_open (channel, member, user, client) VALUES (?, ?, ?, ?)');
    this.#delete = db.prepare('DELETE FROM webhook_open WHERE channel = ? AND member = ?');
  }

  opened(channel: string, member?: MemberRef): void {
    if (member === undefined) this.#insert.run(channel, '', '', null);
    else this.#insert.run(channel, memberKey(member), member.user, member.client ?? null);
  }

  closed(channel: string, member?: MemberRef): void {
    this.#delete.run(channel, member === undefined ? '' : memberKey(member));
  }

  leftovers(): OpenTransitions {
    const rows = this.#db.prepare('SELECT channel, member, user, client FROM webhook_open ORDER BY channel, member').all() as unknown as {
      channel: string;
      member: string;
      user: string;
      client: string | null;
    }[];
    return {
      channels: rows.filter((row) => row.member === '').map((row) => row.channel),
      members: rows.filter((row) => row.member !== '').map((row) => ({ channel: row.channel, member: { user: row.user, ...(row.client === null ? {} : { client: row.client }) } })),
    };
  }

  clear(): void {
    this.#db.exec('DELETE FROM webhook_open');
  }
}
