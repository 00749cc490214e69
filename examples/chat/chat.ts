/**
 * The chat example's page script. It uses nothing but the client SDK:
 * a token from the demo endpoint (`getToken`, also used to refresh it), one
 * subscription for the open room, presence for "online", history to fill
 * the room, and the SDK's events (with the browser's online/offline events)
 * for the status line. Rooms are shared: the demo's `rooms` endpoint lists
 * the rooms someone is in, and a page that opens a new room announces it on
 * the `<namespace>:@rooms` channel, which every page listens to. The server
 * serves this file bundled, with the SDK import pointing at its
 * herald-client.js.
 */
import { HeraldClient, type PublicationEvent, type Subscription, type TransportName } from '@herald/client';

interface ChatMessage {
  readonly text: string;
  /** When it was sent (the sender's clock, ms). */
  readonly at?: number;
}

interface Shown {
  readonly offset: number;
  readonly user: string;
  readonly text: string;
  readonly at: number | undefined;
}

type TransportChoice = 'auto' | TransportName;

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const joinView = $<HTMLElement>('join-view');
const chatView = $<HTMLElement>('chat-view');
const joinForm = $<HTMLFormElement>('join-form');
const userInput = $<HTMLInputElement>('user-input');
const joinTransport = $<HTMLSelectElement>('join-transport');
const joinError = $<HTMLParagraphElement>('join-error');
const panelToggle = $<HTMLButtonElement>('panel-toggle');
const statusText = $<HTMLSpanElement>('status-text');
const statusLine = $<HTMLSpanElement>('statusline');
const transportSelect = $<HTMLSelectElement>('transport');
const leaveButton = $<HTMLButtonElement>('leave');
const roomList = $<HTMLUListElement>('rooms');
const roomForm = $<HTMLFormElement>('room-form');
const roomInput = $<HTMLInputElement>('room-input');
const roomError = $<HTMLParagraphElement>('room-error');
const onlineList = $<HTMLUListElement>('online');
const onlineCount = $<HTMLSpanElement>('online-count');
const roomTitle = $<HTMLHeadingElement>('room-title');
const roomChannel = $<HTMLSpanElement>('room-channel');
const messageList = $<HTMLOListElement>('messages');
const composer = $<HTMLFormElement>('composer');
const textInput = $<HTMLInputElement>('text');
const sendButton = $<HTMLButtonElement>('send');

const namespace = document.querySelector<HTMLMetaElement>('meta[name="herald-namespace"]')?.content || 'chat';
const transportLabels: Record<TransportName, string> = { websocket: 'WebSocket', sse: 'SSE', 'long-poll': 'long polling' };
const defaultRooms = ['lobby', 'random', 'help'];
/** Rooms shown: the defaults, the rooms others are in, and those announced since. */
const rooms = new Set(defaultRooms);
const roomPattern = /^[a-z0-9_.-]{1,40}$/;
const userPattern = /^[A-Za-z0-9_.-]{1,32}$/;
/** Where pages announce the rooms they open ("@" never appears in a room name). */
const roomsChannel = `${namespace}:@rooms`;

/** The connection, as the SDK and the browser report it; the status bar is drawn from it alone. */
interface ConnectionState {
  readonly sdk: 'connecting' | 'connected' | 'disconnected';
  /** Connecting again after a connection was lost (not the first attempt). */
  readonly reconnecting: boolean;
  readonly transport?: TransportName;
  readonly version?: string;
  /** Why the connection ended, or why the last attempt failed. */
  readonly why?: string;
}

let client: HeraldClient | undefined;
let sub: Subscription<ChatMessage> | undefined;
let user = '';
let room = 'lobby';
let transport: TransportChoice = 'auto';
/** Messages of the open room by offset: history and live publications meet here without duplicates. */
let shown = new Map<number, Shown>();
/** Presence: client id → user. */
let online = new Map<string, string>();
let connection: ConnectionState = { sdk: 'disconnected', reconnecting: false };
let networkOnline = navigator.onLine;

async function fetchToken(name: string): Promise<string> {
  const response = await fetch('token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: name }),
  });
  if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
  const body = (await response.json()) as { token: string };
  return body.token;
}

function hue(name: string): string {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `hue-${h % 8}`;
}

function avatar(name: string): HTMLSpanElement {
  const span = document.createElement('span');
  span.className = `avatar ${hue(name)}`;
  span.textContent = name.slice(0, 1);
  span.setAttribute('aria-hidden', 'true');
  return span;
}

function updateUrl(): void {
  const params = new URLSearchParams({ user, room });
  if (transport !== 'auto') params.set('transport', transport);
  history.replaceState(null, '', `?${params}`);
}

// ------------------------------------------------------------------ status

function transportLabel(name: TransportName | undefined): string {
  if (name !== undefined) return transportLabels[name];
  return transport === 'auto' ? 'the best transport available' : transportLabels[transport];
}

function setConnection(next: ConnectionState): void {
  connection = next;
  renderStatus();
}

/** The status pill and the status line, from `connection` and the browser's network state. */
function renderStatus(): void {
  const { sdk, reconnecting, why } = connection;
  document.body.dataset['connection'] = sdk;
  document.body.dataset['network'] = networkOnline ? 'online' : 'offline';
  let pill: string;
  let line: string;
  if (!networkOnline) {
    pill = 'Offline';
    line = `Offline: this browser has no network. Signed in as ${user}; the room catches up when the network is back.`;
  } else if (sdk === 'connected') {
    pill = `Connected · ${transportLabel(connection.transport)}`;
    line = `Signed in as ${user} · ${transportLabel(connection.transport)} · Herald ${connection.version ?? ''}`;
  } else if (sdk === 'connecting' && !reconnecting) {
    pill = 'Connecting…';
    line = `Connecting as ${user} over ${transportLabel(undefined)}…`;
  } else if (sdk === 'connecting') {
    pill = 'Reconnecting…';
    line = `Reconnecting as ${user}: ${why ?? 'the connection was lost'}; the room catches up once connected.`;
  } else {
    pill = 'Disconnected';
    line = `Disconnected${why === undefined ? '' : `: ${why}`}`;
  }
  statusText.textContent = pill;
  statusLine.textContent = line;
  statusLine.title = line;
  const canSend = sdk === 'connected' && networkOnline;
  textInput.disabled = !canSend;
  sendButton.disabled = !canSend;
}

function describe(code: number, reason: string): string {
  return `${code} ${reason}`;
}

window.addEventListener('offline', () => {
  networkOnline = false;
  renderStatus();
});
window.addEventListener('online', () => {
  networkOnline = true;
  renderStatus();
});

// ----------------------------------------------------------------- panel

/** Narrow screens show rooms and people as a panel over the conversation. */
function setPanel(open: boolean): void {
  panelToggle.setAttribute('aria-expanded', String(open));
  document.body.dataset['panel'] = open ? 'open' : 'closed';
}

panelToggle.addEventListener('click', () => setPanel(panelToggle.getAttribute('aria-expanded') !== 'true'));

// ----------------------------------------------------------------- rooms

function renderRooms(): void {
  const others = [...rooms].filter((name) => !defaultRooms.includes(name)).sort();
  roomList.replaceChildren(
    ...[...defaultRooms, ...others].map((name) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = `# ${name}`;
      button.dataset['room'] = name;
      if (name === room) button.setAttribute('aria-current', 'true');
      button.addEventListener('click', () => {
        setPanel(false);
        openRoom(name);
      });
      li.append(button);
      return li;
    }),
  );
}

/** Adds rooms others opened; true if one was new. */
function addRooms(names: Iterable<unknown>): boolean {
  let added = false;
  for (const name of names) {
    if (typeof name === 'string' && roomPattern.test(name) && !rooms.has(name)) {
      rooms.add(name);
      added = true;
    }
  }
  if (added) renderRooms();
  return added;
}

/** The rooms someone is in right now, from the demo's endpoint. */
async function loadRooms(): Promise<void> {
  try {
    const response = await fetch('rooms', { cache: 'no-store' });
    if (response.ok) addRooms(((await response.json()) as { rooms: unknown[] }).rooms);
  } catch {
    // the list stays as it is; announcements still arrive
  }
}

function renderOnline(): void {
  const users = [...new Set(online.values())].sort((a, b) => (a === user ? -1 : b === user ? 1 : a.localeCompare(b)));
  onlineCount.textContent = String(users.length);
  onlineList.replaceChildren(
    ...users.map((name) => {
      const li = document.createElement('li');
      li.dataset['user'] = name;
      const label = document.createElement('span');
      label.textContent = name;
      li.append(avatar(name), label);
      if (name === user) {
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = '(you)';
        li.append(you);
      }
      return li;
    }),
  );
}

// -------------------------------------------------------------- messages

function messageElement(message: Shown): HTMLLIElement {
  const li = document.createElement('li');
  li.className = message.user === user ? 'msg mine' : 'msg';
  li.dataset['offset'] = String(message.offset);
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  const meta = document.createElement('div');
  meta.className = 'meta';
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = message.user || 'server';
  const time = document.createElement('time');
  if (message.at !== undefined) {
    const at = new Date(message.at);
    time.dateTime = at.toISOString();
    time.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  // The offset (the message's position in the room's stream) stays out of sight: it is how the SDK recovers missed messages.
  meta.append(author, time);
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = message.text;
  bubble.append(meta, text);
  li.append(avatar(message.user || '?'), bubble);
  return li;
}

function note(text: string): void {
  const li = document.createElement('li');
  li.className = 'note';
  li.textContent = text;
  messageList.append(li);
  scrollDown();
}

function scrollDown(): void {
  messageList.scrollTop = messageList.scrollHeight;
}

function show(message: Shown): void {
  if (shown.has(message.offset) && message.offset !== 0) return;
  shown.set(message.offset, message);
  messageList.querySelector('.empty')?.remove();
  // Usually the newest: append. History arriving after live messages: insert in offset order.
  const after = Array.from(messageList.querySelectorAll<HTMLLIElement>('li.msg')).find((li) => Number(li.dataset['offset']) > message.offset);
  const element = messageElement(message);
  if (after === undefined || message.offset === 0) messageList.append(element);
  else messageList.insertBefore(element, after);
  scrollDown();
}

function fromPublication(p: PublicationEvent<ChatMessage> | { offset: number; data: ChatMessage; info?: { user: string } }): Shown {
  const text = typeof p.data?.text === 'string' ? p.data.text : JSON.stringify(p.data);
  const at = typeof p.data?.at === 'number' && Number.isFinite(p.data.at) ? p.data.at : undefined;
  return { offset: p.offset, user: p.info?.user ?? '', text, at };
}

async function loadHistory(current: Subscription<ChatMessage>): Promise<void> {
  try {
    const page = await current.history({ limit: 50, reverse: true });
    if (current !== sub) return;
    for (const p of [...page.publications].reverse()) show(fromPublication(p));
    if (shown.size === 0) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'No messages yet. Say hello!';
      messageList.append(li);
    }
  } catch (error) {
    note(`Could not load history: ${(error as Error).message}`);
  }
}

async function loadPresence(current: Subscription<ChatMessage>): Promise<void> {
  try {
    const clients = await current.presence();
    if (current !== sub) return;
    online = new Map(Object.entries(clients).map(([id, info]) => [id, info.user]));
    renderOnline();
  } catch {
    // presence may be off for the namespace
  }
}

function openRoom(name: string): void {
  if (client === undefined) return;
  room = name;
  if (!rooms.has(name)) {
    rooms.add(name);
    // Tell the other pages; those that join later find it through the rooms endpoint while someone is in it.
    client.publish(roomsChannel, { room: name }).catch(() => undefined);
  }
  renderRooms();
  updateUrl();
  sub?.unsubscribe();
  shown = new Map();
  online = new Map();
  renderOnline();
  messageList.replaceChildren();
  const channel = `${namespace}:${name}`;
  roomTitle.textContent = `# ${name}`;
  roomChannel.textContent = channel;
  const current = client.subscribe<ChatMessage>(channel);
  sub = current;
  current.on('subscribed', (event) => {
    if (event.wasRecovering && event.recovered) note('Reconnected: missed messages recovered.');
    else if (event.wasRecovering) note('Reconnected: some messages could not be recovered, reloading the room.');
    if (!event.recovered) {
      shown = new Map();
      messageList.querySelectorAll('li.msg, li.empty').forEach((li) => li.remove());
      void loadHistory(current);
    }
    void loadPresence(current);
  });
  current.on('publication', (p) => show(fromPublication(p)));
  current.on('join', (event) => {
    online.set(event.info.client, event.info.user);
    renderOnline();
  });
  current.on('leave', (event) => {
    online.delete(event.info.client);
    renderOnline();
  });
  current.on('error', (event) => note(`Room error: ${describe(event.code, event.message)}`));
  current.on('unsubscribed', (event) => {
    if (current === sub) note(`Left the room: ${describe(event.code, event.reason)}`);
  });
}

// ------------------------------------------------------------ connection

function connect(): void {
  client?.disconnect();
  const transports: TransportName[] | undefined = transport === 'auto' ? undefined : [transport];
  const next = new HeraldClient({ getToken: () => fetchToken(user), name: 'chat-example', ...(transports ? { transports } : {}) });
  client = next;
  setConnection({ sdk: 'connecting', reconnecting: false });
  next.on('connecting', (event) => {
    if (client !== next) return;
    const lost = event.code === 0 ? undefined : `the connection was lost (${describe(event.code, event.reason)})`;
    setConnection({ sdk: 'connecting', reconnecting: event.code !== 0 || connection.reconnecting, ...(lost === undefined ? {} : { why: lost }) });
  });
  next.on('connected', (event) => {
    if (client !== next) return;
    document.body.dataset['transport'] = event.transport;
    setConnection({ sdk: 'connected', reconnecting: false, transport: event.transport, version: event.version });
    void loadRooms();
  });
  next.on('disconnected', (event) => {
    if (client !== next) return;
    setConnection({ sdk: 'disconnected', reconnecting: false, why: describe(event.code, event.reason) });
  });
  next.on('error', (event) => {
    if (client !== next || connection.sdk !== 'connecting') return;
    // A failed attempt: the server is unreachable (or refused), and the SDK tries again.
    const why = event.transport === undefined ? event.message : `server unreachable (${event.message})`;
    setConnection({ ...connection, reconnecting: connection.reconnecting || event.transport !== undefined, why });
  });
  next.connect();
  next.subscribe<{ room?: unknown }>(roomsChannel).on('publication', (p) => addRooms([p.data?.room]));
  openRoom(room);
}

function join(name: string, choice: TransportChoice): void {
  user = name;
  transport = choice;
  transportSelect.value = choice;
  joinView.hidden = true;
  chatView.hidden = false;
  setPanel(false);
  connect();
  textInput.focus();
}

joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = userInput.value.trim();
  if (!userPattern.test(name)) {
    joinError.textContent = 'A name is 1–32 letters, digits, ".", "_" or "-" (no spaces).';
    joinError.hidden = false;
    return;
  }
  join(name, joinTransport.value as TransportChoice);
});

composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = textInput.value.trim();
  if (text === '' || sub === undefined) return;
  textInput.value = '';
  sub.publish({ text, at: Date.now() }).catch((error: Error) => {
    note(`Not sent: ${error.message}`);
    textInput.value = text;
  });
});

roomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = roomInput.value.trim().toLowerCase();
  if (!roomPattern.test(name)) {
    roomError.textContent = 'A room name is 1–40 letters, digits, ".", "_" or "-" (no spaces).';
    roomError.hidden = false;
    return;
  }
  roomError.hidden = true;
  roomInput.value = '';
  setPanel(false);
  openRoom(name);
});

transportSelect.addEventListener('change', () => {
  transport = transportSelect.value as TransportChoice;
  updateUrl();
  connect();
});

leaveButton.addEventListener('click', () => {
  client?.disconnect();
  client = undefined;
  sub = undefined;
  chatView.hidden = true;
  joinView.hidden = false;
  history.replaceState(null, '', location.pathname);
});

// ?user=alice&room=lobby&transport=sse joins at once (handy for sharing a link, and for the browser tests).
const params = new URLSearchParams(location.search);
const initialRoom = params.get('room');
if (initialRoom !== null && roomPattern.test(initialRoom.toLowerCase())) room = initialRoom.toLowerCase();
const initialTransport = params.get('transport');
if (initialTransport === 'websocket' || initialTransport === 'sse' || initialTransport === 'long-poll') joinTransport.value = initialTransport;
renderRooms();
const initialUser = params.get('user');
if (initialUser !== null && userPattern.test(initialUser)) join(initialUser, joinTransport.value as TransportChoice);
else userInput.value = initialUser ?? '';
