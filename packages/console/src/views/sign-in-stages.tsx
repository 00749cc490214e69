/**
 * The sign-in steps after the password (console/sign-in.ts on the server):
 * the second-factor screen (a code from the authenticator app, or a
 * recovery code) on a 'second_factor' session, and the enrolment screen on
 * an 'enrol' session (the policy requires a second factor and the admin has
 * none). Each passing step answers a new session, which the page adopts.
 */
import { useEffect, useState } from 'preact/hooks';
import { ApiFailure, call, describeFailure } from '../api.ts';
import { loginNotice, session, type Session } from '../state.ts';
import { PasskeyStep } from './passkeys.tsx';
import { OneTimeCode, TotpEnrolment } from './totp-enrolment.tsx';

async function cancel(): Promise<void> {
  await call('logout', { method: 'POST', quiet401: true }).catch(() => undefined);
  loginNotice.value = 'Signed out.';
  session.value = null;
}

function stepFailure(failure: unknown): string {
  if (failure instanceof ApiFailure && failure.status === 401 && failure.code !== 'mfa_failed') return 'This sign-in has expired. Sign in again.';
  return describeFailure(failure);
}

export function SecondFactor({ current }: { current: Session }) {
  const [recovery, setRecovery] = useState(false);
  const [code, setCode] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError('');
    try {
      const answer = await call<Session & { recoveryCodesLeft?: number }>(recovery ? 'login/recovery-code' : 'login/totp', { method: 'POST', body: { code: code.trim() }, quiet401: true });
      loginNotice.value = '';
      session.value = answer;
    } catch (failure) {
      setError(stepFailure(failure));
      setCode('');
      if (failure instanceof ApiFailure && failure.status === 401 && failure.code !== 'mfa_failed') {
        loginNotice.value = 'This sign-in has expired. Sign in again.';
        session.value = null;
      }
    } finally {
      setBusy(false);
    }
  }

  // Older answers without `factors`: offer the code.
  const totp = current.factors?.totp ?? true;
  const passkeys = (current.factors?.passkeys ?? 0) > 0;
  return (
    <main class="login" id="main">
      <div class="card" id="second-factor-screen" aria-labelledby="second-factor-title">
        <h1 id="second-factor-title">Two-step sign-in</h1>
        <p>
          Signed in as <strong>{current.admin.name}</strong>.{' '}
          {totp ? (recovery ? 'Enter one of your recovery codes.' : 'Enter the 6-digit code from your authenticator app.') : 'Confirm with your passkey.'}
        </p>
        {totp && (
          <form onSubmit={(event) => void submit(event)} id="second-factor" class="enrolment">
            <label for="second-factor-code">{recovery ? 'Recovery code' : 'Code'}</label>
            {recovery ? (
              <input id="second-factor-code" name="recovery-code" autocomplete="off" spellcheck={false} required value={code} onInput={(e) => setCode(e.currentTarget.value)} />
            ) : (
              <OneTimeCode id="second-factor-code" value={code} onValue={setCode} />
            )}
            <p class="status error" role="alert" id="second-factor-error">
              {error}
            </p>
            <button type="submit" class="primary" disabled={busy}>
              {busy ? 'Checking…' : 'Verify'}
            </button>
            <button
              type="button"
              class="link"
              id="second-factor-switch"
              onClick={() => {
                setRecovery(!recovery);
                setCode('');
                setError('');
              }}
            >
              {recovery ? 'Use the authenticator app instead' : 'Use a recovery code instead'}
            </button>
          </form>
        )}
        {passkeys && <PasskeyStep stage="second_factor" />}
        <button type="button" class="link" onClick={() => void cancel()}>
          Cancel
        </button>
      </div>
    </main>
  );
}

export function RequiredEnrolment({ current }: { current: Session }) {
  const [passkeysOn, setPasskeysOn] = useState(false);
  const [enrolled, setEnrolled] = useState(false);
  useEffect(() => {
    call<{ enabled: boolean }>('login/passkey', { quiet401: true }).then(
      (answer) => setPasskeysOn(answer.enabled),
      () => undefined,
    );
  }, []);
  return (
    <main class="login" id="main">
      <div class="card enrol" aria-labelledby="enrol-title">
        <h1 id="enrol-title">Set up two-step sign-in</h1>
        <p>
          Signed in as <strong>{current.admin.name}</strong>. This console requires a second factor for your role: set up an authenticator app to continue.
        </p>
        <TotpEnrolment
          onConfirmed={() => setEnrolled(true)}
          onDone={(answer) => {
            if (answer !== undefined) session.value = answer;
          }}
          onExpired={() => {
            loginNotice.value = 'This sign-in has expired. Sign in again.';
            session.value = null;
          }}
        />
        {passkeysOn && !enrolled && (
          <>
            <p class="muted">Or, instead of an authenticator app:</p>
            <PasskeyStep stage="enrol" />
          </>
        )}
        <button type="button" class="link" onClick={() => void cancel()}>
          Cancel
        </button>
      </div>
    </main>
  );
}
