/**
 * Passkeys (WebAuthn): the signed-in admin's own list (name, created, last
 * used; rename, remove, add), the "Sign in with a passkey" button of the
 * sign-in page, and the passkey step of a sign-in that waits for a second
 * factor or for enrolment. The ceremonies run in the browser through
 * @simplewebauthn/browser; the server verifies them.
 */
import { useEffect, useState } from 'preact/hooks';
import { startAuthentication, startRegistration, type PublicKeyCredentialCreationOptionsJSON, type PublicKeyCredentialRequestOptionsJSON } from '@simplewebauthn/browser';
import { ApiFailure, call, describeFailure } from '../api.ts';
import { when } from '../format.ts';
import { loginNotice, session, type Session } from '../state.ts';
import { ConfirmButton, Empty, StatusLine, type Status } from '../widgets.tsx';

interface PasskeyRow {
  readonly id: string;
  readonly name: string;
  readonly createdAt: number;
  readonly lastUsedAt: number | null;
  readonly transports: readonly string[];
}

/** Words for a failed ceremony: the browser's (cancelled, no passkey) or the server's. */
function ceremonyFailure(error: unknown): string {
  if (error instanceof ApiFailure) return error.code === 'passkey_failed' ? 'The passkey was not accepted.' : describeFailure(error);
  const name = (error as { name?: string } | null)?.name;
  if (name === 'NotAllowedError' || name === 'AbortError') return 'The passkey prompt was cancelled or timed out.';
  if (name === 'InvalidStateError') return 'This authenticator holds a passkey of yours already.';
  return `The browser could not use a passkey${error instanceof Error ? `: ${error.message}` : '.'}`;
}

/** Runs a sign-in ceremony (passwordless, or the second factor of the session that waits): the new session on success. */
async function passkeySignIn(): Promise<Session> {
  const { options } = await call<{ options: PublicKeyCredentialRequestOptionsJSON }>('login/passkey/options', { method: 'POST', quiet401: true });
  const response = await startAuthentication({ optionsJSON: options });
  return call<Session>('login/passkey/verify', { method: 'POST', body: { response }, quiet401: true });
}

/** Runs a registration ceremony for the signed-in admin (or one who must enrol). */
async function registerPasskey(name: string): Promise<{ passkey: PasskeyRow; session?: Session }> {
  const { options } = await call<{ options: PublicKeyCredentialCreationOptionsJSON }>('passkeys/register/options', { method: 'POST' });
  const response = await startRegistration({ optionsJSON: options });
  return call<{ passkey: PasskeyRow; session?: Session }>('passkeys/register/verify', { method: 'POST', body: { ...(name.trim() === '' ? {} : { name: name.trim() }), response } });
}

/** The sign-in page's button, shown when passkeys are configured. */
export function PasskeySignInButton() {
  const [enabled, setEnabled] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  useEffect(() => {
    call<{ enabled: boolean }>('login/passkey', { quiet401: true }).then(
      (answer) => setEnabled(answer.enabled),
      () => setEnabled(false),
    );
  }, []);
  if (!enabled) return null;
  async function signIn() {
    setBusy(true);
    setError('');
    try {
      const answer = await passkeySignIn();
      loginNotice.value = '';
      session.value = answer;
    } catch (failure) {
      setError(ceremonyFailure(failure));
    } finally {
      setBusy(false);
    }
  }
  return (
    <div class="passkey-sign-in">
      <button type="button" id="passkey-sign-in" disabled={busy} onClick={() => void signIn()}>
        {busy ? 'Waiting for the passkey…' : 'Sign in with a passkey'}
      </button>
      <p class="status error" role="alert" id="passkey-error">
        {error}
      </p>
    </div>
  );
}

/** The passkey part of a sign-in that is not complete: the second factor, or the first passkey of an admin who must enrol. */
export function PasskeyStep({ stage }: { stage: 'second_factor' | 'enrol' }) {
  const [busy, setBusy] = useState(false);
  const [name, setName] = useState('');
  const [error, setError] = useState('');
  async function run() {
    setBusy(true);
    setError('');
    try {
      if (stage === 'second_factor') session.value = await passkeySignIn();
      else {
        const answer = await registerPasskey(name);
        if (answer.session !== undefined) session.value = answer.session;
      }
    } catch (failure) {
      setError(ceremonyFailure(failure));
    } finally {
      setBusy(false);
    }
  }
  return (
    <section class="passkey-step" aria-labelledby="passkey-step-title">
      <h2 id="passkey-step-title">{stage === 'second_factor' ? 'Use your passkey' : 'Add a passkey'}</h2>
      {stage === 'enrol' && (
        <>
          <p>A second factor is required for your account. Add a passkey (this device, a phone or a security key) to finish signing in.</p>
          <label for="passkey-enrol-name">Name of the passkey</label>
          <input id="passkey-enrol-name" maxLength={64} placeholder="laptop" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </>
      )}
      <button type="button" class="primary" id="passkey-step" disabled={busy} onClick={() => void run()}>
        {busy ? 'Waiting for the passkey…' : stage === 'second_factor' ? 'Use a passkey' : 'Add a passkey'}
      </button>
      <p class="status error" role="alert" id="passkey-step-error">
        {error}
      </p>
    </section>
  );
}

/** The signed-in admin's passkeys. */
export function Passkeys() {
  const [rows, setRows] = useState<readonly PasskeyRow[] | null>(null);
  const [enabled, setEnabled] = useState(true);
  const [status, setStatus] = useState<Status | null>(null);
  const [name, setName] = useState('');
  const [editing, setEditing] = useState<{ id: string; name: string } | null>(null);

  async function load() {
    try {
      const answer = await call<{ enabled: boolean; passkeys: PasskeyRow[] }>('passkeys');
      setRows(answer.passkeys);
      setEnabled(answer.enabled);
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  useEffect(() => {
    void load();
  }, []);

  async function add(event: Event) {
    event.preventDefault();
    setStatus({ kind: 'busy', text: 'Waiting for the passkey…' });
    try {
      const answer = await registerPasskey(name);
      setName('');
      setStatus({ kind: 'ok', text: `Passkey “${answer.passkey.name}” added.` });
      await load();
    } catch (error) {
      setStatus({ kind: 'error', text: ceremonyFailure(error) });
    }
  }

  async function rename(event: Event) {
    event.preventDefault();
    if (editing === null) return;
    try {
      await call(`passkeys/${encodeURIComponent(editing.id)}`, { method: 'PATCH', body: { name: editing.name.trim() } });
      setStatus({ kind: 'ok', text: `Renamed to “${editing.name.trim()}”.` });
      setEditing(null);
      await load();
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  async function remove(row: PasskeyRow) {
    try {
      await call(`passkeys/${encodeURIComponent(row.id)}`, { method: 'DELETE' });
      setStatus({ kind: 'ok', text: `Passkey “${row.name}” removed: it no longer signs you in.` });
      await load();
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  return (
    <section aria-labelledby="passkeys-title">
      <h2 id="passkeys-title">Your passkeys</h2>
      <p class="muted">A passkey signs you in without a password, and serves as the second factor after one.</p>
      <StatusLine status={status} />
      {!enabled && <Empty>Passkeys are not configured on this server (admin.console.passkeys.rpId).</Empty>}
      {enabled && rows !== null && rows.length === 0 && <Empty>No passkey yet.</Empty>}
      {rows !== null && rows.length > 0 && (
        <div class="table-wrap">
          <table id="passkeys-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((row) => (
                <tr key={row.id} data-passkey={row.id} data-name={row.name}>
                  <td>
                    {editing?.id === row.id ? (
                      <form onSubmit={(event) => void rename(event)}>
                        <input id="passkey-rename" aria-label="New name" required maxLength={64} value={editing.name} onInput={(e) => setEditing({ id: row.id, name: e.currentTarget.value })} />
                        <button type="submit">Save</button>
                        <button type="button" onClick={() => setEditing(null)}>
                          Cancel
                        </button>
                      </form>
                    ) : (
                      row.name
                    )}
                  </td>
                  <td>{when(row.createdAt)}</td>
                  <td data-field="last-used">{row.lastUsedAt === null ? 'never' : when(row.lastUsedAt)}</td>
                  <td class="row-actions">
                    <button type="button" data-action="rename" onClick={() => setEditing({ id: row.id, name: row.name })}>
                      Rename
                    </button>
                    <ConfirmButton name="remove" label="Remove" question={`Remove the passkey ${row.name}?`} danger onConfirm={() => remove(row)} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {enabled && (
        <form class="card" onSubmit={(event) => void add(event)} aria-labelledby="add-passkey-title">
          <h3 id="add-passkey-title">Add a passkey</h3>
          <label for="passkey-name">Name</label>
          <input id="passkey-name" maxLength={64} value={name} placeholder="laptop" onInput={(e) => setName(e.currentTarget.value)} />
          <button type="submit" class="primary" id="passkey-add">
            Add a passkey
          </button>
        </form>
      )}
    </section>
  );
}
