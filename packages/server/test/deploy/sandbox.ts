/**
 * A container without a container engine: a process in a private mount
 * namespace (`unshare --mount`) where every filesystem is read-only, the
 * image's directories (/opt/herald, /etc/herald, /run/secrets, …) are bind
 * mounts of local directories at their image paths, and only the mounts
 * marked writable (the state volume) can be written. The process runs as the
 * image's unprivileged user (`setpriv`: its uid and gid, no supplementary
 * groups, no capabilities, no new privileges) with exactly the environment
 * given. `unshare` execs the shell, the shell execs `setpriv`, `setpriv` execs
 * the command: the child's pid is the command's pid, so a signal sent to it
 * reaches the command itself, as `docker stop` does.
 *
 * Needs root (mount namespaces), `unshare` and `setpriv` (util-linux).
 * Nothing outside the namespace changes: a missing mount point is made in an
 * overlay of its parent that lives in the namespace only.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

export interface SandboxMount {
  /** Path inside the sandbox (the image path). */
  readonly target: string;
  /** Local directory shown there. */
  readonly source: string;
  readonly writable?: boolean;
}

export interface SandboxSpec {
  /** The command; argv[0] is looked up in `env.PATH`. */
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly uid: number;
  readonly gid: number;
  /** Working directory inside the sandbox. */
  readonly cwd: string;
  readonly mounts: readonly SandboxMount[];
}

/** Why the sandbox cannot run here, or undefined when it can. */
export function sandboxUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'root (for a private mount namespace)';
  for (const tool of ['unshare', 'setpriv', 'mount']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} (util-linux)`;
    }
  }
  try {
    execFileSync('unshare', ['--mount', '--propagation', 'private', '--', 'true'], { stdio: 'ignore' });
  } catch {
    return 'mount namespaces (unshare --mount failed)';
  }
  return undefined;
}

function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The shell script `unshare` runs as root inside the new mount namespace. */
function script(spec: SandboxSpec, scratch: string): string {
  const lines = [
    'set -eu',
    // Scratch space for overlays: a tmpfs private to the namespace.
    `scratch=${quote(scratch)}`,
    'mount -t tmpfs -o mode=0700 herald-sandbox "$scratch"',
    // Every mount read-only, except the kernel's pseudo filesystems and the scratch tmpfs.
    `awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r point; do`,
    '  case "$point" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/pts|"$scratch") continue ;; esac',
    '  mount -o remount,bind,ro "$point" 2>/dev/null || true',
    'done',
    'n=0',
    // A missing mount point: overlay its nearest existing ancestor (in this namespace only) and make it there.
    'mountpoint_for() {',
    '  if [ ! -e "$1" ]; then',
    '    parent=$(dirname "$1"); while [ ! -e "$parent" ]; do parent=$(dirname "$parent"); done',
    '    n=$((n + 1)); mkdir -p "$scratch/$n/upper" "$scratch/$n/work"',
    '    mount -t overlay "herald-sandbox-$n" -o "lowerdir=$parent,upperdir=$scratch/$n/upper,workdir=$scratch/$n/work" "$parent"',
    '    mkdir -p "$1"',
    '    mount -o remount,ro "$parent"',
    '  fi',
    '}',
  ];
  for (const m of spec.mounts) {
    lines.push(`mountpoint_for ${quote(m.target)}`, `mount --bind ${quote(m.source)} ${quote(m.target)}`);
    lines.push(`mount -o remount,bind,${m.writable === true ? 'rw' : 'ro'} ${quote(m.target)}`);
  }
  lines.push(`cd ${quote(spec.cwd)}`);
  const env = Object.entries(spec.env).map(([k, v]) => quote(`${k}=${v}`));
  lines.push(
    `exec setpriv --reuid=${spec.uid} --regid=${spec.gid} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- ` +
      `env -i ${env.join(' ')} ${spec.argv.map(quote).join(' ')}`,
  );
  return lines.join('\n');
}

const started: ChildProcess[] = [];
const scratches: string[] = [];
after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of scratches) rmSync(dir, { recursive: true, force: true });
});

/** Starts `spec` in a sandbox; stdout and stderr are pipes. Killed (SIGKILL) when the test file ends, if still running. */
export function spawnSandboxed(spec: SandboxSpec): ChildProcess {
  const scratch = mkdtempSync(join(tmpdir(), 'herald-sandbox-'));
  scratches.push(scratch);
  const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script(spec, scratch)], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' } });
  started.push(child);
  return child;
}

/** Runs `spec` to its end: exit code, stdout, stderr. */
export function runSandboxed(spec: SandboxSpec): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnSandboxed(spec);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}
