/**
 * The signing secret of each configured proxy hook, from the file or the
 * environment variable its config names, and the JavaScript hook's file. Called by the composition root
 * (the only place, with the CLI, that reads the environment).
 */
import { readFileSync } from 'node:fs';
import { MIN_SECRET_CHARS, type HookTargetConfig, type HooksConfig } from '../config/schema.ts';
import { isLoopbackHost } from '../console/console-config.ts';

/** Every hook target in the config, with the JSON pointer of its section. */
export function hookTargets(config: HooksConfig): [string, HookTargetConfig][] {
  const targets: [string, HookTargetConfig][] = [];
  for (const event of ['connect', 'refresh', 'subscribe', 'publish', 'rpc'] as const) {
    const target = config[event];
    if (target !== undefined) targets.push([`/hooks/${event}`, target]);
  }
  config.namespaces.forEach((ns, i) => {
    for (const event of ['subscribe', 'publish', 'rpc'] as const) {
      const target = ns[event];
      if (target !== undefined && target !== false) targets.push([`/hooks/namespaces/${i}/${event}`, target]);
    }
  });
  return targets;
}

/** Reads each target's secret; what is missing or too short is added to `problems` (never the secret itself). */
export function readHookSecrets(config: HooksConfig, env: Readonly<Record<string, string | undefined>>, problems: string[]): Map<HookTargetConfig, string> {
  const secrets = new Map<HookTargetConfig, string>();
  for (const [where, target] of hookTargets(config)) {
    if ((target.secretFile === undefined) === (target.secretEnv === undefined)) {
      problems.push(`${where}: set exactly one of secretFile and secretEnv (the HMAC-SHA256 signing secret, at least ${MIN_SECRET_CHARS} characters)`);
      continue;
    }
    let secret: string | undefined;
    if (target.secretFile !== undefined) {
      try {
        secret = readFileSync(target.secretFile, 'utf8').trim();
      } catch (error) {
        problems.push(`${where}/secretFile: cannot read ${target.secretFile} (${(error as NodeJS.ErrnoException).code ?? 'error'}); check the path and the file's owner and mode`);
        continue;
      }
    } else {
      secret = env[target.secretEnv!]?.trim();
      if (secret === undefined || secret === '') {
        problems.push(`${where}/secretEnv: the environment variable ${target.secretEnv} is not set`);
        continue;
      }
    }
    if (secret.length < MIN_SECRET_CHARS) {
      problems.push(`${where}: the signing secret is shorter than ${MIN_SECRET_CHARS} characters (generate one: \`openssl rand -base64 32\`)`);
      continue;
    }
    secrets.set(target, secret);
  }
  return secrets;
}

/**
 * Production mode: a plain `http://` target on a host that is not loopback
 * is refused (a problem naming the target) unless `hooks.allowPlainHttp`.
 */
export function checkPlainHttpHooks(config: HooksConfig, problems: string[]): void {
  if (config.allowPlainHttp) return;
  for (const [where, target] of hookTargets(config)) {
    const url = URL.canParse(target.url) ? new URL(target.url) : undefined;
    if (url === undefined || url.protocol !== 'http:' || isLoopbackHost(url.hostname)) continue;
    problems.push(
      `${where}/url: production mode refuses a plain http:// hook URL to ${url.hostname}, which is not loopback: the call and its answer would cross the network in clear text; use https://, or a loopback address, or set hooks.allowPlainHttp on a network you trust`,
    );
  }
}

/** Largest JavaScript hook file read. */
const MAX_HOOK_FILE_BYTES = 4 * 1024 * 1024;

/** The JavaScript hook file's source, read once at start; undefined (and a problem) when it cannot be, or without JavaScript hooks. */
export function readJavascriptHook(config: HooksConfig, problems: string[]): string | undefined {
  const file = config.javascript?.file;
  if (file === undefined) return undefined;
  try {
    const source = readFileSync(file, 'utf8');
    if (Buffer.byteLength(source) > MAX_HOOK_FILE_BYTES) {
      problems.push(`/hooks/javascript/file: ${file} is larger than ${MAX_HOOK_FILE_BYTES} bytes`);
      return undefined;
    }
    return source;
  } catch (error) {
    problems.push(`/hooks/javascript/file: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'}); check the path and the file's owner and mode`);
    return undefined;
  }
}
