/**
 * The container image's command, run as a process the way a container
 * engine runs it, without one (there is no Docker engine here):
 *
 * - the image's files are laid out from deploy/Dockerfile itself: the
 *   `deps` stage's COPY and RUN (`npm ci --omit=dev …`, production
 *   dependencies exactly as locked) are run in a temporary directory, the
 *   `build` stage is this clone after `npm ci` (which builds `dist/`), and
 *   the runtime stage's COPY instructions are applied to both;
 * - the command is the runtime stage's ENTRYPOINT + CMD with its ENV, run as
 *   its USER (uid and gid) in a sandbox where every filesystem is read-only
 *   but the state volume (VOLUME), with the config the image carries and
 *   the token secret where that config expects it (sandbox.ts);
 * - ports are ephemeral: HERALD_PORT=0 and HERALD_ADMIN_PORT=0, and the
 *   public listener on loopback (HERALD_HOST), the only changes to the
 *   image's environment.
 *
 * It starts, the image's HEALTHCHECK command passes, an API key made with
 * the image's CLI lands in the state volume and works, and SIGTERM drains a
 * WebSocket client (3001) and exits 0. The Kubernetes Deployment's
 * container (its args, env, volume mounts, user and probes, with the
 * ConfigMap and the example Secret filled in) gets the same treatment.
 *
 * The one difference from the image: `node` is this clone's Node 24
 * (node_modules/.bin), not the image's /usr/local/bin/node.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, posix } from 'node:path';
import { createInterface } from 'node:readline';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { REPO_ROOT, deployFile, dockerStages, kubernetesObjects, lastOf, stageEnv, stageWorkdir, type DockerStage } from './deploy-files.ts';
import { runSandboxed, sandboxUnavailable, spawnSandboxed, type SandboxMount, type SandboxSpec } from './sandbox.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';

const unavailable = sandboxUnavailable();
const skipAll = missingService(`a container-like sandbox: ${unavailable ?? ''}`, unavailable === undefined);

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `herald-${prefix}-`));
  chmodSync(dir, 0o755);
  dirs.push(dir);
  return dir;
}

// ------------------------------------------------------------------ the image

interface Image {
  readonly runtime: DockerStage;
  /** Read-only image directories (/opt/herald, /etc/herald) and where they are here. */
  readonly mounts: readonly SandboxMount[];
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly healthcheck: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly uid: number;
  readonly gid: number;
  readonly workdir: string;
  readonly volume: string;
}

/** Where an image path of a stage is, here. */
type StageFs = (imagePath: string) => string;

/** COPY [--from=stage] SRC… DEST, applied to `into`. */
function applyCopy(stage: DockerStage, copy: DockerStage['instructions'][number], into: StageFs, stages: ReadonlyMap<string, StageFs>): string {
  const words = copy.args;
  const dest = posix.resolve(stageWorkdir(stage), words.at(-1)!);
  const from = copy.flags['from'];
  const source: StageFs = from === undefined ? (p) => join(REPO_ROOT, p) : (stages.get(from) ?? assert.fail(`COPY --from=${from}: no such stage`));
  for (const src of words.slice(0, -1)) {
    const local = source(from === undefined ? src : posix.resolve('/', src));
    assert.ok(existsSync(local), `line ${copy.line}: COPY source ${src} does not exist (${local})`);
    const target = statSync(local).isDirectory() || !words.at(-1)!.endsWith('/') ? into(dest) : into(posix.join(dest, basename(src)));
    mkdirSync(statSync(local).isDirectory() ? target : dirname(target), { recursive: true });
    cpSync(local, target, { recursive: true, verbatimSymlinks: true });
  }
  return dest;
}

/** Lays out the image's files from deploy/Dockerfile (see the top of this file). */
function buildImage(): Image {
  const stages = dockerStages();
  const runtime = stages.at(-1)!;
  const dir = tempDir('image');
  const fs = new Map<string, StageFs>();
  for (const stage of stages.slice(0, -1)) {
    if (stage.name === 'build') {
      // This clone after `npm ci`, which ran the build (dist/ of every package).
      const workdir = stageWorkdir(stage);
      fs.set('build', (p) => {
        const rel = posix.relative(workdir, p);
        assert.ok(!rel.startsWith('..') && !isAbsolute(rel), `the build stage's files live under ${workdir}, not ${p}`);
        return join(REPO_ROOT, rel);
      });
      continue;
    }
    const root = join(dir, stage.name);
    const stageFs: StageFs = (p) => join(root, p);
    for (const instruction of stage.instructions) {
      if (instruction.keyword === 'COPY') applyCopy(stage, instruction, stageFs, fs);
      if (instruction.keyword === 'RUN') {
        const argv = instruction.json ?? instruction.args;
        assert.ok(!argv.some((w) => ['&&', '||', ';', '|'].includes(w)), `line ${instruction.line}: RUN of the ${stage.name} stage is run here as one plain command`);
        const cwd = stageFs(stageWorkdir(stage));
        mkdirSync(cwd, { recursive: true });
        // Not the npm_* variables of the `npm test` running this (they name this clone's project);
        // npm reads its cache first (what BuildKit's cache mount gives the image build).
        const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_')));
        execFileSync(argv[0]!, argv.slice(1), { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...env, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' } });
      }
    }
    fs.set(stage.name, stageFs);
  }
  const rootfs = join(dir, 'rootfs');
  const runtimeFs: StageFs = (p) => join(rootfs, p);
  const roots = new Set<string>();
  for (const copy of runtime.instructions.filter((i) => i.keyword === 'COPY')) {
    const dest = applyCopy(runtime, copy, runtimeFs, fs);
    roots.add(dest.split('/').slice(0, 3).join('/'));
  }
  const [uid, gid] = (lastOf(runtime, 'USER')?.args[0] ?? '').split(':').map(Number);
  assert.ok(Number.isInteger(uid) && uid! > 0 && Number.isInteger(gid) && gid! > 0, 'USER uid:gid, numeric, not root');
  const volume = lastOf(runtime, 'VOLUME')?.json?.[0];
  assert.ok(volume !== undefined, 'VOLUME [path]');
  return {
    runtime,
    // This Node 24 at a path of its own (the clone may live under /tmp, which a pod's emptyDir hides).
    mounts: [...[...roots].map((target) => ({ target, source: runtimeFs(target) })), { target: NODE_DIR, source: dirname(process.execPath) }],
    entrypoint: lastOf(runtime, 'ENTRYPOINT')?.json ?? assert.fail('ENTRYPOINT in JSON form'),
    cmd: lastOf(runtime, 'CMD')?.json ?? assert.fail('CMD in JSON form'),
    healthcheck: lastOf(runtime, 'HEALTHCHECK')?.json ?? assert.fail('HEALTHCHECK CMD in JSON form'),
    env: stageEnv(runtime),
    uid: uid!,
    gid: gid!,
    workdir: stageWorkdir(runtime),
    volume,
  };
}

/** A state volume as a fresh named volume starts: owned by the image's user, 0700 (the runtime stage's RUN makes it so). */
function stateVolume(image: Image): string {
  const dir = tempDir('state');
  chownSync(dir, image.uid, image.gid);
  chmodSync(dir, 0o700);
  return dir;
}

/** A secrets directory (a compose secret, a Kubernetes Secret volume): files readable by the image's user only. */
function secretsDir(files: Record<string, string>, uid: number, gid: number, mode = 0o400): string {
  const dir = tempDir('secrets');
  for (const [name, value] of Object.entries(files)) {
    writeFileSync(join(dir, name), value);
    chownSync(join(dir, name), uid, gid);
    chmodSync(join(dir, name), mode);
  }
  return dir;
}

/** Where the sandbox shows this Node 24 (the image's own node would be /usr/local/bin/node). */
const NODE_DIR = '/usr/local/lib/herald-test-node/bin';
const PATH = `${NODE_DIR}:/usr/local/bin:/usr/bin:/bin`;
/** Ephemeral ports, the public listener on loopback: the only changes to the deployment's environment. */
const EPHEMERAL = { HERALD_HOST: '127.0.0.1', HERALD_PORT: '0', HERALD_ADMIN_PORT: '0' };

// ------------------------------------------------------------ the process

class Container {
  readonly spec: SandboxSpec;
  readonly child: ChildProcess;
  readonly logs: Record<string, unknown>[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;
  readonly #waiters = new Set<() => void>();

  constructor(spec: SandboxSpec) {
    this.spec = spec;
    this.child = spawnSandboxed(spec);
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        this.logs.push({ text: line });
      }
      this.#wake();
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
    this.child.on('exit', () => this.#wake());
  }

  #wake(): void {
    for (const waiter of this.#waiters) waiter();
  }

  /** The first log line with this `msg`; rejects if the process exits first. */
  logLine(msg: string): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const line = this.logs.find((l) => l['msg'] === msg);
        if (line !== undefined) {
          this.#waiters.delete(check);
          resolve(line);
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          this.#waiters.delete(check);
          reject(new Error(`exited (${this.child.exitCode ?? this.child.signalCode}) before "${msg}":\n${this.stderr}\n${JSON.stringify(this.logs)}`));
        }
      };
      this.#waiters.add(check);
      check();
    });
  }

  async ports(): Promise<{ port: number; adminPort: number }> {
    const publicLine = await this.logLine('listening');
    const adminLine = await this.logLine('internal listener (metrics, health)');
    return { port: publicLine['port'] as number, adminPort: adminLine['port'] as number };
  }

  /** Another command in the same container (`docker exec`): same user, mounts and environment. */
  exec(argv: readonly string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return runSandboxed({ ...this.spec, argv, env: { ...this.spec.env, ...env } });
  }
}

/** The uid the kernel says the process runs as. */
function processUid(pid: number): number {
  const status = execFileSync('cat', [`/proc/${pid}/status`], { encoding: 'utf8' });
  return Number(/^Uid:\s+(\d+)/m.exec(status)![1]);
}

async function connectWebSocket(port: number, token: string): Promise<{ socket: WebSocket; closed: Promise<number> }> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/connection/websocket`);
  const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  const reply = new Promise<Record<string, unknown>>((resolve) => socket.once('message', (data: Buffer) => resolve(JSON.parse(data.toString()) as Record<string, unknown>)));
  socket.send(JSON.stringify({ id: 1, method: 'connect', params: { token } }));
  assert.ok('result' in (await reply), 'the connect command succeeds');
  return { socket, closed };
}

function publish(port: number, key: string): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}/api/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel: 'deploy-check', data: { ok: true } }),
  });
}

function token(secret: string): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('deploy-check').setExpirationTime('10m').sign(new TextEncoder().encode(secret));
}

/** SIGTERM: the WebSocket client gets 3001, the process exits 0, the drain finished. */
async function drainAndExit(container: Container, closed: Promise<number>): Promise<void> {
  container.child.kill('SIGTERM');
  assert.equal(await closed, 3001, 'the client is told "shutdown, reconnect"');
  assert.equal(await container.exited, 0, `exit code 0 after SIGTERM\n${container.stderr}`);
  const stopped = container.logs.find((l) => l['msg'] === 'stopped');
  assert.equal(stopped?.['drained'], true, 'every connection closed before the drain timeout');
}

let image: Image;

describe('the container image, run as a process', { skip: skipAll }, () => {
  before(() => {
    image = buildImage();
  });

  test('the sandbox: the image user can write the state volume and nothing else', async () => {
    const state = stateVolume(image);
    const probe = `const fs = require('node:fs'); for (const dir of process.argv.slice(1)) { try { fs.writeFileSync(dir + '/.probe', 'x'); fs.unlinkSync(dir + '/.probe'); console.log('writable ' + dir); } catch (e) { console.log(e.code + ' ' + dir); } }`;
    const places = [image.volume, '/', '/tmp', '/var/tmp', '/dev/shm', image.workdir, ...image.mounts.map((m) => m.target), REPO_ROOT];
    const result = await runSandboxed({
      argv: ['node', '-e', probe, ...places],
      env: { PATH, ...image.env },
      uid: image.uid,
      gid: image.gid,
      cwd: image.workdir,
      mounts: [...image.mounts, { target: image.volume, source: state, writable: true }],
    });
    assert.equal(result.code, 0, result.stderr);
    const writable = result.stdout.split('\n').filter((l) => l.startsWith('writable '));
    assert.deepEqual(writable, [`writable ${image.volume}`], result.stdout);
  });

  test('ENTRYPOINT + CMD as the image user: starts, HEALTHCHECK passes, keys land in the volume, SIGTERM drains and exits 0', async () => {
    const config = JSON.parse(deployFile('herald.json')) as { auth: { hmacSecretFile: string }; stateDir: string };
    assert.equal(config.stateDir, image.volume, "the image's config keeps its state in the VOLUME");
    const hmacSecret = randomBytes(32).toString('base64');
    const apiKey = randomBytes(32).toString('base64url');
    const state = stateVolume(image);
    const secrets = secretsDir({ [basename(config.auth.hmacSecretFile)]: hmacSecret }, image.uid, image.gid);
    const container = new Container({
      argv: [...image.entrypoint, ...image.cmd],
      env: { PATH, HOME: image.volume, ...image.env, HERALD_API_KEY: apiKey, ...EPHEMERAL },
      uid: image.uid,
      gid: image.gid,
      cwd: image.workdir,
      mounts: [...image.mounts, { target: dirname(config.auth.hmacSecretFile), source: secrets }, { target: image.volume, source: state, writable: true }],
    });
    const { port, adminPort } = await container.ports();
    assert.equal(processUid(container.child.pid!), image.uid, 'runs as the image user');
    assert.equal(container.logs.find((l) => l['msg'] === 'listening')?.['mode'], 'production');

    const health = await container.exec(image.healthcheck, { HERALD_ADMIN_PORT: String(adminPort) });
    assert.equal(health.code, 0, `HEALTHCHECK passes\n${health.stderr}`);
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
    assert.equal((await publish(port, apiKey)).status, 200, 'HERALD_API_KEY from the environment is accepted');

    // `docker exec CONTAINER herald keys create …`: the CLI finds the config through HERALD_CONFIG.
    const created = await container.exec([...image.entrypoint, 'keys', 'create', '--name', 'backend', '--scopes', 'publish']);
    assert.equal(created.code, 0, created.stderr);
    const storeKey = created.stdout.trim();
    // The volume holds the sqlite engine's state file (with its WAL), where the key is too, all the image user's, 0600;
    // and `notices/` (0700), where `herald apps` leaves its notices for the server (apps/apps-notice.ts).
    assert.equal(statSync(join(state, 'notices')).uid, image.uid, 'notices/ belongs to the image user');
    assert.equal(statSync(join(state, 'notices')).mode & 0o777, 0o700, 'notices/ is 0700');
    const stateFiles = readdirSync(state)
      .filter((f) => f !== 'notices')
      .sort();
    assert.deepEqual(stateFiles.filter((f) => !f.startsWith('herald.db-')), ['herald.db']);
    for (const file of stateFiles) {
      assert.match(file, /^herald\.db(-wal|-shm)?$/);
      assert.equal(statSync(join(state, file)).uid, image.uid, `${file} belongs to the image user`);
      assert.equal(statSync(join(state, file)).mode & 0o777, 0o600, `${file} is 0600`);
    }
    // A running server picks up the store within a second: ask until it answers.
    let status = 0;
    for (let attempt = 0; attempt < 50 && status !== 200; attempt++) {
      status = (await publish(port, storeKey)).status;
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(status, 200, 'a key from the state volume is accepted');

    const { closed } = await connectWebSocket(port, await token(hmacSecret));
    await drainAndExit(container, closed);
  });
});

// ------------------------------------------------------------- Kubernetes

describe('the Kubernetes Deployment, run as a process', { skip: skipAll }, () => {
  const objects = kubernetesObjects(['deployment.yaml', 'configmap.yaml', 'secret.example.yaml']).map((o) => o.object);
  const deployment = objects.find((o) => o.kind === 'Deployment')!;
  const configMap = objects.find((o) => o.kind === 'ConfigMap')!;
  const secret = objects.find((o) => o.kind === 'Secret')!;
  const pod = deployment['spec'].template.spec;
  const container = pod.containers[0];

  /** The container as the kubelet would run it, with the Secret's values given by `values`. */
  function podSpec(values: Record<string, string>): SandboxSpec {
    const env: Record<string, string> = { PATH, HOME: image.volume, ...image.env, ...EPHEMERAL };
    for (const entry of container.env as { name: string; value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }[]) {
      if (entry.name in EPHEMERAL) continue;
      if (entry.value !== undefined) env[entry.name] = entry.value;
      else {
        const ref = entry.valueFrom!.secretKeyRef;
        assert.equal(ref.name, secret.metadata.name, `${entry.name}: the Secret`);
        assert.ok(ref.key in secret['stringData'], `${entry.name}: key ${ref.key} is in the example Secret`);
        env[entry.name] = values[ref.key]!;
      }
    }
    const user = { ...pod.securityContext, ...container.securityContext } as { runAsUser: number; runAsGroup: number };
    const fsGroup = pod.securityContext.fsGroup as number;
    const mounts: SandboxMount[] = [...image.mounts];
    for (const mount of container.volumeMounts as { name: string; mountPath: string; readOnly?: boolean }[]) {
      const volume = (pod.volumes as Record<string, any>[]).find((v) => v['name'] === mount.name)!;
      let source: string;
      if (volume['configMap'] !== undefined) {
        assert.equal(volume['configMap'].name, configMap.metadata.name);
        source = tempDir('configmap');
        for (const [key, text] of Object.entries(configMap['data'] as Record<string, string>)) writeFileSync(join(source, key), text);
      } else if (volume['secret'] !== undefined) {
        assert.equal(volume['secret'].secretName, secret.metadata.name);
        const items = (volume['secret'].items as { key: string; path: string }[]).map((item) => [item.path, values[item.key]!]);
        source = secretsDir(Object.fromEntries(items), 0, fsGroup, volume['secret'].defaultMode as number);
      } else {
        assert.ok(volume['emptyDir'] !== undefined, `volume ${mount.name}: configMap, secret or emptyDir`);
        source = tempDir('emptydir');
        chownSync(source, 0, fsGroup);
        chmodSync(source, 0o2777);
      }
      mounts.push({ target: mount.mountPath, source, writable: mount.readOnly !== true });
    }
    return {
      argv: [...(container.command ?? image.entrypoint), ...(container.args ?? image.cmd)],
      env,
      uid: user.runAsUser,
      gid: user.runAsGroup,
      cwd: image.workdir,
      mounts,
    };
  }

  before(() => {
    image ??= buildImage();
  });

  test('the example Secret as it is: Herald refuses to start (exit 2), naming each secret', async () => {
    const result = await runSandboxed(podSpec(secret['stringData'] as Record<string, string>));
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /hmacSecretFile/);
    assert.match(result.stderr, /HERALD_API_KEY/);
  });

  test('with real secrets: probes answer on the ports they name, SIGTERM drains and exits 0', async (t) => {
    const noRedis = missingService(`Redis at ${REDIS_URL}`, await redisAvailable());
    if (noRedis) return t.skip(noRedis);
    const hmacSecret = randomBytes(32).toString('base64');
    const values: Record<string, string> = { hmac_secret: hmacSecret, api_key: randomBytes(32).toString('base64url'), redis_url: REDIS_URL };
    assert.deepEqual(Object.keys(values).sort(), Object.keys(secret['stringData'] as object).sort(), 'every key of the example Secret is given');
    const herald = new Container(podSpec(values));
    const { port, adminPort } = await herald.ports();
    assert.equal(processUid(herald.child.pid!), pod.securityContext.runAsUser);
    const config = JSON.parse((configMap['data'] as Record<string, string>)['herald.json']!) as { admin: { port: number }; listen: { port: number } };
    const actual = new Map([
      [config.admin.port, adminPort],
      [config.listen.port, port],
    ]);
    const named = new Map((container.ports as { name: string; containerPort: number }[]).map((p) => [p.name, p.containerPort]));
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const { path, port: portName } = container[probe].httpGet as { path: string; port: string };
      const containerPort = named.get(portName);
      assert.ok(containerPort !== undefined && actual.has(containerPort), `${probe}: port ${portName} is a listener of the config`);
      const response = await fetch(`http://127.0.0.1:${actual.get(containerPort)}${path}`);
      assert.equal(response.status, 200, `${probe} ${path}`);
    }
    const { closed } = await connectWebSocket(port, await token(hmacSecret));
    await drainAndExit(herald, closed);
  });
});
