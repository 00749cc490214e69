import v8 from 'node:v8';
import vm from 'node:vm';
import WebSocket from 'ws';
import { startHerald } from '../helpers/herald.ts';
import { RawWebSocket } from '../helpers/rt-raw.ts';
import { waitUntil } from '../helpers/rt-util.ts';
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const mode = process.argv[2] ?? 'normal';
const h = await startHerald({ limits: { outboundQueueBytes: 262144 }, channels: { namespaces: [{ name: 'chat', historySize: 10 }] } });
const port = Number(new URL(h.url).port);
const channel = 'chat:exp';
const pad = 'x'.repeat(30 * 1024);
let count = 0;
if (mode !== 'none') {
  const ws = new WebSocket(h.wsUrl);
  await new Promise((r) => ws.once('open', r));
  ws.on('message', (raw) => { const f = JSON.parse(raw.toString()); if (f.push === 'publication') count++; });
  ws.send(JSON.stringify({ id: 1, method: 'connect', params: { token: await h.token('n') } }));
  ws.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel } }));
  await new Promise((r) => setTimeout(r, 200));
}
if (mode === 'slow') {
  const slow = await RawWebSocket.connect(port);
  await slow.call('connect', { token: await h.token('s') });
  await slow.call('subscribe', { channel });
  slow.stopReading();
}
gc(); gc();
const base = process.memoryUsage();
let peak = base.rss; let peakHeap = base.heapUsed; let peakAB = base.arrayBuffers; let peakExt = base.external;
const t = setInterval(() => { const m = process.memoryUsage(); peak = Math.max(peak, m.rss); peakHeap = Math.max(peakHeap, m.heapUsed); peakAB = Math.max(peakAB, m.arrayBuffers); peakExt=Math.max(peakExt, m.external); }, 5);
const N = 2500;
let livePeak = 0; const baseLive = base.heapUsed + base.arrayBuffers;
for (let n = 1; n <= N; n++) { await h.api('publish', { channel, data: { n, pad } }); if (n % 50 === 0) { gc(); const m = process.memoryUsage(); livePeak = Math.max(livePeak, m.heapUsed + m.arrayBuffers - baseLive); peak = Math.max(peak, m.rss); } }
if (mode !== 'none') await waitUntil(() => count >= N, { timeoutMs: 60000 });
clearInterval(t);
const M = (x: number) => (x / 1048576).toFixed(1);
console.log(mode, 'live+', M(livePeak), 'rss+', M(peak - base.rss), 'heap+', M(peakHeap - base.heapUsed), 'ab+', M(peakAB - base.arrayBuffers), 'ext+', M(peakExt - base.external));
process.exit(0);
