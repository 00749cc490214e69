/**
 * Security: the signed-in admin's two-step sign-in (TOTP: set up, recovery
 * codes left, remove with a code) and, for owners, every admin's second
 * factors with a reset (for an admin who lost the authenticator).
 */
import { useEffect, useState } from 'preact/hooks';
import { call, describeFailure } from '../api.ts';
import { when } from '../format.ts';
import { allows, session } from '../state.ts';
import { TotpEnrolment } from './totp-enrolment.tsx';

interface MfaStatus {
  readonly totp: { readonly enrolled: boolean; readonly confirmedAt: number | null; readonly recoveryCodesLeft: number };
  readonly required: 'none' | 'all' | readonly string[];
}

interface AdminRow {
  readonly name: string;
  readonly role: string;
  readonly mfa?: { readonly totp: boolean; readonly passkeys: number };
}

export function Security() {
  const [status, setStatus] = useState<MfaStatus | undefined>(undefined);
  const [enrolling, setEnrolling] = useState(false);
  const [code, setCode] = useState('');
  const [message, setMessage] = useState({ text: '', error: false });

  function load() {
    call<MfaStatus>('mfa').then(setStatus, (failure: unknown) => setMessage({ text: describeFailure(failure), error: true }));
  }
  useEffect(load, []);

  async function remove(event: Event) {
    event.preventDefault();
    try {
      await call('mfa/totp', { method: 'DELETE', body: { code: code.trim() } });
      setMessage({ text: 'Two-step sign-in is off.', error: false });
      setCode('');
      load();
    } catch (failure) {
      setMessage({ text: describeFailure(failure), error: true });
    }
  }

  return (
    <>
      <h2>Security</h2>
      <section class="card" aria-labelledby="totp-title" id="totp-status">
        <h3 id="totp-title">Two-step sign-in (authenticator app)</h3>
        {status === undefined ? (
          <p class="status busy">Loading…</p>
        ) : enrolling ? (
          <TotpEnrolment
            onDone={(answer) => {
              if (answer !== undefined) session.value = answer;
              setEnrolling(false);
              setMessage({ text: 'Two-step sign-in is on.', error: false });
              load();
            }}
            onExpired={() => setEnrolling(false)}
          />
        ) : status.totp.enrolled ? (
          <>
            <p id="totp-state">
              On since {when(status.totp.confirmedAt)}; {status.totp.recoveryCodesLeft} of 10 recovery codes left.
            </p>
            <form class="row" onSubmit={(event) => void remove(event)}>
              <label for="totp-remove-code">Code or recovery code</label>
              <input id="totp-remove-code" autocomplete="one-time-code" required value={code} onInput={(e) => setCode(e.currentTarget.value)} />
              <button type="submit" class="danger">
                Turn off
              </button>
            </form>
          </>
        ) : (
          <>
            <p id="totp-state">Off. {status.required !== 'none' ? 'This console requires it for some roles.' : ''}</p>
            <button type="button" class="primary" id="totp-set-up" onClick={() => setEnrolling(true)}>
              Set up an authenticator app
            </button>
          </>
        )}
        <p class={message.error ? 'status error' : 'status ok'} role={message.error ? 'alert' : 'status'}>
          {message.text}
        </p>
      </section>
      {allows('owner') && <AdminFactors />}
    </>
  );
}

function AdminFactors() {
  const [admins, setAdmins] = useState<readonly AdminRow[] | undefined>(undefined);
  const [message, setMessage] = useState({ text: '', error: false });

  function load() {
    call<{ admins: AdminRow[] }>('admins').then(
      (answer) => setAdmins(answer.admins),
      (failure: unknown) => setMessage({ text: describeFailure(failure), error: true }),
    );
  }
  useEffect(load, []);

  async function reset(name: string) {
    if (!confirm(`Remove the authenticator app, recovery codes and passkeys of ${name} and end their sessions?`)) return;
    try {
      await call(`admins/${encodeURIComponent(name)}/reset-mfa`, { method: 'POST' });
      setMessage({ text: `Second factors of ${name} removed.`, error: false });
      load();
    } catch (failure) {
      setMessage({ text: describeFailure(failure), error: true });
    }
  }

  return (
    <section class="card" aria-labelledby="admin-factors-title">
      <h3 id="admin-factors-title">Admins' second factors</h3>
      {admins === undefined ? (
        <p class="status busy">Loading…</p>
      ) : (
        <table id="admin-factors">
          <thead>
            <tr>
              <th scope="col">Admin</th>
              <th scope="col">Role</th>
              <th scope="col">Authenticator app</th>
              <th scope="col">Passkeys</th>
              <th scope="col">
                <span class="muted">Action</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {admins.map((a) => (
              <tr key={a.name} data-name={a.name}>
                <td>{a.name}</td>
                <td>{a.role}</td>
                <td>{a.mfa?.totp === true ? 'on' : 'off'}</td>
                <td>{a.mfa?.passkeys ?? 0}</td>
                <td>
                  {(a.mfa?.totp === true || (a.mfa?.passkeys ?? 0) > 0) && (
                    <button type="button" class="danger" onClick={() => void reset(a.name)}>
                      Reset
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <p class={message.error ? 'status error' : 'status ok'} role={message.error ? 'alert' : 'status'}>
        {message.text}
      </p>
    </section>
  );
}
