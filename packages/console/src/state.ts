/**
 * The page's one store (Preact signals): who is signed in, which view is
 * shown (from the URL hash), and the overview's samples from the live
 * stream. Views read these signals and call the API; nothing pokes the DOM.
 */
import { signal } from '@preact/signals';

export type AdminRole = 'owner' | 'operator' | 'viewer';

/** 'full': the console; 'second_factor': the code must follow; 'enrol': a second factor must be set up first. */
export type SessionStage = 'full' | 'second_factor' | 'enrol';

export interface Session {
  readonly admin: { readonly name: string; readonly role: AdminRole };
  readonly csrf: string;
  readonly expiresAt?: string | number;
  readonly idleExpiresAt?: string | number;
  /** Absent from older servers: full. */
  readonly stage?: SessionStage;
  readonly methods?: readonly string[];
  /** On a 'second_factor' session: the second factors the admin can give. */
  readonly factors?: { readonly totp: boolean; readonly passkeys: number };
}

const rank: Record<AdminRole, number> = { viewer: 0, operator: 1, owner: 2 };

/** `undefined` while the page asks the server, `null` when signed out. */
export const session = signal<Session | null | undefined>(undefined);
/** Why the login view shows (session ended, signed out…). */
export const loginNotice = signal('');

export function sessionEnded(notice: string): void {
  if (session.value === null) return;
  session.value = null;
  loginNotice.value = notice;
}

export function allows(minimum: AdminRole): boolean {
  const current = session.value;
  return current !== null && current !== undefined && (current.stage ?? 'full') === 'full' && rank[current.admin.role] >= rank[minimum];
}

/** `#/channels/chat%3Aroom` → `{ view: 'channels', arg: 'chat:room', query }`. */
export interface Route {
  readonly view: string;
  readonly arg: string | undefined;
  readonly query: URLSearchParams;
}

export function parseRoute(hash: string): Route {
  const [path = '', search = ''] = hash.replace(/^#\/?/, '').split('?', 2);
  const [view = '', ...rest] = path.split('/');
  let arg: string | undefined;
  if (rest.length > 0) {
    try {
      arg = decodeURIComponent(rest.join('/'));
    } catch {
      arg = undefined;
    }
  }
  return { view: view === '' ? 'overview' : view, arg, query: new URLSearchParams(search) };
}

export const route = signal<Route>(parseRoute(location.hash));
addEventListener('hashchange', () => {
  route.value = parseRoute(location.hash);
});

export function go(hash: string): void {
  location.hash = hash;
}
