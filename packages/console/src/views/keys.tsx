/**
 * API keys (owners): list with the public prefix, scopes, created and last
 * used; create one (the secret is shown once), rotate, revoke.
 */
import { useState } from 'preact/hooks';
import { call, describeFailure } from '../api.ts';
import { when } from '../format.ts';
import { SecretListView, useSecretList } from '../secret-list.tsx';
import { allows } from '../state.ts';
import { ConfirmButton } from '../widgets.tsx';

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
  const list = useSecretList(async () => (await call<{ keys: KeyRow[] }>('keys')).keys, describeFailure);
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState<readonly string[]>(['publish']);
  const owner = allows('owner');

  async function create(event: Event) {
    event.preventDefault();
    if (scopes.length === 0) {
      list.setStatus({ kind: 'error', text: 'Choose at least one scope.' });
      return;
    }
    await list.act('Creating…', async () => {
      const answer = await call<{ key: KeyRow; secret: string }>('keys', { method: 'POST', body: { name: name.trim(), scopes } });
      setName('');
      return { text: `Key ${answer.key.name} created.`, secret: { title: `New key “${answer.key.name}”`, secret: answer.secret, name: answer.key.name } };
    });
  }

  const rotate = (key: KeyRow) =>
    list.act('Rotating…', async () => {
      const answer = await call<{ key: KeyRow; secret: string }>(`keys/${encodeURIComponent(key.id)}/rotate`, { method: 'POST' });
      return {
        text: `Key ${key.name} rotated into ${answer.key.name}: the old secret no longer works.`,
        secret: { title: `“${key.name}” rotated: the new key is “${answer.key.name}”`, secret: answer.secret, name: answer.key.name },
      };
    });

  const revoke = (key: KeyRow) =>
    list.act('Revoking…', async () => {
      await call(`keys/${encodeURIComponent(key.id)}/revoke`, { method: 'POST' });
      return `Key ${key.name} revoked.`;
    });

  return (
    <SecretListView
      name="keys"
      title="API keys"
      list={list}
      empty="No API key yet."
      columns={['Name', 'Prefix', 'Scopes', 'Created', 'Last used', 'Status', ...(owner ? ['Actions'] : [])]}
      row={(key) => (
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
      )}
    >
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
    </SecretListView>
  );
}
