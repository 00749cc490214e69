/**
 * Small calls to a server's listeners for tests that drive health, debug
 * actions and metrics: one request with an empty body, its status and its
 * body (JSON when it parses, else text), and a bounded poll.
 */
import http from 'node:http';
import { sleep } from './rt-util.ts';

export interface Answer {
  status: number;
  body: any;
}

/** One request to 127.0.0.1:port with an empty body; fails after 30 s without an answer. */
export function call(port: number, method: string, path: string, agent: http.Agent | false = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent, headers: { 'content-length': '0' } }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (data += chunk));
      res.on('end', () => {
        let body: unknown = data;
        try {
          body = JSON.parse(data);
        } catch {
          // text
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.setTimeout(30000, () => req.destroy(new Error(`no answer to ${method} ${path}`)));
    req.on('error', reject);
    req.end();
  });
}

/** Polls an async condition until it gives a value (bounded: a hang fails, speed is not asserted). */
export async function poll<T>(condition: () => Promise<T | undefined>, label: string, timeoutMs = 20000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await sleep(50);
  }
}
