/**
 * TOTP enrolment, shared by the required-enrolment screen and the security
 * view: the server makes the secret and the QR code (an SVG data: URL; no
 * remote service), the admin scans it or types the secret, confirms with a
 * code, and then sees the ten recovery codes once.
 */
import { useEffect, useState } from 'preact/hooks';
import { ApiFailure, call, describeFailure } from '../api.ts';
import type { Session } from '../state.ts';

interface Started {
  readonly secret: string;
  readonly uri: string;
  readonly qr: string;
}

type Confirmed = Partial<Session> & { readonly recoveryCodes: readonly string[] };

/** A field for a 6-digit code: numeric keyboard on phones, the app's autofill. */
export function OneTimeCode({ id, value, onValue }: { id: string; value: string; onValue: (value: string) => void }) {
  return (
    <input id={id} name="one-time-code" autocomplete="one-time-code" inputMode="numeric" pattern="[0-9]{6}" maxLength={6} required value={value} onInput={(e) => onValue(e.currentTarget.value)} />
  );
}

/** The secret in groups of four, easier to type into an app. */
function grouped(secret: string): string {
  return secret.replace(/(.{4})/g, '$1 ').trim();
}

export function TotpEnrolment({ onDone, onExpired, onConfirmed }: { onDone: (answer: Session | undefined) => void; onExpired: () => void; onConfirmed?: () => void }) {
  const [started, setStarted] = useState<Started | undefined>(undefined);
  const [code, setCode] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const [confirmed, setConfirmed] = useState<Confirmed | undefined>(undefined);

  useEffect(() => {
    call<Started>('mfa/totp/enrol', { method: 'POST', quiet401: true }).then(setStarted, (failure: unknown) => {
      if (failure instanceof ApiFailure && failure.status === 401) onExpired();
      else setError(describeFailure(failure));
    });
  }, []);

  async function confirm(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError('');
    try {
      setConfirmed(await call<Confirmed>('mfa/totp/confirm', { method: 'POST', body: { code: code.trim() }, quiet401: true }));
      onConfirmed?.();
    } catch (failure) {
      if (failure instanceof ApiFailure && failure.status === 401 && failure.code !== 'mfa_failed') onExpired();
      else setError(describeFailure(failure));
      setCode('');
    } finally {
      setBusy(false);
    }
  }

  if (confirmed !== undefined) {
    return (
      <section aria-labelledby="recovery-title" id="recovery-codes-panel">
        <h2 id="recovery-title">Recovery codes</h2>
        <p class="notice" role="status">
          Two-step sign-in is on. Save these recovery codes somewhere safe: each signs you in once if you lose the authenticator. They are shown only now.
        </p>
        <ol id="recovery-codes" class="mono recovery-codes">
          {confirmed.recoveryCodes.map((c) => (
            <li key={c}>{c}</li>
          ))}
        </ol>
        <button type="button" class="primary" id="recovery-codes-saved" onClick={() => onDone(confirmed.csrf !== undefined && confirmed.admin !== undefined ? (confirmed as Session) : undefined)}>
          I have saved these codes
        </button>
      </section>
    );
  }

  if (started === undefined) {
    return (
      <p class={error === '' ? 'status busy' : 'status error'} role={error === '' ? 'status' : 'alert'} id="totp-enrol-error">
        {error === '' ? 'Preparing…' : error}
      </p>
    );
  }

  return (
    <form onSubmit={(event) => void confirm(event)} id="totp-enrol" class="enrolment">
      <p>1. Scan this QR code with an authenticator app (or enter the key below).</p>
      <img id="totp-qr" src={started.qr} alt="QR code of the authenticator key" width={220} height={220} />
      <p>
        Key: <code id="totp-secret">{grouped(started.secret)}</code>
      </p>
      <label for="totp-confirm-code">2. Enter the 6-digit code the app shows</label>
      <OneTimeCode id="totp-confirm-code" value={code} onValue={setCode} />
      <p class="status error" role="alert" id="totp-enrol-error">
        {error}
      </p>
      <button type="submit" class="primary" disabled={busy}>
        {busy ? 'Checking…' : 'Turn on'}
      </button>
    </form>
  );
}
