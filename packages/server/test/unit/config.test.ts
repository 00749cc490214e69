/**
 * Config loading: defaults, validation problems naming the path, unknown
 * keys, prototype-poisoning keys in the file, cross-field rules, environment
 * overrides and deep freezing.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig, ConfigError, loadConfig } from '../../src/config/load.ts';
import { ChannelRules } from '../../src/core/channel-rules.ts';

const noEnv = { env: {} };

/** Runs `fn`, expects a ConfigError and returns its problems. */
function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    assert.ok(error.problems.length > 0, 'a ConfigError lists at least one problem');
    assert.equal(error.name, 'ConfigError');
    for (const problem of error.problems) assert.ok(error.message.includes(problem), 'the message lists every problem');
    return error.problems;
  }
  assert.fail('expected a ConfigError');
}

function assertProblem(problems: readonly string[], pattern: RegExp): void {
  assert.ok(
    problems.some((p) => pattern.test(p)),
    `expected a problem matching ${pattern}, got:\n  ${problems.join('\n  ')}`,
  );
}

function withTempFile<T>(content: string, fn: (path: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'herald-config-'));
  try {
    const path = join(dir, 'herald.json');
    writeFileSync(path, content);
    return fn(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('defaults', () => {
  it('fill in every section from an empty object', () => {
    const config = buildConfig({}, noEnv);
    assert.equal(config.mode, 'production');
    assert.equal(config.stateDir, '.herald');
    assert.deepEqual({ ...config.listen }, { host: '127.0.0.1', port: 8000 });
    assert.equal(config.log.level, 'info');
    assert.deepEqual([...config.auth.algorithms], ['HS256']);
    assert.equal(config.auth.leewayMs, 5000);
    assert.equal(config.auth.hmacSecret, undefined);
    assert.deepEqual([...config.api.keys], []);
    assert.equal(config.api.maxBodyBytes, 65536);
    assert.equal(config.api.maxBroadcastChannels, 1000);
    assert.deepEqual(
      { ...config.channels.defaults },
      {
        historySize: 300,
        historyTtlMs: 120000,
        presence: true,
        joinLeave: false,
        clientPublish: false,
        private: false,
        allowAnonymous: false,
        writeDelayMs: 0,
        conflation: { enabled: false, maxKeys: 1024, lagBytes: 65536 },
      },
    );
    assert.deepEqual([...config.channels.namespaces], []);
    assert.equal(config.channels.maxNameBytes, 255);
    assert.equal(config.limits.maxMessageBytes, 65536);
    assert.equal(config.limits.outboundQueueBytes, 1048576);
    assert.equal(config.limits.maxChannelsPerConnection, 128);
    assert.equal(config.limits.staleMs, 10000);
    assert.equal(config.ping.intervalMs, 25000);
    assert.equal(config.ping.maxMissed, 2);
    assert.equal(config.longPoll.pollTimeoutMs, 25000);
    assert.equal(config.longPoll.sessionTimeoutMs, 40000);
    assert.equal(config.shutdown.drainTimeoutMs, 30000);
  });

  it('fill in around values that are given', () => {
    const config = buildConfig({ listen: { port: 9000 }, channels: { defaults: { historySize: 10 } } }, noEnv);
    assert.equal(config.listen.port, 9000);
    assert.equal(config.listen.host, '127.0.0.1');
    assert.equal(config.channels.defaults.historySize, 10);
    assert.equal(config.channels.defaults.historyTtlMs, 120000);
  });

  it('are not shared or mutated between builds', () => {
    const first = buildConfig({}, noEnv);
    const second = buildConfig({ listen: { port: 1 }, auth: { algorithms: ['RS256'] } }, noEnv);
    const third = buildConfig({}, noEnv);
    assert.equal(second.listen.port, 1);
    assert.equal(third.listen.port, 8000);
    assert.deepEqual([...third.auth.algorithms], ['HS256']);
    assert.notEqual(first.listen, third.listen);
    assert.notEqual(first.auth.algorithms, third.auth.algorithms);
  });

  it('do not mutate the raw input', () => {
    const raw = { listen: { port: 9000 } };
    buildConfig(raw, { env: { HERALD_HOST: '0.0.0.0' } });
    assert.deepEqual(raw, { listen: { port: 9000 } });
  });

  it('a namespace inherits unset options from channels.defaults (docs/config.md)', () => {
    const config = buildConfig(
      {
        channels: {
          defaults: { historySize: 50, historyTtlMs: 5000, joinLeave: true, presence: false },
          namespaces: [{ name: 'chat', clientPublish: true }],
        },
      },
      noEnv,
    );
    const rules = new ChannelRules(config.channels);
    const resolved = rules.resolve('chat:room');
    assert.ok(!('reply' in resolved), `chat:room resolves, got ${JSON.stringify(resolved)}`);
    // Resolutions are kept (a bounded set): the same answer again, also after the set has been dropped when full, and refusals stay refusals.
    assert.deepEqual(rules.resolve('chat:room'), resolved);
    // 10 000 channels named in turn (a channel per user, published to in turn) all stay kept: the same object comes back.
    const first = rules.resolve('chat:c0');
    for (let i = 1; i < 10000; i++) rules.resolve(`chat:c${i}`);
    assert.equal(rules.resolve('chat:c0'), first);
    for (let i = 0; i < 20000; i++) assert.equal((rules.resolve(`chat:r${i}`) as { namespace: string }).namespace, 'chat');
    assert.deepEqual(rules.resolve('chat:room'), resolved);
    assert.deepEqual(rules.resolve('nope:room'), { reply: 'unknown_namespace' });
    assert.deepEqual(rules.resolve('nope:room'), { reply: 'unknown_namespace' });
    assert.equal((rules.resolve('room') as { namespace: string }).namespace, '');
    assert.equal(resolved.options.clientPublish, true, 'set option wins');
    assert.deepEqual(
      {
        historySize: resolved.options.historySize,
        historyTtlMs: resolved.options.historyTtlMs,
        joinLeave: resolved.options.joinLeave,
        presence: resolved.options.presence,
      },
      { historySize: 50, historyTtlMs: 5000, joinLeave: true, presence: false },
      'unset namespace options must come from channels.defaults, not from the schema defaults',
    );
  });
});

describe('invalid values', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['port above 65535', { listen: { port: 70000 } }, /^\/listen\/port: .*70000/],
    ['negative port', { listen: { port: -1 } }, /^\/listen\/port: /],
    ['port as a string', { listen: { port: '8000' } }, /^\/listen\/port: /],
    ['fractional port', { listen: { port: 80.5 } }, /^\/listen\/port: /],
    ['unknown log level', { log: { level: 'loud' } }, /^\/log\/level: .*loud/],
    ['unknown mode', { mode: 'staging' }, /^\/mode: /],
    ['unknown algorithm', { auth: { algorithms: ['none'] } }, /^\/auth\/algorithms\/0: /],
    ['empty algorithm list', { auth: { algorithms: [] } }, /^\/auth\/algorithms: /],
    ['duplicate algorithms', { auth: { algorithms: ['HS256', 'HS256'] } }, /^\/auth\/algorithms: /],
    ['short HMAC secret', { auth: { hmacSecret: 'short' } }, /^\/auth\/hmacSecret: /],
    ['negative history size', { channels: { defaults: { historySize: -1 } } }, /^\/channels\/defaults\/historySize: /],
    ['zero TTL', { channels: { defaults: { historyTtlMs: 0 } } }, /^\/channels\/defaults\/historyTtlMs: /],
    ['presence not a boolean', { channels: { defaults: { presence: 'yes' } } }, /^\/channels\/defaults\/presence: /],
    ['bad namespace name', { channels: { namespaces: [{ name: 'Chat' }] } }, /^\/channels\/namespaces\/0\/name: /],
    ['namespace without a name', { channels: { namespaces: [{ presence: true }] } }, /^\/channels\/namespaces\/0(\/name)?: /],
    ['namespace option of the wrong type', { channels: { namespaces: [{ name: 'chat', historySize: 'many' }] } }, /^\/channels\/namespaces\/0\/historySize: /],
    ['API key hash not hex', { api: { keys: [{ name: 'k', sha256: 'xyz', scopes: ['read'] }] } }, /^\/api\/keys\/0\/sha256: /],
    ['API key unknown scope', { api: { keys: [{ name: 'k', sha256: 'a'.repeat(64), scopes: ['root'] }] } }, /^\/api\/keys\/0\/scopes\/0: /],
    ['API key without scopes', { api: { keys: [{ name: 'k', sha256: 'a'.repeat(64), scopes: [] }] } }, /^\/api\/keys\/0\/scopes: /],
    ['maxMessageBytes too small', { limits: { maxMessageBytes: 10 } }, /^\/limits\/maxMessageBytes: .*10/],
    ['maxNameBytes too large', { channels: { maxNameBytes: 5000 } }, /^\/channels\/maxNameBytes: /],
    ['ping.maxMissed zero', { ping: { maxMissed: 0 } }, /^\/ping\/maxMissed: /],
    ['section of the wrong type', { listen: 'localhost:8000' }, /^\/listen: /],
  ];
  for (const [name, raw, pattern] of cases) {
    it(`${name} gives a problem naming the path`, () => {
      assertProblem(problemsOf(() => buildConfig(raw, noEnv)), pattern);
    });
  }

  it('every problem is reported, not only the first', () => {
    const problems = problemsOf(() => buildConfig({ listen: { port: 70000 }, log: { level: 'loud' } }, noEnv));
    assertProblem(problems, /^\/listen\/port: /);
    assertProblem(problems, /^\/log\/level: /);
  });

  it('long values are shortened in the problem text', () => {
    const problems = problemsOf(() => buildConfig({ log: { level: 'x'.repeat(500) } }, noEnv));
    for (const problem of problems) assert.ok(problem.length < 200, `problem too long: ${problem.length} chars`);
  });
});

describe('unknown keys', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['at the top level', { lisen: { port: 1 } }, /^\/lisen: /],
    ['in a section', { listen: { hots: '0.0.0.0' } }, /^\/listen\/hots: /],
    ['in channels.defaults', { channels: { defaults: { historySizes: 1 } } }, /^\/channels\/defaults\/historySizes: /],
    ['in a namespace', { channels: { namespaces: [{ name: 'chat', presense: true }] } }, /^\/channels\/namespaces\/0\/presense: /],
    ['in an API key', { api: { keys: [{ name: 'k', sha256: 'a'.repeat(64), scopes: ['read'], key: 'plain' }] } }, /^\/api\/keys\/0\/key: /],
  ];
  for (const [name, raw, pattern] of cases) {
    it(`are rejected ${name}`, () => {
      assertProblem(problemsOf(() => buildConfig(raw, noEnv)), pattern);
    });
  }
});

describe('cross-field rules', () => {
  it('a namespace defined twice is rejected', () => {
    const problems = problemsOf(() => buildConfig({ channels: { namespaces: [{ name: 'chat' }, { name: 'news' }, { name: 'chat', presence: false }] } }, noEnv));
    assertProblem(problems, /^\/channels\/namespaces: .*"chat".*twice/);
  });

  it('conflation.lagBytes at or past limits.outboundQueueBytes is rejected, in the defaults and in a namespace', () => {
    const inNamespace = problemsOf(() =>
      buildConfig({ limits: { outboundQueueBytes: 65536 }, channels: { namespaces: [{ name: 'px', conflation: { enabled: true, lagBytes: 65536 } }] } }, noEnv),
    );
    assertProblem(inNamespace, /^\/channels\/namespaces\/0\/conflation\/lagBytes: must be below limits.outboundQueueBytes/);
    const inDefaults = problemsOf(() => buildConfig({ limits: { outboundQueueBytes: 32768 }, channels: { defaults: { conflation: { enabled: true } } } }, noEnv));
    assertProblem(inDefaults, /^\/channels\/defaults\/conflation\/lagBytes: /);
    // Conflation off: lagBytes does not matter.
    assert.equal(buildConfig({ limits: { outboundQueueBytes: 32768 } }, noEnv).limits.outboundQueueBytes, 32768);
  });

  it('a namespace conflation object gets its own defaults', () => {
    const config = buildConfig({ channels: { namespaces: [{ name: 'px', conflation: { enabled: true, key: 'sym' } }] } }, noEnv);
    assert.deepEqual(new ChannelRules(config.channels).resolve('px:a'), {
      channel: 'px:a',
      namespace: 'px',
      options: { ...config.channels.defaults, conflation: { enabled: true, key: 'sym', maxKeys: 1024, lagBytes: 65536 } },
    });
  });

  it('an API key name used twice is rejected', () => {
    const key = { name: 'backend', sha256: 'a'.repeat(64), scopes: ['read'] };
    const problems = problemsOf(() => buildConfig({ api: { keys: [key, { ...key, sha256: 'b'.repeat(64) }] } }, noEnv));
    assertProblem(problems, /^\/api\/keys: .*"backend"/);
  });

  it('hmacSecret and hmacSecretFile together are rejected', () => {
    const problems = problemsOf(() => buildConfig({ auth: { hmacSecret: 's'.repeat(32), hmacSecretFile: '/run/secret' } }, noEnv));
    assertProblem(problems, /^\/auth: /);
  });

  it('publicKey and publicKeyFile together are rejected', () => {
    const problems = problemsOf(() => buildConfig({ auth: { publicKey: 'pem', publicKeyFile: '/run/key.pem', algorithms: ['RS256'] } }, noEnv));
    assertProblem(problems, /^\/auth: /);
  });

  it('cluster workers go with every engine, redis included (each worker is a Redis node)', () => {
    assert.equal(buildConfig({ cluster: { workers: 4 }, engine: { type: 'redis' } }, noEnv).cluster.workers, 4);
    assert.equal(buildConfig({ cluster: { workers: 4 } }, noEnv).cluster.workers, 4);
  });

  it('limits.scope "cluster" without the redis engine is rejected, naming the fix; "node" is the default', () => {
    for (const type of ['memory', 'sqlite']) {
      const problems = problemsOf(() => buildConfig({ limits: { scope: 'cluster' }, engine: { type } }, noEnv));
      assertProblem(problems, new RegExp(`^/limits/scope: "cluster" .*needs engine\\.type "redis" \\(this config has "${type}"\\).*limits\\.scope to "node"`));
    }
    assert.equal(buildConfig({ limits: { scope: 'cluster' }, engine: { type: 'redis' } }, noEnv).limits.scope, 'cluster');
    assert.equal(buildConfig({}, noEnv).limits.scope, 'node');
    assertProblem(problemsOf(() => buildConfig({ limits: { scope: 'global' } }, noEnv)), /^\/limits\/scope: /);
  });

  it('a hard inbound limit below the rate is rejected', () => {
    const problems = problemsOf(() => buildConfig({ limits: { inboundRatePerSecond: 100, inboundHardPerSecond: 10 } }, noEnv));
    assertProblem(problems, /^\/limits: /);
  });
});

describe('environment and flag overrides', () => {
  it('HERALD_PORT, HERALD_HOST, HERALD_LOG_LEVEL and HERALD_AUTH_HMAC_SECRET override the file', () => {
    const secret = 'e'.repeat(40);
    const config = buildConfig(
      { listen: { host: '127.0.0.1', port: 8000 }, log: { level: 'info' }, auth: { hmacSecret: 'f'.repeat(40) } },
      { env: { HERALD_PORT: '9100', HERALD_HOST: '0.0.0.0', HERALD_LOG_LEVEL: 'debug', HERALD_AUTH_HMAC_SECRET: secret } },
    );
    assert.equal(config.listen.port, 9100);
    assert.equal(config.listen.host, '0.0.0.0');
    assert.equal(config.log.level, 'debug');
    assert.equal(config.auth.hmacSecret, secret);
  });

  it('overrides create missing sections', () => {
    const config = buildConfig({}, { env: { HERALD_PORT: '0' } });
    assert.equal(config.listen.port, 0);
    assert.equal(config.listen.host, '127.0.0.1');
  });

  it('empty environment variables are ignored', () => {
    const config = buildConfig({ listen: { port: 8100 } }, { env: { HERALD_PORT: '', HERALD_HOST: '', HERALD_LOG_LEVEL: '' } });
    assert.equal(config.listen.port, 8100);
    assert.equal(config.listen.host, '127.0.0.1');
    assert.equal(config.log.level, 'info');
  });

  for (const bad of ['abc', '80.5', 'NaN']) {
    it(`HERALD_PORT=${JSON.stringify(bad)} is rejected, naming the variable`, () => {
      assertProblem(problemsOf(() => buildConfig({}, { env: { HERALD_PORT: bad } })), /HERALD_PORT/);
    });
  }

  it('HERALD_PORT out of range is rejected', () => {
    assertProblem(problemsOf(() => buildConfig({}, { env: { HERALD_PORT: '70000' } })), /^\/listen\/port: /);
  });

  it('an invalid HERALD_LOG_LEVEL is rejected at /log/level', () => {
    assertProblem(problemsOf(() => buildConfig({}, { env: { HERALD_LOG_LEVEL: 'chatty' } })), /^\/log\/level: /);
  });

  it('a short HERALD_AUTH_HMAC_SECRET is rejected at /auth/hmacSecret', () => {
    assertProblem(problemsOf(() => buildConfig({}, { env: { HERALD_AUTH_HMAC_SECRET: 'short' } })), /^\/auth\/hmacSecret: /);
  });

  it('flags win over the environment', () => {
    const config = buildConfig({}, { env: { HERALD_PORT: '9100', HERALD_HOST: '0.0.0.0', HERALD_LOG_LEVEL: 'debug' }, overrides: { port: 9200, host: '::1', logLevel: 'warn' } });
    assert.equal(config.listen.port, 9200);
    assert.equal(config.listen.host, '::1');
    assert.equal(config.log.level, 'warn');
  });

  it('HERALD_REDIS_CLUSTER and --redis-cluster give engine.redisCluster as a comma-separated list; the flag wins', () => {
    const fromEnv = buildConfig({ engine: { type: 'redis' } }, { env: { HERALD_REDIS_CLUSTER: 'redis://10.0.0.1:7000, redis://10.0.0.2:7000,' } });
    assert.deepEqual(fromEnv.engine.redisCluster, ['redis://10.0.0.1:7000', 'redis://10.0.0.2:7000']);
    const fromFlag = buildConfig({ engine: { type: 'redis' } }, { env: { HERALD_REDIS_CLUSTER: 'redis://10.0.0.1:7000' }, overrides: { redisCluster: 'rediss://u:p@10.0.0.3:7000' } });
    assert.deepEqual(fromFlag.engine.redisCluster, ['rediss://u:p@10.0.0.3:7000']);
    assert.deepEqual(buildConfig({}, { env: {} }).engine.redisCluster, []);
  });

  it('engine.redisCluster needs the redis engine and URLs, and never echoes a seed (it may hold a password)', () => {
    assertProblem(problemsOf(() => buildConfig({ engine: { type: 'sqlite', redisCluster: ['redis://10.0.0.1:7000'] } }, { env: {} })), /^\/engine\/redisCluster: .*engine.type to "redis"/);
    assertProblem(problemsOf(() => buildConfig({ engine: { type: 'redis', redisCluster: ['redis://'] } }, { env: {} })), /^\/engine\/redisCluster\/0: not a URL/);
    const problems = problemsOf(() => buildConfig({ engine: { type: 'redis', redisCluster: ['http://:hunter2-secret@10.0.0.1:7000'] } }, { env: {} }));
    assertProblem(problems, /^\/engine\/redisCluster\/0: /);
    assert.ok(problems.every((p) => !p.includes('hunter2-secret')), problems.join('\n'));
  });
});

describe('deep freeze', () => {
  it('freezes the result at every level', () => {
    const config = buildConfig(
      {
        auth: { algorithms: ['HS256', 'RS256'] },
        api: { keys: [{ name: 'k', sha256: 'a'.repeat(64), scopes: ['read', 'publish'] }] },
        channels: { namespaces: [{ name: 'chat', presence: true }] },
      },
      noEnv,
    );
    const unfrozen: string[] = [];
    const visit = (value: unknown, path: string): void => {
      if (typeof value !== 'object' || value === null) return;
      if (!Object.isFrozen(value)) unfrozen.push(path || '/');
      for (const [key, child] of Object.entries(value)) visit(child, `${path}/${key}`);
    };
    visit(config, '');
    assert.deepEqual(unfrozen, []);
  });

  it('rejects writes in strict mode', () => {
    const config = buildConfig({ channels: { namespaces: [{ name: 'chat' }] } }, noEnv);
    assert.throws(() => {
      (config.listen as { port: number }).port = 1;
    }, TypeError);
    assert.throws(() => {
      (config.auth.algorithms as string[]).push('RS256');
    }, TypeError);
    assert.throws(() => {
      (config.channels.namespaces[0] as unknown as { presence: boolean }).presence = false;
    }, TypeError);
  });
});

describe('loadConfig', () => {
  it('reads a JSON file; a file means production mode', () => {
    const config = withTempFile(JSON.stringify({ listen: { port: 8123 } }), (file) => loadConfig({ file, env: {} }));
    assert.equal(config.listen.port, 8123);
    assert.equal(config.mode, 'production');
  });

  it('finds the file through HERALD_CONFIG', () => {
    const config = withTempFile(JSON.stringify({ listen: { port: 8124 } }), (file) => loadConfig({ env: { HERALD_CONFIG: file } }));
    assert.equal(config.listen.port, 8124);
  });

  it('without a file runs in development mode', () => {
    assert.equal(loadConfig({ env: {} }).mode, 'development');
  });

  it('the environment overrides the file', () => {
    const config = withTempFile(JSON.stringify({ listen: { port: 8123 } }), (file) => loadConfig({ file, env: { HERALD_PORT: '8125' } }));
    assert.equal(config.listen.port, 8125);
  });

  const poisoned: [string, string][] = [
    ['__proto__ at the top level', '{"__proto__": {"mode": "development"}}'],
    ['__proto__ in a section', '{"listen": {"__proto__": {"port": 1234}}}'],
    ['__proto__ in a namespace', '{"channels": {"namespaces": [{"name": "chat", "__proto__": {"clientPublish": true}}]}}'],
    ['escaped __proto__', '{"\\u005f_proto__": {"mode": "development"}}'],
    ['constructor.prototype', '{"constructor": {"prototype": {"mode": "development"}}}'],
  ];
  for (const [name, text] of poisoned) {
    it(`rejects ${name} in the file and pollutes nothing`, () => {
      const problems = withTempFile(text, (file) => problemsOf(() => loadConfig({ file, env: {} })));
      assertProblem(problems, /__proto__|constructor/);
      assert.equal(({} as Record<string, unknown>)['mode'], undefined);
      assert.equal(({} as Record<string, unknown>)['port'], undefined);
      assert.equal(({} as Record<string, unknown>)['clientPublish'], undefined);
    });
  }

  for (const [name, text] of [
    ['malformed JSON', '{"listen": '],
    ['a JSON array', '[]'],
    ['JSON null', 'null'],
    ['a JSON string', '"config"'],
  ] as const) {
    it(`rejects ${name}, naming the file`, () => {
      withTempFile(text, (file) => assertProblem(problemsOf(() => loadConfig({ file, env: {} })), new RegExp(file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))));
    });
  }

  it('a missing file is a ConfigError naming it', () => {
    const file = join(tmpdir(), `herald-missing-${process.pid}-${Date.now()}.json`);
    assertProblem(problemsOf(() => loadConfig({ file, env: {} })), /cannot read config file .*herald-missing-.*ENOENT/);
  });

  it('validation problems from the file are reported with their path', () => {
    const problems = withTempFile(JSON.stringify({ listen: { port: 'eighty' } }), (file) => problemsOf(() => loadConfig({ file, env: {} })));
    assertProblem(problems, /^\/listen\/port: /);
  });
});

describe('secrets: where they may come from, and never echoed', () => {
  const secret = 'Inline-Secret-Value-0123456789-abcdefgh';

  it('production mode refuses an HMAC secret written in the config file, naming both fixes, without the value', () => {
    const problems = withTempFile(JSON.stringify({ auth: { hmacSecret: secret } }), (file) => problemsOf(() => loadConfig({ file, env: {} })));
    assertProblem(problems, /^\/auth\/hmacSecret: .*config file.*auth\.hmacSecretFile.*HERALD_AUTH_HMAC_SECRET/);
    for (const problem of problems) assert.ok(!problem.includes(secret), `a problem quotes the secret: ${problem}`);
  });

  it('a secret in the file is refused even when the environment also sets one', () => {
    const problems = withTempFile(JSON.stringify({ auth: { hmacSecret: secret } }), (file) =>
      problemsOf(() => loadConfig({ file, env: { HERALD_AUTH_HMAC_SECRET: 'e'.repeat(40) } })),
    );
    assertProblem(problems, /^\/auth\/hmacSecret: .*config file/);
  });

  it('the environment and secret files stay allowed in production mode; a file in development mode may hold the secret', () => {
    const fromEnv = withTempFile(JSON.stringify({ listen: { port: 8123 } }), (file) => loadConfig({ file, env: { HERALD_AUTH_HMAC_SECRET: secret } }));
    assert.equal(fromEnv.auth.hmacSecret, secret);
    const fromFile = withTempFile(JSON.stringify({ auth: { hmacSecretFile: '/run/secrets/herald-hmac' } }), (file) => loadConfig({ file, env: {} }));
    assert.equal(fromFile.auth.hmacSecretFile, '/run/secrets/herald-hmac');
    const development = withTempFile(JSON.stringify({ mode: 'development', auth: { hmacSecret: secret } }), (file) => loadConfig({ file, env: {} }));
    assert.equal(development.auth.hmacSecret, secret);
  });

  it('a config object handed over by code (no file) may carry the secret', () => {
    assert.equal(buildConfig({ mode: 'production', auth: { hmacSecret: secret } }, noEnv).auth.hmacSecret, secret);
  });

  for (const mode of ['production', 'development']) {
    it(`a HERALD_API_KEY shorter than 32 characters is refused in ${mode} mode, without echoing it`, () => {
      for (const key of ['Zq9', 'x'.repeat(31)]) {
        const problems = problemsOf(() => buildConfig({ mode }, { env: { HERALD_API_KEY: key } }));
        assertProblem(problems, /^HERALD_API_KEY: .*at least 32/);
        for (const problem of problems) assert.ok(!problem.includes(key), `a problem quotes the key: ${problem}`);
      }
    });
  }

  it('a HERALD_API_KEY of 32 characters or more becomes an admin key named "env", held as its hash', () => {
    const key = 'k'.repeat(32);
    const config = buildConfig({}, { env: { HERALD_API_KEY: key } });
    const env = config.api.keys.find((k) => k.name === 'env');
    assert.ok(env !== undefined);
    assert.deepEqual([...env.scopes], ['admin']);
    assert.match(env.sha256, /^[0-9a-f]{64}$/);
    assert.ok(!JSON.stringify(config).includes(key), 'the plain key is not kept');
  });

  it('a short secret is never echoed, whether from the environment or the file', () => {
    const short = 'tiny-Qx7';
    for (const problems of [
      problemsOf(() => buildConfig({}, { env: { HERALD_AUTH_HMAC_SECRET: short } })),
      problemsOf(() => buildConfig({ mode: 'development', auth: { hmacSecret: short } }, noEnv)),
    ]) {
      assertProblem(problems, /^\/auth\/hmacSecret: .*at least 32/);
      for (const problem of problems) assert.ok(!problem.includes(short), `a problem quotes the secret: ${problem}`);
    }
    assertProblem(problemsOf(() => buildConfig({}, { env: { HERALD_AUTH_HMAC_SECRET: short } })), /HERALD_AUTH_HMAC_SECRET/);
  });
});

describe('problems say what is wrong and how to fix it', () => {
  it('a JSON syntax error names the file, line and column, and quotes nothing', () => {
    const text = '{\n  "listen": { "port": 8000, }\n}\n';
    const column = text.split('\n')[1]!.indexOf('}') + 1;
    const problems = withTempFile(text, (file) => problemsOf(() => loadConfig({ file, env: {} })));
    assertProblem(problems, new RegExp(`herald\\.json:2:${column}: not valid JSON: .*trailing comma`));
    const bare = withTempFile('{"auth": {"hmacSecret": nope-secret}}', (file) => problemsOf(() => loadConfig({ file, env: {} })));
    assertProblem(bare, /herald\.json:1:25: not valid JSON/);
    for (const problem of bare) assert.ok(!problem.includes('secret}'), problem);
    const cut = withTempFile('{\n  "listen": {\n', (file) => problemsOf(() => loadConfig({ file, env: {} })));
    assertProblem(cut, /herald\.json:3:1: not valid JSON: .*end of the file/);
  });

  it('an enum error lists the allowed values', () => {
    assertProblem(problemsOf(() => buildConfig({ log: { level: 'loud' } }, noEnv)), /^\/log\/level: must be one of: "fatal", "error", "warn", "info", "debug", "trace", "silent" \(got loud\)/);
    assertProblem(problemsOf(() => buildConfig({ mode: 'staging' }, noEnv)), /^\/mode: must be one of: "development", "production"/);
    assertProblem(problemsOf(() => buildConfig({ engine: { type: 'mysql' } }, noEnv)), /^\/engine\/type: must be one of: "memory", "sqlite", "redis"/);
    assertProblem(problemsOf(() => buildConfig({}, { env: { HERALD_ENGINE: 'mysql' } })), /^\/engine\/type: .*"redis".*set by HERALD_ENGINE/);
  });

  it('an unknown key suggests the option it resembles', () => {
    assertProblem(problemsOf(() => buildConfig({ lisen: { port: 1 } }, noEnv)), /^\/lisen: unknown option; did you mean "listen"\?/);
    assertProblem(problemsOf(() => buildConfig({ listen: { prot: 1 } }, noEnv)), /^\/listen\/prot: unknown option; did you mean "port"\?/);
  });

  it('schema and cross-field problems are reported together', () => {
    const problems = problemsOf(() => buildConfig({ log: { level: 'loud' }, channels: { namespaces: [{ name: 'a' }, { name: 'a' }] } }, noEnv));
    assertProblem(problems, /^\/log\/level: /);
    assertProblem(problems, /^\/channels\/namespaces: .*"a".*twice/);
  });
});
