/** Sign in: name and password, the server's answer in words (never which of the two was wrong). */
import { useState } from 'preact/hooks';
import { ApiFailure, call } from '../api.ts';
import { loginNotice, session, type Session } from '../state.ts';
import { PasskeySignInButton } from './passkeys.tsx';
import { OidcButtons, ProviderLogout } from './oidc.tsx';

export function Login() {
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError('');
    try {
      const answer = await call<Session>('login', { method: 'POST', body: { name, password }, quiet401: true });
      loginNotice.value = '';
      session.value = answer;
    } catch (failure) {
      if (failure instanceof ApiFailure && failure.code === 'login_locked') setError('Too many failed attempts. Wait a while, or ask an owner to unlock the account.');
      else if (failure instanceof ApiFailure && (failure.code === 'login_failed' || failure.status === 401)) setError('The name or the password is wrong.');
      else if (failure instanceof ApiFailure && failure.status === 400) setError('Enter a name and a password.');
      else setError(failure instanceof ApiFailure && failure.code === 'network' ? 'Herald cannot be reached.' : 'Signing in failed. Try again.');
      setPassword('');
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="login" id="main">
      <form class="card" onSubmit={(event) => void submit(event)} aria-labelledby="login-title">
        <h1 id="login-title">Herald console</h1>
        {loginNotice.value !== '' && (
          <p class="notice" role="status" id="login-notice">
            {loginNotice.value}
          </p>
        )}
        <label for="login-name">Name</label>
        <input id="login-name" name="username" autocomplete="username" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        <label for="login-password">Password</label>
        <input id="login-password" name="password" type="password" autocomplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        <p class="status error" role="alert" id="login-error">
          {error}
        </p>
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <PasskeySignInButton />
        <OidcButtons />
        <ProviderLogout />
      </form>
    </main>
  );
}
