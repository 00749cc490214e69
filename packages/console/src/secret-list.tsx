/**
 * The frame the API keys and Apps views share: a list loaded from one
 * route, actions that say what they do in the status line and reload the
 * list, and a secret answered once (a new key, an app's new secret) shown
 * above the list until the owner dismisses it.
 */
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { Empty, SecretOnce, StatusLine, type Status } from './widgets.tsx';

/** A secret to show once: a title saying whose it is, the value, and the name of what it belongs to (`data-key`). */
export interface ShownSecret {
  readonly title: string;
  readonly secret: string;
  readonly name: string;
}

/** What an action answers: the status line's text, and a secret to show once. */
export type Outcome = string | { readonly text: string; readonly secret: ShownSecret };

export interface SecretList<Row> {
  /** The list; null until the first load answers. */
  readonly rows: readonly Row[] | null;
  readonly status: Status | null;
  setStatus(status: Status | null): void;
  readonly secret: ShownSecret | null;
  dismissSecret(): void;
  /** Loads the list again (a failure goes to the status line). */
  reload(): Promise<void>;
  /** Runs an action: `busy` while it runs, then its outcome (and the list again), or its failure in words. */
  act(busy: string, run: () => Promise<Outcome>): Promise<void>;
}

/** The state of a list view with secrets shown once; `fetchRows` reads the list, `describe` turns a failure into words. */
export function useSecretList<Row>(fetchRows: () => Promise<readonly Row[]>, describe: (error: unknown) => string): SecretList<Row> {
  const [rows, setRows] = useState<readonly Row[] | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [secret, setSecret] = useState<ShownSecret | null>(null);

  async function reload() {
    try {
      setRows(await fetchRows());
    } catch (error) {
      setStatus({ kind: 'error', text: describe(error) });
    }
  }

  useEffect(() => {
    void reload();
  }, []);

  async function act(busy: string, run: () => Promise<Outcome>) {
    setStatus({ kind: 'busy', text: busy });
    try {
      const outcome = await run();
      if (typeof outcome !== 'string') setSecret(outcome.secret);
      setStatus({ kind: 'ok', text: typeof outcome === 'string' ? outcome : outcome.text });
      await reload();
    } catch (error) {
      setStatus({ kind: 'error', text: describe(error) });
    }
  }

  return { rows, status, setStatus, secret, dismissSecret: () => setSecret(null), reload, act };
}

/**
 * The view: its title (`name`-title) and intro, the secret shown once, the
 * status line, then "none yet" or the table (`name`-table) of `columns`
 * with a row per item, then `children` (the forms).
 */
export function SecretListView<Row>(props: {
  name: string;
  title: string;
  intro?: ComponentChildren;
  list: SecretList<Row>;
  /** What the secret's box says under its title (SecretOnce's default otherwise). */
  secretNote?: string;
  empty: string;
  columns: readonly string[];
  row: (row: Row) => ComponentChildren;
  children?: ComponentChildren;
}) {
  const { list } = props;
  return (
    <section aria-labelledby={`${props.name}-title`}>
      <h2 id={`${props.name}-title`}>{props.title}</h2>
      {props.intro}
      {list.secret !== null && <SecretOnce title={list.secret.title} secret={list.secret.secret} keyName={list.secret.name} note={props.secretNote} onDone={list.dismissSecret} />}
      <StatusLine status={list.status} />
      {list.rows !== null && list.rows.length === 0 && <Empty>{props.empty}</Empty>}
      {list.rows !== null && list.rows.length > 0 && (
        <div class="table-wrap">
          <table id={`${props.name}-table`}>
            <thead>
              <tr>
                {props.columns.map((column) => (
                  <th key={column} scope="col">
                    {column}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>{list.rows.map(props.row)}</tbody>
          </table>
        </div>
      )}
      {props.children}
    </section>
  );
}
