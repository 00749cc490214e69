/**
 * Two ways to drive llhttp from JavaScript, on the requests the lean HTTP
 * layer (packages/server/src/edge/lean-http.ts) answers: Node's own binding
 * (`HTTPParser` of `node:_http_common`, which the layer uses today and
 * which Node's documentation deprecates, DEP0199) against the llhttp WASM
 * build that undici ships (`undici/lib/llhttp/llhttp_simd-wasm.js`, the
 * parser of Node's `fetch`; undici is already a dependency). One process,
 * pinned to one core, no sockets: the parse of a whole request from a
 * buffer, its URL, header lines and body handed to JavaScript.
 *
 *   node bench/llhttp-parsers.ts [--requests=300000] [--rounds=3] [--cpu=0]
 *
 * The binding is driven as the layer drives it (`initialize` per request,
 * the head in one callback); the WASM parser as undici drives it (the read
 * copied into the module's memory, `llhttp_execute`, a callback per URL,
 * header field and value and body, keep-alive without a reset). Prints µs
 * per request per round and the WASM's ratio to the binding.
 */
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import type { Llhttp } from '../packages/server/src/edge/llhttp.ts';
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

function bindingRound(): void {
  const { HTTPParser } = require('node:_http_common') as Llhttp;
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

interface LlhttpWasm {
  readonly memory: WebAssembly.Memory;
  llhttp_alloc(type: number): number;
  llhttp_execute(parser: number, data: number, length: number): number;
  malloc(size: number): number;
}

/** REQUEST in llhttp's `llhttp_type_t`. */
const LLHTTP_REQUEST = 1;

function wasmRound(): void {
  const module = new WebAssembly.Module(new Uint8Array(require('undici/lib/llhttp/llhttp_simd-wasm.js') as Buffer));
  const wasm: { memory?: WebAssembly.Memory } = {};
  let lines: string[] = [];
  const text = (at: number, length: number): string => Buffer.from(wasm.memory!.buffer, at, length).toString('latin1');
  const instance = new WebAssembly.Instance(module, {
    env: {
      wasm_on_url: (_p: number, at: number, length: number) => (lines.push(text(at, length)), 0),
      wasm_on_status: () => 0,
      wasm_on_message_begin: () => ((lines = []), 0),
      wasm_on_header_field: (_p: number, at: number, length: number) => (lines.push(text(at, length)), 0),
      wasm_on_header_value: (_p: number, at: number, length: number) => (lines.push(text(at, length)), 0),
      wasm_on_headers_complete: () => {
        seen.heads++;
        seen.lines += lines.length;
        return 0;
      },
      wasm_on_body: (_p: number, _at: number, length: number) => ((seen.bodyBytes += length), 0),
      wasm_on_message_complete: () => (seen.messages++, 0),
    },
  });
  const llhttp = instance.exports as unknown as LlhttpWasm;
  wasm.memory = llhttp.memory;
  const parser = llhttp.llhttp_alloc(LLHTTP_REQUEST);
  const at = llhttp.malloc(4096);
  for (let i = 0; i < requests; i++) {
    new Uint8Array(llhttp.memory.buffer, at, poll.length).set(poll);
    const error = llhttp.llhttp_execute(parser, at, poll.length);
    if (error !== 0) throw new Error(`llhttp (WASM) error ${error} at request ${i}`);
  }
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
const lines = ['| round | Node binding µs/request | undici WASM µs/request | WASM × binding |', '|---:|---:|---:|---:|'];
for (let round = 1; round <= rounds; round++) {
  const binding = timed(bindingRound);
  const wasm = timed(wasmRound);
  lines.push(`| ${round} | ${binding.toFixed(3)} | ${wasm.toFixed(3)} | ${(wasm / binding).toFixed(2)} |`);
}
process.stdout.write(`${lines.join('\n')}\n`);
