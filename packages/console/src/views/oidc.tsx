/**
 * Single sign-on on the sign-in page: one button per OpenID Connect
 * provider (a plain link: the browser goes to the provider and comes back
 * signed in), the refusal page a failed sign-in returns to
 * (`#/signin-refused?reason=…&provider=…`), and the provider's own logout
 * offered after signing out.
 */
import { signal } from '@preact/signals';
import { useEffect, useState } from 'preact/hooks';
import { call } from '../api.ts';
import { go, route } from '../state.ts';

export interface OidcProviderEntry {
  readonly id: string;
  readonly label: string;
  /** `B/oidc/ID/start` */
  readonly start: string;
}

/** The provider's logout page after signing out of the console (null: none to offer). */
export const providerLogout = signal<string | null>(null);

function useProviders(): readonly OidcProviderEntry[] {
  const [providers, setProviders] = useState<readonly OidcProviderEntry[]>([]);
  useEffect(() => {
    call<{ providers: OidcProviderEntry[] }>('oidc/providers', { quiet401: true }).then(
      (answer) => setProviders(answer.providers),
      () => setProviders([]),
    );
  }, []);
  return providers;
}

/** The sign-in buttons (nothing when no provider is configured). */
export function OidcButtons() {
  const providers = useProviders();
  if (providers.length === 0) return null;
  return (
    <div class="oidc" aria-label="Single sign-on">
      {providers.map((p) => (
        <a key={p.id} class="button" id={`oidc-${p.id}`} href={p.start}>
          Sign in with {p.label}
        </a>
      ))}
    </div>
  );
}

/** After signing out: the provider's logout, when it has one. */
export function ProviderLogout() {
  const url = providerLogout.value;
  if (url === null) return null;
  return (
    <p class="notice" id="provider-logout">
      You are still signed in at your identity provider. <a href={url}>Sign out there too</a>.
    </p>
  );
}

const REASONS: Record<string, string> = {
  not_mapped: 'Your account at the identity provider is not allowed into this console. Ask an owner to add a rule for you (by group, email domain, email or subject).',
  disabled: 'Your console account is disabled. Ask an owner.',
  name_taken: 'No console account could be made for you: the names it could take are in use. Ask an owner.',
  state: 'This sign-in was not started here, was already used, or took too long. Start again.',
  code_rejected: 'The identity provider refused to complete this sign-in (the code was used or is not valid). Start again.',
  nonce: 'The identity provider\'s answer does not belong to this sign-in (nonce mismatch). Start again.',
  id_token_expired: 'The identity provider\'s answer has expired (check the clocks of both servers). Start again.',
  id_token_invalid: 'The identity provider\'s answer could not be verified. Start again, or ask an owner to check the provider\'s settings.',
  provider_error: 'The identity provider did not sign you in.',
  provider_unreachable: 'The identity provider cannot be reached. Try again later.',
};

/** The page a refused single sign-on returns to: what happened, in words, and the way back. */
export function SignInRefused() {
  const reason = route.value.query.get('reason') ?? '';
  const provider = route.value.query.get('provider') ?? '';
  return (
    <main class="login" id="main">
      <section class="card" aria-labelledby="refused-title" id="signin-refused" data-reason={reason}>
        <h1 id="refused-title">Sign-in refused</h1>
        <p role="alert" id="refused-reason">
          {REASONS[reason] ?? 'The sign-in did not succeed. Start again.'}
        </p>
        {provider !== '' && <p class="empty">Provider: {provider}</p>}
        <button type="button" class="primary" id="refused-back" onClick={() => go('#/')}>
          Back to sign-in
        </button>
      </section>
    </main>
  );
}
