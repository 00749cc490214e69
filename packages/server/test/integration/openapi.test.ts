/**
 * docs/openapi.json against the code and a running server:
 *
 * - the committed file is what `npm run docs:openapi` generates, and a
 *   valid OpenAPI 3.1 document (checked against the specification's schema);
 * - its `/api/` paths are exactly `POST /api/<method>` for every method of
 *   the running server's executor; each carries the request and result
 *   schemas of `@herald/protocol/api`, the error answers, and the Bearer
 *   and X-API-Key security schemes (both accepted by the server);
 * - its other paths are exactly the Pusher HTTP API's routes, with the
 *   bodies the routes check (pusher/pusher-api-schemas.ts), real answers of
 *   a running server (signed as the `pusher` SDK signs) valid against the
 *   documented results, request signing's query parameters (each required
 *   one really required) and the documented error answers;
 * - the internal listener serves the same at `GET /openapi.json`, with the
 *   running config's limits; the public listener does not.
 *
 * That real answers match the result schemas is checked by the server SDK's
 * tests (packages/server-sdk/test): the SDK checks every answer against them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Validator } from '@seriousme/openapi-schema-validator';
import { apiSchemas } from '@herald/protocol/api';
import { renderOpenApi } from '../../src/api/openapi.ts';
import { ApiExecutor } from '../../src/api/executor.ts';
import { version } from '../../src/app/version.ts';
import { ConfigSchema } from '../../src/config/schema.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { Ajv } from 'ajv';
import { PUSHER_ROUTES } from '../../src/pusher/pusher-api-schemas.ts';
import { serverSdk, startPusherHerald, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import { rawRequest, signedQuery, signedRequest } from '../helpers/pusher-api.ts';

const docPath = new URL('../../../../docs/openapi.json', import.meta.url);
const committed = readFileSync(docPath, 'utf8');
const doc = JSON.parse(committed) as any;
const plain = (schema: unknown) => JSON.parse(JSON.stringify(schema));

describe('docs/openapi.json', () => {
  test('is what `npm run docs:openapi` generates (run it after changing the API schemas)', () => {
    assert.equal(committed, renderOpenApi({ version }));
  });

  test('is a valid OpenAPI 3.1 document', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    assert.equal(validator.version, '3.1');
    assert.deepEqual(result.errors ?? [], []);
    assert.equal(result.valid, true);
  });

  test('carries the config\'s default limits', () => {
    assert.equal(doc.components.schemas.BroadcastRequest.properties.channels.maxItems, ConfigSchema.properties.api.properties.maxBroadcastChannels.default);
  });
});

describe('docs/openapi.json against the running server', { timeout: 60000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald();
  });
  after(() => h.close());

  test('its paths are exactly POST /api/<method> for every method of the executor, with its request and result schemas', () => {
    const methods = new ApiExecutor(h.server.node).methods;
    assert.deepEqual(Object.keys(doc.paths).filter((p) => p.startsWith('/api/')).sort(), methods.map((m) => `/api/${m}`).sort());
    assert.deepEqual([...methods].sort(), Object.keys(apiSchemas).sort());
    for (const method of methods) {
      const operations = doc.paths[`/api/${method}`];
      assert.deepEqual(Object.keys(operations), ['post'], `${method}: POST only`);
      const post = operations.post;
      const name = method.split('_').map((p) => p[0]!.toUpperCase() + p.slice(1)).join('');
      assert.equal(post.requestBody.content['application/json'].schema.$ref, `#/components/schemas/${name}Request`);
      assert.equal(post.responses['200'].content['application/json'].schema.$ref, `#/components/schemas/${name}Result`);
      const spec = apiSchemas[method as keyof typeof apiSchemas];
      assert.deepEqual(doc.components.schemas[`${name}Request`], plain(spec.request), `${method} request`);
      assert.deepEqual(doc.components.schemas[`${name}Result`], plain(spec.result), `${method} result`);
      assert.equal(post['x-herald-scope'], spec.scope);
      for (const status of ['400', '401', '403', '413', '429', '503']) assert.ok(post.responses[status], `${method} documents ${status}`);
    }
    const errorBody = doc.components.schemas.ErrorBody;
    assert.deepEqual(errorBody.required, ['error']);
  });

  test('every documented path is a route of the running server; a method it does not list is not', async () => {
    for (const path of Object.keys(doc.paths).filter((p) => p.startsWith('/api/'))) {
      // A body no method accepts: the route exists and checks it against the method's schema.
      const answer = await fetch(h.url + path, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${h.apiKey}` }, body: '{"not_a_field":1}' });
      const body = (await answer.json()) as any;
      assert.deepEqual([answer.status, body.error.code], [400, 'bad_request'], path);
      assert.match(body.error.detail, /^\//, `${path}: the detail names a field`);
    }
    const unknown = await fetch(`${h.url}/api/not_a_method`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${h.apiKey}` }, body: '{}' });
    assert.equal(unknown.status, 404);
  });

  test('the two security schemes, Bearer and X-API-Key, are the ways the server takes a key', async () => {
    assert.deepEqual(doc.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', description: doc.components.securitySchemes.bearer.description });
    assert.deepEqual([doc.components.securitySchemes.apiKey.type, doc.components.securitySchemes.apiKey.in, doc.components.securitySchemes.apiKey.name], ['apiKey', 'header', 'X-API-Key']);
    assert.deepEqual(doc.security, [{ bearer: [] }, { apiKey: [] }]);
    const ways: Record<string, string>[] = [{ authorization: `Bearer ${h.apiKey}` }, { 'x-api-key': h.apiKey }];
    for (const headers of ways) {
      const answer = await fetch(`${h.url}/api/info`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });
      assert.equal(answer.status, 200);
    }
  });

  test('the internal listener serves it at GET /openapi.json; the public listener does not', async () => {
    const served = await fetch(`http://127.0.0.1:${h.server.adminPort}/openapi.json`);
    assert.equal(served.status, 200);
    assert.match(served.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(await served.json(), doc);
    assert.equal((await fetch(`${h.url}/openapi.json`)).status, 404);
  });
});

test('a server with other limits serves them in its description', { timeout: 30000 }, async () => {
  const h = await startHerald({ api: { maxBroadcastChannels: 5 } });
  try {
    const served = (await (await fetch(`http://127.0.0.1:${h.server.adminPort}/openapi.json`)).json()) as any;
    assert.equal(served.components.schemas.BroadcastRequest.properties.channels.maxItems, 5);
  } finally {
    await h.close();
  }
});

describe('docs/openapi.json: the Pusher HTTP API against a running server', { timeout: 60000 }, () => {
  let h: PusherHerald;
  const app = testApp('openapi');
  const ajv = new Ajv({ strict: false });
  before(async () => {
    h = await startPusherHerald([app]);
  });
  after(() => h.close());

  const operation = (path: string): any => Object.values(doc.paths[path])[0];
  /** Checks a 200 answer against the documented result of `path`. */
  function documented(path: string, answer: unknown): void {
    const ref: string = operation(path).responses['200'].content['application/json'].schema.$ref;
    const validate = ajv.compile(doc.components.schemas[ref.split('/').pop()!]);
    assert.ok(validate(answer), `${path}: ${JSON.stringify(answer)} ${ajv.errorsText(validate.errors)}`);
  }

  test('its other paths are exactly the Pusher routes, with the bodies the routes check and request signing\'s parameters', () => {
    assert.deepEqual(
      Object.keys(doc.paths).filter((p) => !p.startsWith('/api/')).sort(),
      PUSHER_ROUTES.map((r) => r.path).sort(),
    );
    for (const route of PUSHER_ROUTES) {
      const op = doc.paths[route.path][route.method];
      assert.ok(op, `${route.method} ${route.path}`);
      assert.deepEqual(op.security, [], 'no API key: Pusher signing');
      const names = op.parameters.filter((p: any) => p.in === 'query').map((p: any) => p.name);
      for (const name of ['auth_key', 'auth_timestamp', 'auth_version', 'auth_signature', 'body_md5']) assert.ok(names.includes(name), `${route.path}: ${name}`);
      if (route.body !== undefined) {
        const ref: string = op.requestBody.content['application/json'].schema.$ref;
        assert.deepEqual(doc.components.schemas[ref.split('/').pop()!], plain(route.body), `${route.path}: the body the route checks`);
      }
      for (const status of ['400', '401', '403', '404', '429', '503']) assert.ok(op.responses[status], `${route.path} documents ${status}`);
    }
  });

  test('real answers of every route match the documented results', async () => {
    const sdk = serverSdk(h, app);
    const trigger = await signedRequest(h, app, 'POST', `/apps/${app.id}/events`, { body: { name: 'e', data: '{}', channels: ['orders', 'presence-team'], info: 'subscription_count,user_count' } });
    assert.equal(trigger.status, 200, trigger.text);
    documented('/apps/{app_id}/events', trigger.json);
    documented('/apps/{app_id}/events', (await signedRequest(h, app, 'POST', `/apps/${app.id}/events`, { body: { name: 'e', data: '{}', channel: 'orders' } })).json);
    const batch = await signedRequest(h, app, 'POST', `/apps/${app.id}/batch_events`, { body: { batch: [{ name: 'a', data: '1', channel: 'orders', info: 'subscription_count' }, { name: 'b', data: '2', channel: 'other' }] } });
    assert.equal(batch.status, 200, batch.text);
    documented('/apps/{app_id}/batch_events', batch.json);
    const channels = await sdk.get({ path: '/channels', params: { info: 'subscription_count' } });
    documented('/apps/{app_id}/channels', await channels.json());
    documented('/apps/{app_id}/channels/{channel_name}', await (await sdk.get({ path: '/channels/presence-team', params: { info: 'user_count,subscription_count' } })).json());
    documented('/apps/{app_id}/channels/{channel_name}/users', await (await sdk.get({ path: '/channels/presence-team/users' })).json());
    const terminate = await signedRequest(h, app, 'POST', `/apps/${app.id}/users/ann/terminate_connections`, { body: {} });
    assert.equal(terminate.status, 200, terminate.text);
    documented('/apps/{app_id}/users/{user_id}/terminate_connections', terminate.json);
  });

  test('each required signing parameter is required; refusals answer a documented status with its herald-error code', async () => {
    const path = `/apps/${app.id}/channels`;
    const query = new URLSearchParams(signedQuery(app, 'GET', path));
    const op = operation('/apps/{app_id}/channels');
    for (const parameter of op.parameters.filter((p: any) => p.in === 'query' && p.required)) {
      const without = new URLSearchParams(query);
      without.delete(parameter.name);
      const answer = await rawRequest(h, 'GET', `${path}?${without}`);
      assert.equal(answer.status, 401, `without ${parameter.name}: ${answer.text}`);
      assert.ok(op.responses['401'], 'documented');
      assert.ok(doc.components.responses.PusherError401.headers['herald-error'].schema.enum.includes(answer.headers.get('herald-error')), parameter.name);
    }
    assert.equal((await rawRequest(h, 'GET', `${path}?${query}`)).status, 200, 'with all of them');
    const unknown = await rawRequest(h, 'GET', `/apps/nope/channels?${query}`);
    assert.equal(unknown.status, 404);
    assert.ok(doc.components.responses.PusherError404.headers['herald-error'].schema.enum.includes(unknown.headers.get('herald-error')));
    assert.match(unknown.headers.get('content-type') ?? '', /^text\/plain/, 'errors are plain text, as documented');
  });
});
