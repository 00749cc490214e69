/**
 * JavaScript hooks (docs/hooks.md, "JavaScript hooks"): the operator's file
 * run in QuickJS sandbox processes, against a real Herald and real clients
 * on WebSocket, SSE and long polling. SECURITY-TESTS G 35 (escapes, with a
 * canary secret in this process's environment, which is the server's), 36
 * (budgets: loop, recursion, 1 GB, 100 MB answer, a promise that never
 * settles; fail closed and fail open; the server serves others meanwhile)
 * and 37 (invalid answers rejected by schema), and the functional cases.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import diagnosticsChannel from 'node:diagnostics_channel';
import { buildConfig } from '../../src/config/load.ts';
import { startServer } from '../../src/app/app.ts';
import { createLogger } from '../../src/observability/pino-logger.ts';
import { startHerald, testConfig, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, openWs, type WsClient } from '../helpers/herald-ws.ts';
import { openSse, pollOpen, sendCommand, sseUrl } from '../helpers/rt-clients.ts';

type Json = any;

const CANARY_VAR = 'HERALD_TEST_SANDBOX_CANARY';
const canary = `canary-${randomBytes(16).toString('hex')}`;
let dir = '';

before(() => {
  process.env[CANARY_VAR] = canary;
  dir = mkdtempSync(join(tmpdir(), 'herald-js-hooks-'));
});

after(() => {
  delete process.env[CANARY_VAR];
  closeAllClients();
  rmSync(dir, { recursive: true, force: true });
});

/** Writes a hook file and returns its path. */
function hookFile(source: string): string {
  const file = join(dir, `hook-${randomBytes(4).toString('hex')}.js`);
  writeFileSync(file, source);
  return file;
}

async function withHerald(javascript: Record<string, unknown>, run: (h: TestHerald) => Promise<void>, extra: Record<string, unknown> = {}): Promise<void> {
  const h = await startHerald({ hooks: { javascript, ...extra } });
  try {
    await run(h);
  } finally {
    await h.close();
  }
}

/** Every call's outcome on the herald:hook:javascript diagnostics channel, while `run` runs. */
async function recording<T>(run: (events: Json[]) => Promise<T>): Promise<T> {
  const events: Json[] = [];
  const record = (event: unknown): void => {
    events.push(event);
  };
  diagnosticsChannel.subscribe('herald:hook:javascript', record);
  try {
    return await run(events);
  } finally {
    diagnosticsChannel.unsubscribe('herald:hook:javascript', record);
  }
}

/** Sends a command and waits (up to 60 s: budgets and a replaced sandbox process take time on a busy machine) for its reply. */
function slowRequest(client: WsClient, method: string, params: unknown): Promise<Json> {
  const id = client.newId();
  client.send({ id, method, params });
  return client.take((f) => f.id === id && f.push === undefined, `reply to ${method} #${id}`, 60000);
}

const FUNCTIONAL = `
export function onConnect(e) {
  if (e.user === 'banned') return { error: { code: 4403, message: 'banned' } };
  if (!e.token_present) return { result: { user: 'guest-' + e.transport } };
  return { result: { user: e.user + '-js', info: { role: 'editor' } } };
}
export function onSubscribe(e) {
  if (e.channel === 'chat:secret') return { error: { code: 1403, message: 'not a member' } };
  return { result: { info: { seat: 7 } } };
}
export async function onPublish(e) {
  await null;
  if (e.data.text === 'spam') return { error: { code: 1429, message: 'slow down' } };
  if (e.data.text === 'rude') return { result: { data: { text: '***', moderated: true, by: e.user } } };
}
export function onRpc(e) {
  if (e.method === 'deny') return { error: { code: 1403, message: 'no' } };
  return { result: { data: { sum: e.data.a + e.data.b, via: e.transport, user: e.user } } };
}
`;

test('functional: onConnect sets the user and info or refuses, onSubscribe denies, onPublish rewrites or denies, onRpc answers on every transport', async () => {
  const file = hookFile(FUNCTIONAL);
  await withHerald({ file, events: ['connect', 'subscribe', 'publish', 'rpc'], withoutToken: true }, async (h) => {
    const client = await openWs(h.wsUrl);
    const { client: id } = await client.connect(await h.token('alice'));
    await client.call('subscribe', { channel: 'chat:js' });
    const presence = await client.call('presence', { channel: 'chat:js' });
    assert.deepEqual(presence.clients[id], { client: id, user: 'alice-js', conn_info: { role: 'editor' }, chan_info: { seat: 7 } });
    assert.deepEqual((await client.request('subscribe', { channel: 'chat:secret' })).error, { code: 1403, message: 'not a member' });

    assert.deepEqual((await client.request('publish', { channel: 'chat:js', data: { text: 'spam' } })).error, { code: 1429, message: 'slow down' });
    await client.call('publish', { channel: 'chat:js', data: { text: 'rude' } });
    await client.call('publish', { channel: 'chat:js', data: { text: 'fine' } });
    assert.equal((await h.api('publish', { channel: 'chat:js', data: { text: 'spam' } })).status, 200, 'API publishes are trusted');
    const publications = await client.waitPublications('chat:js', 3);
    assert.deepEqual(
      publications.map((p: Json) => p.data),
      [{ text: '***', moderated: true, by: 'alice-js' }, { text: 'fine' }, { text: 'spam' }],
    );
    assert.deepEqual(await client.call('rpc', { method: 'math:add', data: { a: 2, b: 3 } }), { data: { sum: 5, via: 'websocket', user: 'alice-js' } });
    assert.deepEqual((await client.request('rpc', { method: 'deny' })).error, { code: 1403, message: 'no' });
    await client.close();

    // onConnect refuses with its code; withoutToken lets it authenticate a connection that has none.
    const banned = await openWs(h.wsUrl);
    banned.send({ id: 1, method: 'connect', params: { token: await h.token('banned') } });
    assert.deepEqual(await banned.waitClose(), { code: 4403, reason: 'banned' });
    const guest = await openWs(h.wsUrl);
    const { client: guestId } = await guest.connect();
    await guest.call('subscribe', { channel: 'chat:guests' });
    assert.equal((await guest.call('presence', { channel: 'chat:guests' })).clients[guestId].user, 'guest-websocket');
    await guest.close();

    // SSE: the connect-time subscription goes through onSubscribe; rpc over SSE's command POST.
    const sse = await openSse(sseUrl(h.url, { token: await h.token('bob'), channels: ['chat:secret'] }));
    const connected = await sse.waitForFrame((f) => f.push === 'connected');
    const push = await sse.waitForFrame((f) => f.push === 'unsubscribed');
    assert.deepEqual([push.code, push.reason], [1403, 'not a member']);
    const viaSse = await sendCommand(h.url, connected.session, { id: 1, method: 'rpc', params: { method: 'add', data: { a: 1, b: 1 } } });
    assert.deepEqual(viaSse.body, [{ id: 1, result: { data: { sum: 2, via: 'sse', user: 'bob-js' } } }]);
    sse.abort();

    // Long polling.
    const opened = await pollOpen(h.url, { token: await h.token('carol') });
    assert.equal(opened.status, 200);
    const viaPoll = await sendCommand(h.url, (opened.body as Json).session, [{ id: 5, method: 'rpc', params: { method: 'add', data: { a: 4, b: 5 } } }]);
    assert.deepEqual(viaPoll.body, [{ id: 5, result: { data: { sum: 9, via: 'long_poll', user: 'carol-js' } } }]);

    // The client SDK's rpc on every transport.
    const { HeraldClient } = await import('../../../client/src/index.ts');
    for (const transport of ['websocket', 'sse', 'long-poll'] as const) {
      const sdk = new HeraldClient({ url: h.url, token: await h.token('sdk'), transports: [transport] });
      sdk.connect();
      try {
        assert.deepEqual(await sdk.rpc('math:add', { a: 20, b: 22 }), { sum: 42, via: transport.replace('-', '_'), user: 'sdk-js' });
        await assert.rejects(sdk.rpc('deny'), (error: Json) => error.code === 1403 && error.message === 'no');
      } finally {
        sdk.disconnect();
      }
    }

    const metrics = (await h.server.metricsJson()) as Json[];
    const calls = metrics.find((m) => m.name === 'herald_js_hook_calls_total');
    const value = (outcome: string) => calls.values.find((v: Json) => v.labels.event === 'publish' && v.labels.outcome === outcome)?.value;
    assert.deepEqual([value('allow'), value('deny')], [2, 1], 'one call per client publish, none for the API; counted by outcome');
    assert.ok(metrics.some((m) => m.name === 'herald_js_hook_duration_seconds' && m.values.length > 0), 'the latency histogram has samples');
  });
});

test('namespaces: a namespace list replaces the global events; [] turns them off there', async () => {
  const file = hookFile(`export function onSubscribe(e) { return { error: { code: 1403, message: 'js says no to ' + e.namespace } }; }`);
  await withHerald({ file, events: ['subscribe'], namespaces: [{ name: 'public', events: [] }] }, async (h) => {
    const client = await connectWs(h, 'alice');
    assert.deepEqual((await client.request('subscribe', { channel: 'chat:a' })).error, { code: 1403, message: 'js says no to chat' });
    await client.call('subscribe', { channel: 'public:a' });
    await client.close();
  });
});

const ESCAPES = `
const found = [];
const attempt = (name, fn) => { try { found.push([name, String(fn())]); } catch (e) { found.push([name, 'threw ' + e]); } };
export async function onRpc(e) {
  const global = Function('return this')();
  attempt('this.constructor.constructor', () => this.constructor.constructor('return process')());
  attempt('object constructor', () => ({}).constructor.constructor('return typeof process')());
  attempt('log constructor', () => log.constructor('return typeof process + typeof require')());
  attempt('global process', () => typeof global.process + typeof global.require + typeof global.Buffer + typeof global.module);
  attempt('timers and fetch', () => [typeof setTimeout, typeof setInterval, typeof setImmediate, typeof queueMicrotask, typeof fetch, typeof XMLHttpRequest].join());
  attempt('WebAssembly', () => typeof WebAssembly);
  attempt('WebAssembly via global', () => typeof global['Web' + 'Assembly']);
  attempt('host log function', () => typeof global.__heraldLog);
  attempt('prepareStackTrace', () => { Error.prepareStackTrace = (error, frames) => frames.map((f) => typeof f.getThis === 'function' ? f.getThis() : f); return JSON.stringify(new Error('x').stack); });
  attempt('captureStackTrace', () => typeof Error.captureStackTrace);
  attempt('stack', () => new Error('where').stack);
  attempt('globals', () => Object.getOwnPropertyNames(global).join());
  attempt('prototype walk', () => { let o = log, names = []; while (o) { names.push(Object.getOwnPropertyNames(o).join('|')); o = Object.getPrototypeOf(o); } return names.join(' / '); });
  attempt('eval process', () => eval('typeof process'));
  let species = 'none';
  class Evil extends Promise { static get [Symbol.species]() { return function (executor) { executor((value) => { species = typeof value; }, () => {}); }; } }
  await Evil.resolve(1).then(() => 2);
  found.push(['species', species]);
  const leaked = await Promise.resolve().then(() => { const P = Promise; P.prototype.then.call(Promise.resolve(global), (g) => { species = Object.keys(g).join(); }); return species; });
  found.push(['species then', String(leaked)]);
  for (const specifier of ['fs', 'node:fs', 'node:child_process', 'std', 'os', 'file:///etc/passwd', './hook.js']) {
    try { await import(specifier); found.push(['import ' + specifier, 'loaded']); } catch (error) { found.push(['import ' + specifier, 'refused ' + error]); }
  }
  found.push(['input', JSON.stringify(e)]);
  return { result: { data: found } };
}
`;

test('G35 escapes: nothing of the host is reachable; the canary in the server\'s environment is never returned', async () => {
  assert.equal(process.env[CANARY_VAR], canary, 'the canary is in the server process\'s environment');
  const file = hookFile(ESCAPES);
  await withHerald({ file, events: ['rpc'] }, async (h) => {
    const client = await connectWs(h, 'mallory');
    const answer = await slowRequest(client, 'rpc', { method: 'escape', data: {} });
    assert.equal(answer.error, undefined, JSON.stringify(answer.error));
    const found = new Map<string, string>(answer.result.data);
    const text = JSON.stringify(answer);
    assert.ok(!text.includes(canary), 'the canary never comes back');
    assert.match(found.get('this.constructor.constructor')!, /^threw TypeError/, 'a module function has no `this` to climb');
    assert.equal(found.get('object constructor'), 'undefined');
    assert.equal(found.get('log constructor'), 'undefinedundefined');
    assert.equal(found.get('global process'), 'undefinedundefinedundefinedundefined');
    assert.equal(found.get('timers and fetch'), 'undefined,undefined,undefined,undefined,undefined,undefined');
    assert.equal(found.get('WebAssembly'), 'undefined');
    assert.equal(found.get('WebAssembly via global'), 'undefined');
    assert.equal(found.get('host log function'), 'undefined');
    assert.equal(found.get('captureStackTrace'), 'undefined');
    assert.equal(found.get('eval process'), 'undefined');
    assert.doesNotMatch(found.get('stack')!, /node:|\.ts|\/work\/|node_modules/, 'stack frames are the sandbox\'s own');
    assert.doesNotMatch(found.get('prepareStackTrace')!, /node:|node_modules/);
    for (const name of ['process', 'require', 'Buffer', 'WebAssembly', 'setTimeout', 'fetch', '__heraldLog', 'FinalizationRegistry']) {
      assert.ok(!found.get('globals')!.split(',').includes(name), `no global ${name}`);
    }
    for (const [name, value] of found) if (name.startsWith('import ')) assert.match(value, /^refused /, `${name} is refused`);
    assert.ok(['none', 'number'].includes(found.get('species')!), `a species constructor sees only sandbox values: ${found.get('species')}`);
    // The server goes on: the same hook answers again.
    assert.equal((await slowRequest(client, 'rpc', { method: 'again', data: {} })).error, undefined);
    await client.close();
  });
});

const BUDGETS = `
export async function onPublish(e) {
  switch (e.data.kind) {
    case 'loop': while (true) {}
    case 'recursion': { const deeper = (n) => deeper(n + 1) + 1; return deeper(0); }
    case 'gigabyte': return { result: { data: new Uint8Array(1024 * 1024 * 1024).length } };
    case 'hundred-mb-answer': return { result: { data: 'x'.repeat(100 * 1024 * 1024) } };
    case 'never': return new Promise(() => {});
    case 'await-never': { await new Promise(() => {}); return; }
    case 'grow': { const all = []; for (;;) all.push('x'.repeat(1 << 20) + all.length); }
  }
}
`;

test('G36 budgets: loop, recursion, 1 GB, 100 MB answer, never-settling promises are stopped; closed refuses (119), open delivers; others are served meanwhile', { timeout: 300000 }, async () => {
  const file = hookFile(BUDGETS);
  const cases: [kind: string, reasons: string[]][] = [
    ['loop', ['timeout']],
    ['recursion', ['stack']],
    ['gigabyte', ['memory']],
    ['hundred-mb-answer', ['memory']],
    ['never', ['timeout']],
    ['await-never', ['timeout']],
    // Near the memory limit QuickJS may spend its time collecting; the process is then killed after its deadline and replaced.
    ['grow', ['memory', 'timeout']],
  ];
  for (const failure of ['closed', 'open'] as const) {
    await withHerald({ file, events: ['publish'], failure, timeoutMs: 1000, pool: 2 }, async (h) => {
      await recording(async (events) => {
        const client = await connectWs(h, 'alice');
        const watcher = await connectWs(h, 'watcher');
        await watcher.call('subscribe', { channel: 'chat:budget' });
        for (const [kind, reasons] of cases) {
          const pending = slowRequest(client, 'publish', { channel: 'chat:budget', data: { kind } });
          let settled = false;
          void pending.then(() => (settled = true));
          if (kind === 'loop') {
            // While one sandbox spins, the server serves everybody else: an API publish reaches the watcher.
            assert.equal((await h.api('publish', { channel: 'chat:budget', data: { api: 'meanwhile' } })).status, 200);
            await watcher.waitMarker('chat:budget', { api: 'meanwhile' });
            assert.equal(settled, false, 'the API publish was delivered while the hook still ran');
          }
          const reply = await pending;
          if (failure === 'closed') assert.equal(reply.error?.code, 119, `${kind}: refused when the hook fails closed`);
          else assert.equal(reply.error, undefined, `${kind}: accepted when the hook fails open`);
          const event = events.findLast((e) => e.event === 'publish');
          assert.equal(event?.outcome, 'failed', kind);
          assert.ok(reasons.includes(event.reason), `${kind}: failed for ${event.reason}, expected one of ${reasons.join(', ')}`);
        }
        if (failure === 'open') {
          const delivered = await watcher.waitPublications('chat:budget', cases.length + 1, 30000);
          assert.deepEqual(
            delivered.filter((p: Json) => p.data.kind !== undefined).map((p: Json) => p.data.kind),
            cases.map(([kind]) => kind),
            'fail open: every publication goes on with its own data',
          );
        }
        const metrics = (await h.server.metricsJson()) as Json[];
        const errors = metrics.find((m) => m.name === 'herald_js_hook_errors_total');
        assert.ok(errors.values.some((v: Json) => v.labels.reason === 'stack' && v.value >= 1), 'errors are counted by reason');
        await client.close();
        await watcher.close();
      });
    });
  }
});

const INVALID = `
export function onPublish(e) {
  switch (e.data.kind) {
    case 'bigint': return { result: { data: 10n } };
    case 'cycle': { const a = { result: {} }; a.result.data = a; return a; }
    case 'function': return () => 1;
    case 'symbol': return Symbol('x');
    case 'oversize': return { result: { data: 'y'.repeat(100000) } };
    case 'channel': return { result: { channel: 'admin:all', data: 1 } };
    case 'user': return { result: { user: 'root' } };
    case 'code': return { error: { code: 3504 } };
    case 'both': return { result: {}, error: { code: 1000 } };
    case 'deep': { let v = 1; for (let i = 0; i < 100; i++) v = [v]; return { result: { data: v } }; }
    case 'poisoned': return JSON.parse('{"result":{"data":{"__proto__":{"admin":true}}}}');
    case 'throws': throw new Error('broken hook');
    case 'rejects': return Promise.reject(new Error('broken promise'));
    case 'string': return 'allow';
  }
}
export function onSubscribe(e) {
  return e.channel === 'chat:user' ? { result: { user: 'root' } } : { result: { channel: 'chat:other' } };
}
`;

test('G37 invalid answers: non-serializable, oversize, changing the channel or user, wrong codes, too deep, poisoned are rejected by schema (fail closed)', { timeout: 120000 }, async () => {
  const file = hookFile(INVALID);
  const cases: [kind: string, reason: string][] = [
    ['bigint', 'answer_not_serializable'],
    ['cycle', 'answer_not_serializable'],
    ['function', 'answer_not_serializable'],
    ['symbol', 'answer_not_serializable'],
    ['oversize', 'answer_too_large'],
    ['channel', 'answer_schema'],
    ['user', 'answer_schema'],
    ['code', 'answer_schema'],
    ['both', 'answer_schema'],
    ['deep', 'answer_too_deep'],
    ['poisoned', 'answer_poisoned'],
    ['throws', 'threw'],
    ['rejects', 'threw'],
    ['string', 'answer_schema'],
  ];
  await withHerald({ file, events: ['publish', 'subscribe'] }, async (h) => {
    await recording(async (events) => {
      const client = await connectWs(h, 'alice');
      for (const [kind, reason] of cases) {
        const reply = await slowRequest(client, 'publish', { channel: 'chat:invalid', data: { kind } });
        assert.equal(reply.error?.code, 119, `${kind}: refused`);
        assert.equal(events.at(-1)?.reason, reason, kind);
      }
      for (const channel of ['chat:user', 'chat:channel']) {
        assert.equal((await slowRequest(client, 'subscribe', { channel })).error?.code, 119, channel);
        assert.equal(events.at(-1)?.reason, 'answer_schema');
      }
      assert.equal((await h.api('history', { channel: 'chat:invalid', limit: 100 })).body.publications.length, 0, 'nothing was published');
      await client.close();
    });
  });
});

test('queue bound: calls beyond pool + maxQueue fail at once (queue_full, the policy applies)', { timeout: 120000 }, async () => {
  const file = hookFile(`export function onPublish(e) { if (e.data.spin) { const end = Date.now() + 1500; while (Date.now() < end) {} } }`);
  await withHerald({ file, events: ['publish'], pool: 1, maxQueue: 1, timeoutMs: 5000, maxQueueWaitMs: 30000 }, async (h) => {
    await recording(async (events) => {
      const client = await connectWs(h, 'alice');
      // Two calls that spin: one runs, one waits in the queue (whichever comes first).
      const busy = slowRequest(client, 'publish', { channel: 'chat:q1', data: { spin: true } });
      const queued = slowRequest(client, 'publish', { channel: 'chat:q2', data: { spin: true } });
      // The sandbox is busy and the queue holds one: the third is refused at once.
      const refused = await slowRequest(client, 'publish', { channel: 'chat:q3', data: { n: 3 } });
      assert.equal(refused.error?.code, 119);
      assert.equal(events.find((e) => e.reason !== undefined)?.reason, 'queue_full');
      assert.equal((await busy).error, undefined, 'the running call finishes');
      assert.equal((await queued).error, undefined, 'the queued call runs after it');
      const metrics = (await h.server.metricsJson()) as Json[];
      const errors = metrics.find((m) => m.name === 'herald_js_hook_errors_total');
      assert.equal(errors.values.find((v: Json) => v.labels.reason === 'queue_full')?.value, 1);
      await client.close();
    });
  });
});

/** The sandbox processes this process (the server) started, from /proc. */
function sandboxProcesses(): number[] {
  const pids: number[] = [];
  for (const task of readdirSync(`/proc/${process.pid}/task`)) {
    let children: string;
    try {
      children = readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8');
    } catch {
      continue;
    }
    for (const pid of children.trim().split(/\s+/).filter(Boolean).map(Number)) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('sandbox-process')) pids.push(pid);
      } catch {
        // exited
      }
    }
  }
  return pids;
}

test('a sandbox process that dies fails its call (worker_exit, the policy applies) and is replaced; the server goes on', { timeout: 120000 }, async () => {
  const file = hookFile(`export function onPublish(e) { if (e.data.spin) { const end = Date.now() + 3000; while (Date.now() < end) {} } }`);
  await withHerald({ file, events: ['publish'], pool: 1, timeoutMs: 5000, maxQueueWaitMs: 30000 }, async (h) => {
    await recording(async (events) => {
      const client = await connectWs(h, 'alice');
      const [pid] = sandboxProcesses();
      assert.ok(pid !== undefined, 'the server runs a sandbox process');
      const running = slowRequest(client, 'publish', { channel: 'chat:dies', data: { spin: true } });
      // Its call is handed to the only sandbox process at once; SIGKILL it (as the kernel's OOM killer would).
      await new Promise((resolve) => setImmediate(resolve));
      process.kill(pid, 'SIGKILL');
      assert.equal((await running).error?.code, 119, 'the call in the dead process fails closed');
      assert.equal(events.at(-1)?.reason, 'worker_exit');
      // The next call waits for the replacement and runs there.
      assert.equal((await slowRequest(client, 'publish', { channel: 'chat:dies', data: { n: 1 } })).error, undefined);
      const [replacement] = sandboxProcesses();
      assert.ok(replacement !== undefined && replacement !== pid, 'a new sandbox process took its place');
      await client.close();
    });
  });
});

test('log(): lines reach the server log with the hook file, rate limited per sandbox process', { timeout: 120000 }, async () => {
  const file = hookFile(`export function onRpc(e) { for (let i = 0; i < e.data.lines; i++) log('line', i, { user: e.user }); return { result: { data: 'logged' } }; }`);
  const lines: Json[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.includes('hook log')) lines.push(JSON.parse(line));
      done();
    },
  });
  const config = buildConfig(
    {
      ...testConfig(randomBytes(32).toString('base64url'), randomBytes(24).toString('base64url')),
      stateDir: mkdtempSync(join(dir, 'state-')),
      hooks: { javascript: { file, events: ['rpc'], pool: 1, logPerSecond: 3 } },
    },
    { env: {} },
  );
  const server = await startServer({ config, logger: createLogger('info', destination) });
  try {
    const client = await openWs(`ws://127.0.0.1:${server.port}/connection/websocket`);
    await client.connect(await signedToken(config.auth.hmacSecret!, 'logger'));
    assert.deepEqual(await client.call('rpc', { method: 'x', data: { lines: 50 } }), { data: 'logged' });
    await client.waitUntil(() => (lines.length >= 3 ? true : undefined), 'log lines', 30000);
    assert.equal(lines[0].msg, 'hook log: line 0 {"user":"logger"}');
    assert.equal(lines[0].hook, file);
    assert.ok(lines.length <= 4, `rate limited: ${lines.length} of 50 lines`);
    await client.close();
  } finally {
    await server.close();
  }
});

async function signedToken(secret: string, sub: string): Promise<string> {
  const { SignJWT } = await import('jose');
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('1h').sign(new TextEncoder().encode(secret));
}

test('configuration: an event with both a proxy and a JavaScript hook, a missing function, a syntax error or an unreadable file refuse to start', async () => {
  const good = hookFile(`export function onPublish() {}`);
  await assert.rejects(
    startHerald({ hooks: { publish: { url: 'http://127.0.0.1:1/x', secretEnv: 'UNSET_FOR_TEST' }, javascript: { file: good, events: ['publish'] } } }),
    /publish event has a proxy hook .* and a JavaScript hook/,
  );
  await assert.rejects(startHerald({ hooks: { javascript: { file: good, events: ['publish', 'rpc'] } } }), /does not export onRpc/);
  await assert.rejects(startHerald({ hooks: { javascript: { file: hookFile('export function onPublish( {'), events: ['publish'] } } }), /SyntaxError/);
  await assert.rejects(startHerald({ hooks: { javascript: { file: join(dir, 'missing.js'), events: ['publish'] } } }), /cannot read .*ENOENT/);
  await assert.rejects(startHerald({ hooks: { javascript: { file: hookFile('while (true) {}'), events: ['publish'] } } }), /timeout/);
});
