/**
 * Two ways to drive llhttp from JavaScript, on the requests the lean HTTP
 * layer (packages/server/src/edge/lean-http.ts) answers: Node's own binding
 * (`HTTPParser` of `node:_http_common`, which the layer used until it moved
 * to WASM and which Node's documentation deprecates, DEP0199; only this
 * benchmark still loads it) against the layer's parser
 * (packages/server/src/edge/llhttp.ts: the llhttp WASM build that undici
 * ships, `undici/lib/llhttp/llhttp_simd-wasm.js`). One process, pinned to
 * one core, no sockets: the parse of a whole request from a buffer, its
 * URL and header lines handed to JavaScript, the body found.
 *
 *   node bench/llhttp-parsers.ts [--requests=300000] [--rounds=3] [--cpu=0]
 *
 * The binding is driven as the layer drove it (`initialize` per request,
 * the head in one callback, the body by `kOnBody`); the WASM parser as the
 * layer drives it now (the read copied into the module's memory,
 * `llhttp_execute` up to the head's end, a callback per URL, header name
 * and value, `reset`; the body is the bytes after the head), with two
 * heads in turn so that each is parsed, and with one head repeated (a
 * connection's polls: the parser's kept head, compared, not parsed). Prints
 * µs per request per round and the WASM's ratio to the binding.
 */
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { loadLlhttp } from '../packages/server/src/edge/llhttp.ts';
import { pinSelf } from './server-process.ts';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '300000' },
    rounds: { type: 'string', default: '3' },
    cpu: { type: 'string', default: '0' },
  },
  strict: true,
});
const requests = Number(values.requests);
const rounds = Number(values.rounds);
pinSelf(values.cpu);

const require = createRequire(import.meta.url);
const poll = Buffer.from(
  'POST /connection/poll HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n' +
    'Herald-Session: 4f6c2b9a0e1d4c7b8a6f5e4d3c2b1a09\r\nContent-Length: 10\r\n\r\n{"seq":17}',
);

/** What both parsers hand over, checked after each round: the same for both. */
const seen = { heads: 0, lines: 0, bodyBytes: 0, messages: 0 };

/** What of `node:_http_common` (undocumented, deprecated: DEP0199) the binding's round uses. */
interface Binding {
  readonly HTTPParser: {
    new (): { initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void; execute(data: Buffer): unknown; free(): void; [key: number]: unknown };
    readonly REQUEST: number;
    readonly kOnHeadersComplete: number;
    readonly kOnBody: number;
    readonly kOnMessageComplete: number;
    readonly kLenientNone: number;
  };
}

function bindingRound(): void {
  const { HTTPParser } = require('node:_http_common') as Binding;
  const parser = new HTTPParser();
  parser[HTTPParser.kOnHeadersComplete] = (_major: number, _minor: number, headers: string[], _method: number, url: string) => {
    seen.heads++;
    seen.lines += headers.length + (url === '' ? 0 : 1);
    return 0;
  };
  parser[HTTPParser.kOnBody] = (body: Buffer) => {
    seen.bodyBytes += body.length;
  };
  parser[HTTPParser.kOnMessageComplete] = () => {
    seen.messages++;
  };
  for (let i = 0; i < requests; i++) {
    parser.initialize(HTTPParser.REQUEST, {}, 16384, HTTPParser.kLenientNone);
    parser.execute(poll);
  }
  parser.free();
}

/** `poll` with another session (its last byte): a head the parser did not keep. */
const other = Buffer.from(poll);
other[poll.indexOf('\r\nContent-Length') - 1] = 0x38;

/**
 * The layer's parser (packages/server/src/edge/llhttp.ts), driven as the
 * layer drives it: the read, the head, `reset`; the body is the bytes after
 * the head. `repeated`: every request the same (a connection's polls: the
 * parser's kept head, not parsed again); else two heads in turn (each parsed).
 */
function heraldRound(repeated: boolean): void {
  const loaded = loadLlhttp();
  if (!('llhttp' in loaded)) throw new Error(loaded.reason);
  const parser = loaded.llhttp.parser(16384);
  for (let i = 0; i < requests; i++) {
    const head = parser.execute(repeated || i % 2 === 0 ? poll : other);
    if (head === undefined || head instanceof Error) throw new Error(`llhttp (WASM) answered ${String(head)} at request ${i}`);
    parser.reset();
    seen.heads++;
    seen.lines += head.headers.length + (head.url === '' ? 0 : 1);
    seen.bodyBytes += poll.length - head.end;
    seen.messages++;
  }
  parser.free();
}

function timed(round: () => void): number {
  const before = { ...seen };
  const start = process.hrtime.bigint();
  round();
  const us = Number(process.hrtime.bigint() - start) / 1000 / requests;
  if (seen.messages - before.messages !== requests || seen.bodyBytes - before.bodyBytes !== requests * 10) throw new Error('a parser missed requests or body bytes');
  if (seen.lines - before.lines !== requests * 9) throw new Error(`expected 9 lines (the URL, 4 headers' names and values) per request, got ${(seen.lines - before.lines) / requests}`);
  return us;
}

process.stdout.write(`llhttp from JavaScript: ${requests} requests of ${poll.length} bytes per round, node ${process.version}\n`);
const lines = ['| round | Node binding µs/request | llhttp.ts (WASM) µs/request | WASM × binding | llhttp.ts, a repeated head µs/request |', '|---:|---:|---:|---:|---:|'];
for (let round = 1; round <= rounds; round++) {
  const binding = timed(bindingRound);
  const wasm = timed(() => heraldRound(false));
  const repeated = timed(() => heraldRound(true));
  lines.push(`| ${round} | ${binding.toFixed(3)} | ${wasm.toFixed(3)} | ${(wasm / binding).toFixed(2)} | ${repeated.toFixed(3)} |`);
}
process.stdout.write(`${lines.join('\n')}\n`);
