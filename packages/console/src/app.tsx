/**
 * The console's frame: the session check at start, the login view when
 * nobody is signed in, otherwise the header (views, who is signed in, sign
 * out) and the view the URL hash names. The idle timer asks the server once
 * the session's idle time has passed without a call, so a page left open
 * shows the login by itself.
 */
import { useEffect, useState } from 'preact/hooks';
import { call, describeFailure, lastActivity } from './api.ts';
import { startOverviewStream, stopOverviewStream } from './overview-stream.ts';
import { allows, loginNotice, route, session, type Session } from './state.ts';
import { Apps } from './views/apps.tsx';
import { Audit } from './views/audit.tsx';
import { Channels } from './views/channels.tsx';
import { Connections } from './views/connections.tsx';
import { Keys } from './views/keys.tsx';
import { Login } from './views/login.tsx';
import { providerLogout, SignInRefused } from './views/oidc.tsx';
import { Overview } from './views/overview.tsx';
import { Security } from './views/security.tsx';
import { RequiredEnrolment, SecondFactor } from './views/sign-in-stages.tsx';
import { Passkeys } from './views/passkeys.tsx';

const VIEWS = [
  { view: 'overview', title: 'Overview', component: Overview },
  { view: 'channels', title: 'Channels', component: Channels },
  { view: 'connections', title: 'Connections', component: Connections },
  { view: 'keys', title: 'API keys', component: Keys },
  { view: 'apps', title: 'Apps', component: Apps },
  { view: 'audit', title: 'Audit log', component: Audit },
  { view: 'security', title: 'Security', component: Security },
  { view: 'passkeys', title: 'Passkeys', component: Passkeys },
] as const;

function time(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = typeof value === 'number' ? (value < 1e11 ? value * 1000 : value) : Date.parse(value);
  return Number.isFinite(ms) ? ms : undefined;
}

export function App() {
  const current = session.value;
  /** Fully signed in: the console's views; otherwise the next sign-in step (or the login). */
  const full = current !== null && current !== undefined && (current.stage ?? 'full') === 'full';

  useEffect(() => {
    call<Session>('session', { quiet401: true }).then(
      (answer) => {
        session.value = answer;
      },
      () => {
        session.value = null;
      },
    );
  }, []);

  // The live stream runs while someone is fully signed in.
  useEffect(() => {
    if (!full) return undefined;
    startOverviewStream();
    return stopOverviewStream;
  }, [full ? current.admin.name : '']);

  // Idle timeout: once the idle time has passed since the last call, ask the server (a 401 shows the login).
  useEffect(() => {
    if (current === null || current === undefined) return undefined;
    const idleEnd = time(current.idleExpiresAt);
    if (idleEnd === undefined) return undefined;
    const idleMs = Math.max(1000, idleEnd - Date.now());
    let probing = false;
    const timer = setInterval(() => {
      if (probing || Date.now() < lastActivity + idleMs + 500) return;
      probing = true;
      call<Session>('session')
        .then((answer) => {
          session.value = answer;
        })
        .catch(() => undefined)
        .finally(() => {
          probing = false;
        });
    }, 1000);
    return () => clearInterval(timer);
  }, [current]);

  useEffect(() => {
    const view = VIEWS.find((v) => v.view === route.value.view);
    if (route.value.view === 'signin-refused') document.title = 'Sign-in refused · Herald console';
    else document.title = !full ? 'Sign in · Herald console' : `${view?.title ?? 'Not found'} · Herald console`;
  }, [current, route.value.view]);

  if (current === undefined) return <p class="loading">Loading…</p>;
  // A refused single sign-on shows why, whether or not an earlier session is still open in this browser.
  if (route.value.view === 'signin-refused') return <SignInRefused />;
  if (current === null) return <Login />;
  if (current.stage === 'second_factor') return <SecondFactor current={current} />;
  if (current.stage === 'enrol') return <RequiredEnrolment current={current} />;
  const view = VIEWS.find((v) => v.view === route.value.view);
  const Component = view?.component;
  return (
    <>
      <a class="skip" href="#main" onClick={(event) => { event.preventDefault(); document.getElementById('main')?.focus(); }}>
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Herald console</span>
        <nav aria-label="Views">
          <ul>
            {VIEWS.filter((v) => (v.view !== 'keys' && v.view !== 'audit' && v.view !== 'apps') || allows('owner')).map((v) => (
              <li key={v.view}>
                <a href={`#/${v.view}`} aria-current={v.view === route.value.view ? 'page' : undefined}>
                  {v.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <Account session={current} />
      </header>
      <main id="main" tabIndex={-1}>
        {Component === undefined ? <p>No such view. <a href="#/overview">Go to the overview</a>.</p> : <Component />}
      </main>
    </>
  );
}

function Account({ session: current }: { session: Session }) {
  const [error, setError] = useState('');
  async function signOut(everywhere: boolean) {
    try {
      // A single sign-on session signs out through oidc/logout, which also names the provider's logout page.
      if (!everywhere && current.methods?.includes('oidc') === true) {
        providerLogout.value = (await call<{ endSessionUrl: string | null }>('oidc/logout', { method: 'POST' })).endSessionUrl;
      } else {
        await call(everywhere ? 'logout-everywhere' : 'logout', { method: 'POST' });
      }
      stopOverviewStream();
      loginNotice.value = everywhere ? 'Signed out on every device.' : 'Signed out.';
      session.value = null;
    } catch (failure) {
      setError(describeFailure(failure));
    }
  }
  return (
    <div class="account">
      <span id="whoami">
        {current.admin.name} <span class="role">{current.admin.role}</span>
      </span>
      <button type="button" id="sign-out" onClick={() => void signOut(false)}>
        Sign out
      </button>
      <button type="button" id="sign-out-everywhere" class="link" onClick={() => void signOut(true)}>
        Sign out everywhere
      </button>
      {error !== '' && (
        <span class="status error" role="alert">
          {error}
        </span>
      )}
    </div>
  );
}
