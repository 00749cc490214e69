/**
 * The audit log: every console action, every login, every admin change made
 * by the CLI or the API; filter by actor, action and time, and export what
 * the filter selects as JSON lines.
 */
import { useEffect, useState } from 'preact/hooks';
import { apiUrl, call, describeFailure } from '../api.ts';
import { json, when } from '../format.ts';
import { Empty, StatusLine, type Status } from '../widgets.tsx';

interface AuditEntry {
  readonly id?: string | number;
  readonly at?: string | number;
  readonly time?: string | number;
  readonly actor: string;
  readonly action: string;
  readonly target?: string | null;
  readonly address?: string | null;
  readonly outcome: string;
  readonly detail?: Record<string, unknown> | null;
}

interface Filter {
  readonly actor: string;
  readonly action: string;
  readonly since: string;
  readonly until: string;
}

/** `datetime-local` (local time, no zone) → ISO in UTC; empty stays empty. */
function iso(local: string): string | undefined {
  if (local === '') return undefined;
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

function query(filter: Filter): Record<string, string | number | undefined> {
  return { actor: filter.actor.trim(), action: filter.action.trim(), since: iso(filter.since), until: iso(filter.until) };
}

export function Audit() {
  const [filter, setFilter] = useState<Filter>({ actor: '', action: '', since: '', until: '' });
  const [applied, setApplied] = useState<Filter>(filter);
  const [entries, setEntries] = useState<readonly AuditEntry[] | null>(null);
  const [status, setStatus] = useState<Status | null>(null);

  async function load(next: Filter) {
    setStatus({ kind: 'busy', text: 'Loading…' });
    try {
      const answer = await call<{ entries: AuditEntry[] }>('audit', { query: { ...query(next), limit: 200 } });
      setEntries(answer.entries);
      setApplied(next);
      setStatus(null);
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  useEffect(() => {
    void load(filter);
  }, []);

  const field = (key: keyof Filter) => (event: Event) => setFilter({ ...filter, [key]: (event.currentTarget as HTMLInputElement).value });

  return (
    <section aria-labelledby="audit-title">
      <h2 id="audit-title">Audit log</h2>
      <form
        class="filters"
        role="search"
        onSubmit={(event) => {
          event.preventDefault();
          void load(filter);
        }}
      >
        <div>
          <label for="audit-actor">Actor</label>
          <input id="audit-actor" value={filter.actor} onInput={field('actor')} />
        </div>
        <div>
          <label for="audit-action">Action</label>
          <input id="audit-action" value={filter.action} placeholder="login, key.create…" onInput={field('action')} />
        </div>
        <div>
          <label for="audit-since">Since</label>
          <input id="audit-since" type="datetime-local" step={1} value={filter.since} onInput={field('since')} />
        </div>
        <div>
          <label for="audit-until">Until</label>
          <input id="audit-until" type="datetime-local" step={1} value={filter.until} onInput={field('until')} />
        </div>
        <div class="row">
          <button type="submit">Filter</button>
          <a class="button" id="audit-export" href={apiUrl('audit/export', query(applied))} download="herald-audit.jsonl">
            Export JSON lines
          </a>
        </div>
      </form>
      <StatusLine status={status} />
      {entries !== null && entries.length === 0 && <Empty>No entry matches.</Empty>}
      {entries !== null && entries.length > 0 && (
        <div class="table-wrap">
          <table id="audit-table">
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Actor</th>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Outcome</th>
                <th scope="col">From</th>
                <th scope="col">Detail</th>
              </tr>
            </thead>
            <tbody>
              {entries.map((entry, index) => (
                <tr key={entry.id ?? index} data-action={entry.action} data-outcome={entry.outcome}>
                  <td>{when(entry.at ?? entry.time)}</td>
                  <td>{entry.actor}</td>
                  <td class="mono">{entry.action}</td>
                  <td class="mono">{entry.target ?? ''}</td>
                  <td class={`outcome ${entry.outcome}`}>{entry.outcome}</td>
                  <td class="mono">{entry.address ?? ''}</td>
                  <td class="mono">{entry.detail === undefined || entry.detail === null ? '' : json(entry.detail)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
