/**
 * The app a view is about (docs/pusher.md, apps): users and channels are an
 * app's. The choice is the default app (''), whose users and channels are
 * the server's own, or another app by id; the server keeps another app's
 * names as `~{id}~…`, which the console never shows nor sends.
 */
import { useEffect, useState } from 'preact/hooks';
import { call } from './api.ts';

export interface AppChoice {
  readonly id: string;
  readonly name: string;
  /** The default app: its users and channels are the server's own (unprefixed paths). */
  readonly default: boolean;
}

/** How an app is named in the views: its name, and its id when they differ. */
export function appLabel(app: AppChoice): string {
  return app.name === app.id ? app.id : `${app.name} (${app.id})`;
}

/** The apps to choose from (`GET B/api/connections/apps`); none while loading or when the server has no apps. */
export function useAppChoices(): readonly AppChoice[] {
  const [apps, setApps] = useState<readonly AppChoice[]>([]);
  useEffect(() => {
    call<{ apps: AppChoice[] }>('connections/apps')
      .then((answer) => setApps(answer.apps))
      .catch(() => setApps([]));
  }, []);
  return apps;
}

/** The choice as a view keeps it: '' for the default app (also when `?app=` names it), else the app's id. */
export function choiceOf(apps: readonly AppChoice[], id: string): string {
  return apps.some((a) => a.default && a.id === id) ? '' : id;
}

/** `thing`, or `thing of Shop (shop)` for another app's user or channel. */
export function ofApp(apps: readonly AppChoice[], thing: string, appId: string): string {
  const found = apps.find((a) => a.id === appId);
  if (appId === '' || found?.default === true) return thing;
  return `${thing} of ${found === undefined ? appId : appLabel(found)}`;
}

/** A labelled select of the apps, shown only when there is another app than the default one. */
export function AppSelect({ id, apps, value, onChange }: { id: string; apps: readonly AppChoice[]; value: string; onChange: (id: string) => void }) {
  const others = apps.filter((a) => !a.default);
  if (others.length === 0) return null;
  const defaultApp = apps.find((a) => a.default);
  return (
    <>
      <label for={id}>App</label>
      <select id={id} value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        <option value="">{defaultApp === undefined ? 'The server (no app)' : `${appLabel(defaultApp)}, the default app`}</option>
        {others.map((a) => (
          <option key={a.id} value={a.id}>
            {appLabel(a)}
          </option>
        ))}
      </select>
    </>
  );
}
