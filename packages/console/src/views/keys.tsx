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
  /** The key's id in routes (its unique name). */
  readonly id: string;
  readonly name: string;
  /** `hk_` and a few characters; null for old keys and keys of the config file. */
  readonly prefix: string | null;
  readonly scopes: readonly string[];
  readonly createdAt?: string | number | null;
  readonly lastUsedAt?: string | number | null;
  readonly notAfter?: string | number | null;
  readonly status?: 'active' | 'expiring' | 'expired';
  readonly revokedAt?: string | number | null;
  /** `config`: in the config file, changed there (no actions here). */
  readonly source?: 'store' | 'config';
}

function statusText(key: KeyRow): string {
  if (key.status === 'expired') return key.revokedAt === null || key.revokedAt === undefined ? 'expired' : `revoked ${when(key.revokedAt)}`;
  if (key.status === 'expiring') return `ends ${when(key.notAfter)}`;
  return 'active';
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
  const [secret, setSecret] = useState<{ title: string; secret: string; key: string } | null>(null);
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
      setSecret({ title: `New key “${answer.key.name}”`, secret: answer.secret, key: answer.key.name });
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
      setSecret({ title: `“${key.name}” rotated: the new key is “${answer.key.name}”`, secret: answer.secret, key: answer.key.name });
      setStatus({ kind: 'ok', text: `Key ${key.name} rotated into ${answer.key.name}: the old secret no longer works.` });
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
      {secret !== null && <SecretOnce title={secret.title} secret={secret.secret} keyName={secret.key} onDone={() => setSecret(null)} />}
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
                <th scope="col">Status</th>
                {owner && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {rows.map((key) => (
                <tr key={key.id} data-key={key.id} data-name={key.name} data-status={key.status}>
                  <td>
                    {key.name}
                    {key.source === 'config' && <span class="muted"> (config file)</span>}
                  </td>
                  <td class="mono" data-field="prefix">
                    {key.prefix === null ? '–' : `${key.prefix}…`}
                  </td>
                  <td>{key.scopes.join(', ')}</td>
                  <td>{when(key.createdAt)}</td>
                  <td data-field="last-used">{when(key.lastUsedAt)}</td>
                  <td data-field="status">{statusText(key)}</td>
                  {owner && (
                    <td class="row-actions">
                      {key.source === 'config' ? (
                        <span class="muted">change it in the config file</span>
                      ) : key.status === 'expired' ? (
                        <span class="muted">–</span>
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
