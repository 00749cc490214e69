/**
 * Nginx with the Nchan module, the reference server of the benchmarks
 * (`apt-get install nginx libnginx-mod-nchan`). One nginx master with one
 * worker process, on an ephemeral loopback port, from a configuration
 * written to a temporary directory; `stop()` ends it and removes the
 * directory. CPU and memory of the server are the worker's
 * (`workerPid`, read from `/proc`).
 *
 * Locations, for a channel id `<id>` (Nchan ids have no `:`; callers map
 * `bench:x` to `bench_x`):
 * - `POST /pub/<id>`: publish the request body (nchan_publisher); the
 *   answer is the channel info;
 * - `GET /sub/<id>`: subscribe over WebSocket, EventSource or long polling
 *   (nchan_subscriber; long polling as `GET` with `If-Modified-Since` and
 *   `If-None-Match` from the previous answer's `Last-Modified` and `Etag`);
 *   one message buffered per channel, as a latest-value cache, unless
 *   `messageBufferLength` says otherwise.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const NGINX_BINARY = '/usr/sbin/nginx';
export const NCHAN_MODULE = '/usr/lib/nginx/modules/ngx_nchan_module.so';

export interface NchanOptions {
  /** CPU list for `taskset -c` (e.g. `"0"`); unset: no pinning. */
  readonly cpus?: string;
  /** Messages kept per channel (nchan_message_buffer_length); default 300, like Herald's bench history. */
  readonly messageBufferLength?: number;
  /** Nchan shared memory (nchan_shared_memory_size); default 512m. */
  readonly sharedMemory?: string;
}

export interface NchanServer {
  readonly port: number;
  readonly masterPid: number;
  readonly workerPid: number;
  stop(): Promise<void>;
}

/** Why Nchan cannot run here, or undefined when it can. */
export function nchanUnavailable(): string | undefined {
  if (!existsSync(NGINX_BINARY)) return `${NGINX_BINARY} is missing (apt-get install nginx libnginx-mod-nchan)`;
  if (!existsSync(NCHAN_MODULE)) return `${NCHAN_MODULE} is missing (apt-get install libnginx-mod-nchan)`;
  return undefined;
}

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function nginxConfig(dir: string, port: number, options: NchanOptions): string {
  return `load_module ${NCHAN_MODULE};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 19000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  nchan_shared_memory_size ${options.sharedMemory ?? '512m'};
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location ~ ^/pub/(.+)$ {
      nchan_publisher;
      nchan_channel_id $1;
      nchan_message_buffer_length ${options.messageBufferLength ?? 300};
      nchan_message_timeout 1h;
    }
    location ~ ^/sub/(.+)$ {
      nchan_subscriber;
      nchan_channel_id $1;
      nchan_subscriber_first_message newest;
      nchan_subscriber_timeout 0;
      nchan_longpoll_multipart_response off;
    }
  }
}
`;
}

function childPids(pid: number): number[] {
  const path = `/proc/${String(pid)}/task/${String(pid)}/children`;
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** Starts nginx + Nchan; rejects with the error log when it does not come up in 10 s. */
export async function startNchan(options: NchanOptions = {}): Promise<NchanServer> {
  const unavailable = nchanUnavailable();
  if (unavailable !== undefined) throw new Error(`Nchan unavailable: ${unavailable}`);
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-nchan-'));
  const port = await freePort();
  const configPath = join(dir, 'nginx.conf');
  writeFileSync(configPath, nginxConfig(dir, port, options));
  const test = spawnSync(NGINX_BINARY, ['-t', '-q', '-p', dir, '-c', configPath], { encoding: 'utf8' });
  if (test.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`nginx -t failed: ${test.stderr}`);
  }
  const args = ['-p', dir, '-c', configPath];
  const child: ChildProcess =
    options.cpus === undefined
      ? spawn(NGINX_BINARY, args, { stdio: 'ignore' })
      : spawn('taskset', ['-c', options.cpus, NGINX_BINARY, ...args], { stdio: 'ignore' });
  const masterPid = child.pid;
  if (masterPid === undefined) throw new Error('nginx did not start');
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const deadline = Date.now() + 10_000;
  let workerPid: number | undefined;
  while (Date.now() < deadline && !exited) {
    workerPid = childPids(masterPid)[0];
    if (workerPid !== undefined && (await accepts(port))) break;
    await sleep(50);
  }
  if (workerPid === undefined || exited) {
    const log = existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : '';
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`nginx did not come up: ${log}`);
  }
  return {
    port,
    masterPid,
    workerPid,
    async stop() {
      if (!exited) {
        const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGQUIT');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await done;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function accepts(port: number): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${String(port)}/pub/probe`, { method: 'POST', body: 'x' });
    await response.arrayBuffer();
    return response.status < 500;
  } catch {
    return false;
  }
}

/** Nchan channel ids have no `:`. */
export function nchanChannelId(channel: string): string {
  return channel.replaceAll(':', '_');
}
