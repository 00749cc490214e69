/**
 * API keys (owners): list with the public prefix, scopes, created and last
 * used; create one (the secret is shown once), rotate, revoke.
 */
import { useEffect, useState } from 'preact/hooks';
import { call, describeFailure } from '../api.ts';
import { when } from '../format.ts';
import { allows } from '../state.ts';
import { ConfirmButton, Empty, SecretOnce, StatusLine, type Status } from '../widgets.tsx';

interface KeyRow {
  readonly id: string;
  readonly name: string;
  readonly prefix: string;
  readonly scopes: readonly string[];
  readonly createdAt?: string | number | null;
  readonly lastUsedAt?: string | number | null;
  readonly revokedAt?: string | number | null;
}

const SCOPES = [
  { scope: 'publish', text: 'publish: publish and broadcast' },
  { scope: 'read', text: 'read: history, presence, channels, info' },
  { scope: 'admin', text: 'admin: disconnect, revoke, and everything' },
] as const;

export function Keys() {
  const [rows, setRows] = useState<readonly KeyRow[] | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState<readonly string[]>(['publish']);
  const [secret, setSecret] = useState<{ title: string; secret: string } | null>(null);
  const owner = allows('owner');

  async function load() {
    try {
      setRows((await call<{ keys: KeyRow[] }>('keys')).keys);
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  useEffect(() => {
    void load();
  }, []);

  async function create(event: Event) {
    event.preventDefault();
    if (scopes.length === 0) {
      setStatus({ kind: 'error', text: 'Choose at least one scope.' });
      return;
    }
    setStatus({ kind: 'busy', text: 'Creating…' });
    try {
      const answer = await call<{ key: KeyRow; secret: string }>('keys', { method: 'POST', body: { name: name.trim(), scopes } });
      setSecret({ title: `New key “${answer.key.name}”`, secret: answer.secret });
      setName('');
      setStatus({ kind: 'ok', text: `Key ${answer.key.name} created.` });
      await load();
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  async function rotate(key: KeyRow) {
    setStatus({ kind: 'busy', text: 'Rotating…' });
    try {
      const answer = await call<{ key: KeyRow; secret: string }>(`keys/${encodeURIComponent(key.id)}/rotate`, { method: 'POST' });
      setSecret({ title: `New secret of “${key.name}”`, secret: answer.secret });
      setStatus({ kind: 'ok', text: `Key ${key.name} rotated: the old secret no longer works.` });
      await load();
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  async function revoke(key: KeyRow) {
    setStatus({ kind: 'busy', text: 'Revoking…' });
    try {
      await call(`keys/${encodeURIComponent(key.id)}/revoke`, { method: 'POST' });
      setStatus({ kind: 'ok', text: `Key ${key.name} revoked.` });
      await load();
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  return (
    <section aria-labelledby="keys-title">
      <h2 id="keys-title">API keys</h2>
      {secret !== null && <SecretOnce title={secret.title} secret={secret.secret} onDone={() => setSecret(null)} />}
      <StatusLine status={status} />
      {rows !== null && rows.length === 0 && <Empty>No API key yet.</Empty>}
      {rows !== null && rows.length > 0 && (
        <div class="table-wrap">
          <table id="keys-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Prefix</th>
                <th scope="col">Scopes</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                {owner && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {rows.map((key) => (
                <tr key={key.id} data-key={key.id} data-name={key.name}>
                  <td>{key.name}</td>
                  <td class="mono">{key.prefix}…</td>
                  <td>{key.scopes.join(', ')}</td>
                  <td>{when(key.createdAt)}</td>
                  <td data-field="last-used">{when(key.lastUsedAt)}</td>
                  {owner && (
                    <td class="row-actions">
                      {key.revokedAt !== undefined && key.revokedAt !== null ? (
                        <span class="muted">revoked</span>
                      ) : (
                        <>
                          <ConfirmButton name="rotate" label="Rotate" question={`Replace the secret of ${key.name}?`} onConfirm={() => rotate(key)} />
                          <ConfirmButton name="revoke" label="Revoke" question={`Revoke ${key.name}?`} danger onConfirm={() => revoke(key)} />
                        </>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {owner && (
        <form class="card" onSubmit={(event) => void create(event)} aria-labelledby="create-key-title">
          <h3 id="create-key-title">Create a key</h3>
          <label for="key-name">Name</label>
          <input id="key-name" required maxLength={100} value={name} placeholder="backend-prod" onInput={(e) => setName(e.currentTarget.value)} />
          <fieldset>
            <legend>Scopes</legend>
            {SCOPES.map(({ scope, text }) => (
              <label key={scope} class="check">
                <input
                  type="checkbox"
                  name="scope"
                  value={scope}
                  checked={scopes.includes(scope)}
                  onChange={(e) => setScopes(e.currentTarget.checked ? [...scopes, scope] : scopes.filter((s) => s !== scope))}
                />
                {text}
              </label>
            ))}
          </fieldset>
          <button type="submit" class="primary">
            Create key
          </button>
        </form>
      )}
    </section>
  );
}
