/**
 * Apps (owners): the tenants of the Pusher endpoint. The list (id, key,
 * where it is defined, enabled, its switches, its connections on this node as
 * its cap counts them: Pusher sockets and native connections); create one (the
 * secret is shown once); edit a stored app's name, switches, origins,
 * limits and webhooks; rotate its secret (shown once); delete it. Apps of
 * the config file are shown read only.
 */
import { useState } from 'preact/hooks';
import { ApiFailure, call, describeFailure } from '../api.ts';
import { when } from '../format.ts';
import { SecretListView, useSecretList } from '../secret-list.tsx';
import { ConfirmButton, StatusLine, type Status } from '../widgets.tsx';

interface Webhook {
  readonly url: string;
  readonly events: readonly string[];
  readonly channelPrefix?: string;
}

interface AppRow {
  readonly id: string;
  readonly key: string;
  readonly name: string;
  readonly enabled: boolean;
  readonly clientEvents: boolean;
  readonly userAuthentication: boolean;
  readonly subscriptionCount: boolean;
  readonly allowedOrigins: readonly string[] | null;
  readonly limits: Record<string, number>;
  readonly webhooks: readonly Webhook[];
  readonly source: 'config' | 'store';
  readonly default: boolean;
  readonly createdAt: number | null;
  /** This node's, as the app's maxConnections counts them; `native` null for the default app (its native paths are the server's). */
  readonly connections: { readonly pusher: number; readonly native: number | null } | null;
}

/** An app's connections: the number its cap judges (per node), and of which kind. */
function Connections({ counts }: { readonly counts: AppRow['connections'] }) {
  if (counts === null) return <>–</>;
  if (counts.native === null) {
    return (
      <>
        {counts.pusher}
        <span class="muted"> Pusher (its native connections are the server's: Overview)</span>
      </>
    );
  }
  return (
    <>
      {counts.pusher + counts.native}
      <span class="muted">
        {' '}
        ({counts.pusher} Pusher, {counts.native} native)
      </span>
    </>
  );
}

/** The limits, in the order and words the form shows them (docs/pusher.md, "Limits"). */
const LIMITS: readonly (readonly [string, string])[] = [
  ['maxConnections', 'Connections per node, Pusher and native together (0: no cap of its own)'],
  ['maxEventPayloadBytes', 'Event data bytes'],
  ['maxChannelNameLength', 'Channel name length'],
  ['maxEventNameLength', 'Event name length'],
  ['maxEventChannelsAtOnce', 'Channels per trigger'],
  ['maxEventBatchSize', 'Events per batch'],
  ['maxPresenceMembers', 'Presence members per channel'],
  ['maxPresenceMemberBytes', 'Presence member data bytes'],
  ['clientEventsPerSecond', 'Client events per second per connection'],
  ['apiRequestsPerSecond', 'HTTP API requests per second per node (0: no cap of its own)'],
  ['maxPendingWebhookEvents', 'Webhook events waiting per URL (beyond: dropped and counted)'],
];

/** What failed, with the server's detail (which field, why) when there is one. */
function failure(error: unknown): string {
  if (error instanceof ApiFailure && error.code === 'invalid_input' && error.detail !== undefined) return error.detail;
  return describeFailure(error);
}

const SECRET_NOTE = 'Copy it now into the backends that sign for this app (the pusher server SDK, the auth endpoint): Herald will not show it again.';

export function Apps() {
  const list = useSecretList(async () => (await call<{ apps: AppRow[] }>('apps')).apps, failure);
  const [editing, setEditing] = useState<AppRow | null>(null);
  const [name, setName] = useState('');
  const [id, setId] = useState('');
  const [clientEvents, setClientEvents] = useState(false);
  const [subscriptionCount, setSubscriptionCount] = useState(false);

  async function create(event: Event) {
    event.preventDefault();
    await list.act('Creating…', async () => {
      const body: Record<string, unknown> = { name: name.trim() === '' ? undefined : name.trim(), clientEvents, subscriptionCount };
      if (id.trim() !== '') body['id'] = id.trim();
      const answer = await call<{ app: AppRow; secret: string }>('apps', { method: 'POST', body });
      setName('');
      setId('');
      setClientEvents(false);
      setSubscriptionCount(false);
      return {
        text: `App ${answer.app.id} created.`,
        secret: { title: `Secret of the new app “${answer.app.name}” (id ${answer.app.id}, key ${answer.app.key})`, secret: answer.secret, name: answer.app.id },
      };
    });
  }

  const rotate = (app: AppRow) =>
    list.act('Rotating…', async () => {
      const answer = await call<{ app: AppRow; secret: string }>(`apps/${encodeURIComponent(app.id)}/rotate-secret`, { method: 'POST' });
      return { text: `The secret of ${app.id} was replaced: signatures with the old one are refused.`, secret: { title: `New secret of “${app.name}” (id ${app.id})`, secret: answer.secret, name: app.id } };
    });

  const remove = (app: AppRow) =>
    list.act('Deleting…', async () => {
      await call(`apps/${encodeURIComponent(app.id)}`, { method: 'DELETE' });
      if (editing?.id === app.id) setEditing(null);
      return `App ${app.id} deleted: its connections are closed and its key is refused.`;
    });

  return (
    <SecretListView
      name="apps"
      title="Apps"
      intro={<p class="muted">The tenants of the Pusher endpoint: each app has its own key, secret, channels, limits and webhooks.</p>}
      list={list}
      secretNote={SECRET_NOTE}
      empty="No app yet."
      columns={['Name', 'ID', 'Key', 'Status', 'Client events', 'Subscription counts', 'Connections (this node)', 'Created', 'Actions']}
      row={(app) => (
        <tr key={app.id} data-app={app.id} data-source={app.source} data-enabled={String(app.enabled)}>
          <td>
            {app.name}
            {app.source === 'config' && <span class="muted"> (config file{app.default ? ', default app' : ''})</span>}
          </td>
          <td class="mono">{app.id}</td>
          <td class="mono" data-field="key">
            {app.key}
          </td>
          <td data-field="status">{app.enabled ? 'enabled' : 'disabled'}</td>
          <td>{app.clientEvents ? 'on' : 'off'}</td>
          <td data-field="subscription-count">{app.subscriptionCount ? 'on' : 'off'}</td>
          <td data-field="connections">
            <Connections counts={app.connections} />
          </td>
          <td>{when(app.createdAt)}</td>
          <td class="row-actions">
            {app.source === 'config' ? (
              <span class="muted">change it in the config file</span>
            ) : (
              <>
                <button type="button" data-action="edit" onClick={() => setEditing(app)}>
                  Edit
                </button>
                <ConfirmButton name="rotate" label="Rotate secret" question={`Replace the secret of ${app.name}? Backends signing with the old one stop working.`} onConfirm={() => rotate(app)} />
                <ConfirmButton name="delete" label="Delete" question={`Delete ${app.name}? Its connections close and its key is refused.`} danger onConfirm={() => remove(app)} />
              </>
            )}
          </td>
        </tr>
      )}
    >
      {editing !== null && (
        <EditApp
          key={editing.id}
          app={editing}
          onDone={async (text) => {
            setEditing(null);
            if (text !== undefined) list.setStatus({ kind: 'ok', text });
            await list.reload();
          }}
        />
      )}
      <form class="card" id="create-app" onSubmit={(event) => void create(event)} aria-labelledby="create-app-title">
        <h3 id="create-app-title">Create an app</h3>
        <label for="app-name">Name</label>
        <input id="app-name" maxLength={128} value={name} placeholder="shop-production" onInput={(e) => setName(e.currentTarget.value)} />
        <label for="app-id">ID (optional: 7 random digits otherwise)</label>
        <input id="app-id" maxLength={64} pattern="[A-Za-z0-9_\-]{1,64}" value={id} onInput={(e) => setId(e.currentTarget.value)} />
        <label class="check">
          <input type="checkbox" id="app-client-events" checked={clientEvents} onChange={(e) => setClientEvents(e.currentTarget.checked)} />
          Client events (client-* on private and presence channels)
        </label>
        <label class="check">
          <input type="checkbox" id="app-subscription-count" checked={subscriptionCount} onChange={(e) => setSubscriptionCount(e.currentTarget.checked)} />
          Subscription counts (pusher:subscription_count on non-presence channels)
        </label>
        <button type="submit" class="primary">
          Create app
        </button>
      </form>
    </SecretListView>
  );
}

/** The edit form of a stored app: every setting, sent as one change. */
function EditApp({ app, onDone }: { app: AppRow; onDone: (status?: string) => Promise<void> }) {
  const [name, setName] = useState(app.name);
  const [enabled, setEnabled] = useState(app.enabled);
  const [clientEvents, setClientEvents] = useState(app.clientEvents);
  const [userAuthentication, setUserAuthentication] = useState(app.userAuthentication);
  const [subscriptionCount, setSubscriptionCount] = useState(app.subscriptionCount);
  const [origins, setOrigins] = useState((app.allowedOrigins ?? []).join('\n'));
  const [limits, setLimits] = useState<Record<string, string>>(Object.fromEntries(LIMITS.map(([field]) => [field, String(app.limits[field] ?? '')])));
  const [webhooks, setWebhooks] = useState(JSON.stringify(app.webhooks, null, 2));
  const [status, setStatus] = useState<Status | null>(null);

  async function save(event: Event) {
    event.preventDefault();
    let hooks: unknown;
    try {
      hooks = JSON.parse(webhooks.trim() === '' ? '[]' : webhooks);
    } catch {
      setStatus({ kind: 'error', text: 'Webhooks: not valid JSON (a list of {"url", "events"}).' });
      return;
    }
    const originList = origins
      .split('\n')
      .map((o) => o.trim())
      .filter((o) => o !== '');
    const body = {
      name,
      enabled,
      clientEvents,
      userAuthentication,
      subscriptionCount,
      allowedOrigins: originList.length === 0 ? null : originList,
      limits: Object.fromEntries(LIMITS.map(([field]) => [field, Number(limits[field])])),
      webhooks: hooks,
    };
    setStatus({ kind: 'busy', text: 'Saving…' });
    try {
      await call(`apps/${encodeURIComponent(app.id)}`, { method: 'POST', body });
      await onDone(`App ${app.id} saved.`);
    } catch (error) {
      setStatus({ kind: 'error', text: failure(error) });
    }
  }

  return (
    <form class="card" id="edit-app" data-app={app.id} onSubmit={(event) => void save(event)} aria-labelledby="edit-app-title">
      <h3 id="edit-app-title">
        Edit “{app.name}” (id {app.id}, key <span class="mono">{app.key}</span>)
      </h3>
      <label for="edit-name">Name</label>
      <input id="edit-name" required maxLength={128} value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <label class="check">
        <input type="checkbox" id="edit-enabled" checked={enabled} onChange={(e) => setEnabled(e.currentTarget.checked)} />
        Enabled (a disabled app refuses connections and API requests)
      </label>
      <label class="check">
        <input type="checkbox" id="edit-client-events" checked={clientEvents} onChange={(e) => setClientEvents(e.currentTarget.checked)} />
        Client events
      </label>
      <label class="check">
        <input type="checkbox" id="edit-user-authentication" checked={userAuthentication} onChange={(e) => setUserAuthentication(e.currentTarget.checked)} />
        User authentication (pusher:signin, watchlist)
      </label>
      <label class="check">
        <input type="checkbox" id="edit-subscription-count" checked={subscriptionCount} onChange={(e) => setSubscriptionCount(e.currentTarget.checked)} />
        Subscription counts (pusher:subscription_count to subscribers of non-presence channels, at most once a second)
      </label>
      <label for="edit-origins">Allowed origins, one per line (empty: the server's cors.origins)</label>
      <textarea id="edit-origins" rows={3} value={origins} onInput={(e) => setOrigins(e.currentTarget.value)} />
      <fieldset>
        <legend>Limits</legend>
        {LIMITS.map(([field, text]) => (
          <label key={field} for={`limit-${field}`}>
            {text}
            <input id={`limit-${field}`} type="number" min={0} required value={limits[field]} onInput={(e) => setLimits({ ...limits, [field]: e.currentTarget.value })} />
          </label>
        ))}
      </fieldset>
      <label for="edit-webhooks">Webhooks (JSON: a list of {'{"url", "events", "channelPrefix"?}'})</label>
      <textarea id="edit-webhooks" rows={4} value={webhooks} onInput={(e) => setWebhooks(e.currentTarget.value)} />
      <StatusLine status={status} />
      <div class="row">
        <button type="submit" class="primary">
          Save
        </button>
        <button type="button" onClick={() => void onDone()}>
          Cancel
        </button>
      </div>
    </form>
  );
}
