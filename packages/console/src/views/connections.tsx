/**
 * Connections and users: find a user's connections (transport, node,
 * channels, address, since), disconnect them, revoke the user (every token
 * issued before now) or one token by its id (operators).
 */
import { useEffect, useState } from 'preact/hooks';
import { call, describeFailure } from '../api.ts';
import { when } from '../format.ts';
import { allows, route } from '../state.ts';
import { ConfirmButton, Empty, StatusLine, type Status } from '../widgets.tsx';
import { shortId } from '../overview-stream.ts';

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
  const [user, setUser] = useState(initial);
  const [shownUser, setShownUser] = useState<string | null>(null);
  const [rows, setRows] = useState<readonly ConnectionRow[] | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [token, setToken] = useState('');
  const [tokenStatus, setTokenStatus] = useState<Status | null>(null);
  const operator = allows('operator');

  async function find(name: string) {
    setStatus({ kind: 'busy', text: 'Searching…' });
    try {
      const answer = await call<{ connections: ConnectionRow[] }>('connections', { query: { user: name } });
      setRows(answer.connections);
      setShownUser(name);
      setStatus(null);
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  useEffect(() => {
    if (initial !== '') void find(initial);
  }, [initial]);

  async function act(path: string, done: string) {
    setStatus({ kind: 'busy', text: 'Working…' });
    try {
      const answer = await call<{ disconnected?: number } | undefined>(path, { method: 'POST' });
      setStatus({ kind: 'ok', text: answer?.disconnected === undefined ? done : `${done} (${answer.disconnected} connection${answer.disconnected === 1 ? '' : 's'}).` });
      if (shownUser !== null) {
        const refreshed = await call<{ connections: ConnectionRow[] }>('connections', { query: { user: shownUser } });
        setRows(refreshed.connections);
      }
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
          if (user.trim() !== '') void find(user.trim());
        }}
      >
        <label for="connections-user">User</label>
        <input id="connections-user" type="search" required value={user} placeholder="user id (the token's sub)" onInput={(e) => setUser(e.currentTarget.value)} />
        <button type="submit">Find connections</button>
      </form>
      <StatusLine status={status} />
      {shownUser !== null && shownUser !== '' && operator && (
        <div class="actions row" aria-label={`Actions for ${shownUser}`} role="group">
          <ConfirmButton name="disconnect" label={`Disconnect ${shownUser}`} question={`Disconnect every connection of ${shownUser}?`} danger onConfirm={() => act(`users/${encodeURIComponent(shownUser)}/disconnect`, `${shownUser} disconnected`)} />
          <ConfirmButton name="revoke-user" label={`Revoke ${shownUser}`} question={`Revoke every token of ${shownUser} issued until now?`} danger onConfirm={() => act(`users/${encodeURIComponent(shownUser)}/revoke`, `${shownUser} revoked: tokens issued until now no longer connect`)} />
        </div>
      )}
      {rows !== null && rows.length === 0 && <Empty>No connection{shownUser === '' || shownUser === null ? '' : ` for ${shownUser}`}.</Empty>}
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
