/**
 * Channels: search by prefix, open one to see its subscribers, presence,
 * stream position and last publications, and publish a test message
 * (operators). Channels are an app's: with apps, the search names the app
 * (default: the default app, whose channels are the server's own) and lists
 * its channels by the app's names; `#/channels/room?app=shop` opens one.
 */
import { useEffect, useState } from 'preact/hooks';
import { call, describeFailure } from '../api.ts';
import { json, when } from '../format.ts';
import { allows, route } from '../state.ts';
import { Empty, StatusLine, type Status } from '../widgets.tsx';
import { AppSelect, choiceOf, ofApp, useAppChoices, type AppChoice } from '../app-choice.tsx';

interface ChannelRow {
  readonly channel: string;
  readonly subscribers: number;
}

interface PresenceEntry {
  readonly client?: string;
  readonly user?: string;
  readonly [key: string]: unknown;
}

interface Publication {
  readonly offset?: number;
  readonly data?: unknown;
  readonly time?: string | number;
  readonly [key: string]: unknown;
}

interface ChannelDetail {
  readonly channel: string;
  /** The app whose channel it is; absent for the default app's. */
  readonly app?: string;
  readonly subscribers: number;
  readonly presence: readonly PresenceEntry[] | null;
  readonly stream: { readonly epoch: string; readonly offset: number } | null;
  readonly history: readonly Publication[];
}

/** `?app=shop` for another app's channel or user, '' for the default app's. */
function appQuery(apps: readonly AppChoice[], appId: string, first: '?' | '&'): string {
  const id = choiceOf(apps, appId);
  return id === '' ? '' : `${first}app=${encodeURIComponent(id)}`;
}

export function Channels() {
  const selected = route.value.arg;
  const apps = useAppChoices();
  const appId = route.value.query.get('app') ?? '';
  return (
    <section aria-labelledby="channels-title">
      <h2 id="channels-title">Channels</h2>
      {selected === undefined ? <ChannelList apps={apps} initialApp={appId} /> : <ChannelView channel={selected} apps={apps} appId={appId} />}
    </section>
  );
}

function ChannelList({ apps, initialApp }: { apps: readonly AppChoice[]; initialApp: string }) {
  const [prefix, setPrefix] = useState(route.value.query.get('prefix') ?? '');
  const [app, setApp] = useState(initialApp);
  /** The app ('' for the default app) whose channels the table shows. */
  const [shownApp, setShownApp] = useState(initialApp);
  const [rows, setRows] = useState<readonly ChannelRow[] | null>(null);
  const [status, setStatus] = useState<Status | null>(null);

  async function load(text: string, appId: string) {
    setStatus({ kind: 'busy', text: 'Loading…' });
    try {
      const answer = await call<{ channels: ChannelRow[] }>('channels', { query: { prefix: text, limit: 100, app: appId } });
      setRows(answer.channels);
      setShownApp(appId);
      setStatus(null);
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  useEffect(() => {
    void load(prefix, app);
  }, []);

  // `?app=` naming the default app is the default choice.
  useEffect(() => {
    setApp((current) => choiceOf(apps, current));
  }, [apps]);

  return (
    <>
      <form
        class="search row"
        role="search"
        onSubmit={(event) => {
          event.preventDefault();
          void load(prefix, app);
        }}
      >
        <AppSelect id="channels-app" apps={apps} value={app} onChange={setApp} />
        <label for="channel-prefix">Channel name starts with</label>
        <input id="channel-prefix" type="search" value={prefix} placeholder="chat:" onInput={(e) => setPrefix(e.currentTarget.value)} />
        <button type="submit">Search</button>
      </form>
      <StatusLine status={status} />
      {rows !== null && rows.length === 0 && <Empty>{ofApp(apps, `No active channel${prefix === '' ? '' : ` starts with “${prefix}”`}`, shownApp)}.</Empty>}
      {rows !== null && rows.length > 0 && (
        <div class="table-wrap">
          <table id="channels-table">
            <thead>
              <tr>
                <th scope="col">Channel</th>
                <th scope="col">Subscribers</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((row) => (
                <tr key={row.channel} data-channel={row.channel}>
                  <td>
                    <a href={`#/channels/${encodeURIComponent(row.channel)}${appQuery(apps, shownApp, '?')}`}>{row.channel}</a>
                  </td>
                  <td>{row.subscribers}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

function ChannelView({ channel, apps, appId }: { channel: string; apps: readonly AppChoice[]; appId: string }) {
  const [detail, setDetail] = useState<ChannelDetail | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [message, setMessage] = useState('{"text":"test message from the console"}');
  const [publishStatus, setPublishStatus] = useState<Status | null>(null);

  async function load() {
    try {
      setDetail(await call<ChannelDetail>(`channels/${encodeURIComponent(channel)}`, { query: { app: appId } }));
      setStatus(null);
    } catch (error) {
      setStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  useEffect(() => {
    setDetail(null);
    void load();
  }, [channel, appId]);

  async function publish(event: Event) {
    event.preventDefault();
    let data: unknown;
    try {
      data = JSON.parse(message);
    } catch {
      setPublishStatus({ kind: 'error', text: 'The message must be JSON, for example {"text":"hi"} or "hi".' });
      return;
    }
    setPublishStatus({ kind: 'busy', text: 'Publishing…' });
    try {
      const answer = await call<{ offset?: number } | undefined>(`channels/${encodeURIComponent(channel)}/publish`, { method: 'POST', body: appId === '' ? { data } : { data, app: appId } });
      setPublishStatus({ kind: 'ok', text: answer?.offset === undefined ? 'Published.' : `Published at offset ${answer.offset}.` });
      void load();
    } catch (error) {
      setPublishStatus({ kind: 'error', text: describeFailure(error) });
    }
  }

  return (
    <>
      <p>
        <a href={`#/channels${appQuery(apps, appId, '?')}`}>← All channels</a>
      </p>
      <div class="title-row">
        <h3 id="channel-name">
          <span class="mono">{channel}</span>
          {ofApp(apps, '', appId)}
        </h3>
        <button type="button" onClick={() => void load()}>
          Refresh
        </button>
      </div>
      <StatusLine status={status} />
      {detail !== null && (
        <>
          <dl class="facts">
            <dt>Subscribers</dt>
            <dd id="channel-subscribers">{detail.subscribers}</dd>
            <dt>Stream position</dt>
            <dd id="channel-stream">{detail.stream === null ? 'no stream (history is off)' : `epoch ${detail.stream.epoch}, offset ${detail.stream.offset}`}</dd>
          </dl>
          <h4>Presence</h4>
          {detail.presence === null ? (
            <Empty>Presence is off in this channel's namespace.</Empty>
          ) : detail.presence.length === 0 ? (
            <Empty>Nobody is present.</Empty>
          ) : (
            <ul id="channel-presence" class="chips">
              {detail.presence.map((entry, index) => (
                <li key={entry.client ?? index}>
                  <a href={`#/connections?user=${encodeURIComponent(entry.user ?? '')}${appQuery(apps, appId, '&')}`}>{entry.user === undefined || entry.user === '' ? 'anonymous' : entry.user}</a>
                  {entry.client !== undefined && <span class="muted mono"> {entry.client.slice(0, 8)}</span>}
                </li>
              ))}
            </ul>
          )}
          {allows('operator') && (
            <form class="card" onSubmit={(event) => void publish(event)} aria-labelledby="publish-title">
              <h4 id="publish-title">Publish a test message</h4>
              <label for="publish-data">Message (JSON)</label>
              <textarea id="publish-data" rows={3} value={message} onInput={(e) => setMessage(e.currentTarget.value)} />
              <button type="submit" class="primary">
                Publish to {channel}
              </button>
              <StatusLine status={publishStatus} />
            </form>
          )}
          <h4>Last publications</h4>
          {detail.history.length === 0 ? (
            <Empty>No publications in history.</Empty>
          ) : (
            <ol id="channel-history" class="history">
              {detail.history.map((pub, index) => (
                <li key={pub.offset ?? index} data-offset={pub.offset}>
                  <span class="muted">{pub.offset === undefined ? '' : `#${pub.offset}`}</span> <code>{json(pub.data)}</code>
                  {pub.time !== undefined && <span class="muted"> {when(pub.time)}</span>}
                </li>
              ))}
            </ol>
          )}
        </>
      )}
    </>
  );
}
