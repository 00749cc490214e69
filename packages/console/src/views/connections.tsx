/**
 * Connections and users: find a user's connections (transport, node,
 * channels, address, since), disconnect them, revoke the user (every token
 * issued before now) or one token by its id (operators). A user is an
 * app's: with apps, the search names the app (default: the default app,
 * whose users are the server's own); `#/connections?user=ann&app=shop`.
 */
import { useEffect, useState } from 'preact/hooks';
import { call, describeFailure } from '../api.ts';
import { when } from '../format.ts';
import { allows, route } from '../state.ts';
import { ConfirmButton, Empty, StatusLine, type Status } from '../widgets.tsx';
import { shortId } from '../overview-stream.ts';
import { AppSelect, choiceOf, ofApp, useAppChoices } from '../app-choice.tsx';

interface ConnectionRow {
  readonly client: string;
  readonly user: string;
  readonly transport: string;
  readonly node: string;
  readonly channels: readonly string[] | number;
  readonly address?: string;
  readonly since?: string | number;
}

export function Connections() {
  const initial = route.value.query.get('user') ?? '';
  const initialApp = route.value.query.get('app') ?? '';
  const [user, setUser] = useState(initial);
  const [app, setApp] = useState(initialApp);
  const apps = useAppChoices();
  /** The user and app ('' for the default app) the table shows. */
  const [shown, setShown] = useState<{ readonly user: string; readonly app: string } | null>(null);
  const [rows, setRows] = useState<readonly ConnectionRow[] | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [token, setToken] = useState('');
  const [tokenStatus, setTokenStatus] = useState<Status | null>(null);
  const operator = allows('operator');
  /** `ann`, or `ann of Shop (shop)` for another app's user. */
  const who = (name: string, appId: string): string => ofApp(apps, name, appId);

  async function find(name: string, appId: string) {
    setStatus({ kind: 'busy', text: 'Searching…' });
    try {
      const answer = await call<{ connections: ConnectionRow[] }>('connections', { query: { user: name, app: appId } });
      setRows(answer.connections);
      setShown({ user: name, app: appId });
      setStatus(null);
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  // `?app=` naming the default app is the default choice.
  useEffect(() => {
    setApp((current) => choiceOf(apps, current));
  }, [apps]);

  useEffect(() => {
    if (initial !== '') void find(initial, initialApp);
  }, [initial, initialApp]);

  async function act(path: string, done: string) {
    if (shown === null) return;
    setStatus({ kind: 'busy', text: 'Working…' });
    try {
      const answer = await call<{ disconnected?: number } | undefined>(path, { method: 'POST', body: shown.app === '' ? {} : { app: shown.app } });
      setStatus({ kind: 'ok', text: answer?.disconnected === undefined ? done : `${done} (${answer.disconnected} connection${answer.disconnected === 1 ? '' : 's'}).` });
      const refreshed = await call<{ connections: ConnectionRow[] }>('connections', { query: { user: shown.user, app: shown.app } });
      setRows(refreshed.connections);
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  async function revokeToken(event: Event) {
    event.preventDefault();
    const id = token.trim();
    if (id === '') return;
    setTokenStatus({ kind: 'busy', text: 'Revoking…' });
    try {
      await call(`tokens/${encodeURIComponent(id)}/revoke`, { method: 'POST' });
      setTokenStatus({ kind: 'ok', text: `Token ${id} revoked.` });
      setToken('');
    } catch (error) {
      setTokenStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  return (
    <section aria-labelledby="connections-title">
      <h2 id="connections-title">Connections and users</h2>
      <form
        class="search row"
        role="search"
        onSubmit={(event) => {
          event.preventDefault();
          if (user.trim() !== '') void find(user.trim(), app);
        }}
      >
        <AppSelect id="connections-app" apps={apps} value={app} onChange={setApp} />
        <label for="connections-user">User</label>
        <input id="connections-user" type="search" required value={user} placeholder="user id (the token's sub)" onInput={(e) => setUser(e.currentTarget.value)} />
        <button type="submit">Find connections</button>
      </form>
      <StatusLine status={status} />
      {shown !== null && shown.user !== '' && operator && (
        <div class="actions row" aria-label={`Actions for ${who(shown.user, shown.app)}`} role="group">
          <ConfirmButton name="disconnect" label={`Disconnect ${who(shown.user, shown.app)}`} question={`Disconnect every connection of ${who(shown.user, shown.app)}?`} danger onConfirm={() => act(`users/${encodeURIComponent(shown.user)}/disconnect`, `${who(shown.user, shown.app)} disconnected`)} />
          <ConfirmButton name="revoke-user" label={`Revoke ${who(shown.user, shown.app)}`} question={`Revoke every token of ${who(shown.user, shown.app)} issued until now?`} danger onConfirm={() => act(`users/${encodeURIComponent(shown.user)}/revoke`, `${who(shown.user, shown.app)} revoked: tokens issued until now no longer connect`)} />
        </div>
      )}
      {rows !== null && rows.length === 0 && <Empty>No connection{shown === null || shown.user === '' ? '' : ` for ${who(shown.user, shown.app)}`}.</Empty>}
      {rows !== null && rows.length > 0 && (
        <div class="table-wrap">
          <table id="connections-table">
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Transport</th>
                <th scope="col">Node</th>
                <th scope="col">Channels</th>
                <th scope="col">Address</th>
                <th scope="col">Since</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((row) => (
                <tr key={row.client} data-client={row.client}>
                  <td>{row.user === '' ? <span class="muted">anonymous</span> : row.user}</td>
                  <td>{row.transport}</td>
                  <td class="mono" title={row.node}>
                    {shortId(row.node)}
                  </td>
                  <td class="mono">{typeof row.channels === 'number' ? row.channels : row.channels.join(', ')}</td>
                  <td class="mono">{row.address ?? ''}</td>
                  <td>{when(row.since)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {operator && (
        <form class="card" onSubmit={(event) => void revokeToken(event)} aria-labelledby="token-title">
          <h3 id="token-title">Revoke one token</h3>
          <label for="token-id">Token id (its jti claim)</label>
          <input id="token-id" value={token} onInput={(e) => setToken(e.currentTarget.value)} />
          <button type="submit" class="danger">
            Revoke token
          </button>
          <StatusLine status={tokenStatus} />
        </form>
      )}
    </section>
  );
}
