/**
 * The lean HTTP layer's parser (lean-http.ts): llhttp, the parser of
 * node:http, compiled to WebAssembly as undici ships it
 * (`undici/lib/llhttp/llhttp_simd-wasm.js`, or `llhttp-wasm.js` where SIMD
 * does not compile; the parser of Node's own `fetch`). A public build of a
 * dependency, not Node's internal binding (`node:_http_common`, DEP0199).
 *
 * It parses request heads only, strict (no lenient flag), as node:http's
 * binding does for the layer's purpose: the URL and the header lines as
 * latin1 strings, the header bytes counted against `maxHeaderBytes` as
 * Node counts them (URL, names and values; at the limit
 * `HPE_HEADER_OVERFLOW`, node:http's 431), errors with node:http's `code`
 * (`HPE_…`) and `reason`. The head's callback answers llhttp "upgrade"
 * (2), so `llhttp_execute` stops right after the head: the caller reads the
 * body itself and `reset`s the parser for the next request.
 *
 * The module is compiled once per process, when `loadLlhttp` is first
 * called (only with a lean switch on); every parser is an `llhttp_alloc`
 * in the one instance's memory. Each `execute` copies its bytes into that
 * memory, at most CHUNK bytes per `llhttp_execute`.
 *
 * A connection's requests often have the same head, byte for byte (a
 * client's polls: the same URL, host, session and length). Each parser
 * keeps its last head that came whole in one `execute` from a reset (at
 * most REPEAT_BYTES): a request that starts with those exact bytes is that
 * head again (llhttp from its reset state reads the same bytes the same
 * way, limits and all), answered without parsing (no copy into the
 * module's memory, no string, no object). The head and its `headers` are
 * then shared by both requests: frozen.
 */
import { createRequire } from 'node:module';

/** A request head as llhttp parsed it. */
export interface RequestHead {
  readonly method: string;
  readonly url: string;
  /** Header names and values in order, as received (latin1). */
  readonly headers: readonly string[];
  readonly major: number;
  readonly minor: number;
  readonly upgrade: boolean;
  readonly keepAlive: boolean;
  /** Where the head ends in the bytes of the `execute` call that completed it. */
  readonly end: number;
}

/** A parse error as node:http's parser reports it. */
export type ParseError = Error & { code: string; reason: string; bytesParsed: number; rawPacket: Buffer };

/** One connection's parser: one request head at a time. */
export interface HeadParser {
  /**
   * Parses more of the current request's head (from where the last call
   * stopped): the head once complete (nothing after its end is parsed), a
   * parse error (the parser is then spent), or undefined when the head goes
   * on in later bytes. A head may be the object an earlier request of this
   * parser got (the same bytes): frozen, valid after `reset`.
   */
  execute(data: Buffer): RequestHead | ParseError | undefined;
  /** Ready for the next request (after a head). */
  reset(): void;
  /** Releases the parser's memory; it is not used again. */
  free(): void;
}

export interface Llhttp {
  parser(maxHeaderBytes: number): HeadParser;
}

interface LlhttpExports {
  readonly memory: WebAssembly.Memory;
  llhttp_alloc(type: number): number;
  llhttp_free(parser: number): void;
  llhttp_reset(parser: number): void;
  llhttp_execute(parser: number, at: number, length: number): number;
  llhttp_get_error_pos(parser: number): number;
  llhttp_get_error_reason(parser: number): number;
  llhttp_errno_name(errno: number): number;
  llhttp_method_name(method: number): number;
  llhttp_get_method(parser: number): number;
  llhttp_get_http_major(parser: number): number;
  llhttp_get_http_minor(parser: number): number;
  malloc(size: number): number;
}

/** llhttp's `HTTP_REQUEST`, `HPE_PAUSED_UPGRADE`, `HPE_USER`. */
const TYPE_REQUEST = 1;
const PAUSED_UPGRADE = 22;
const USER = 24;
/** The head callback's answer: no body, pause as for an upgrade (execute stops at the head's end). */
const STOP = 2;
/** Bytes copied into the module's memory per `llhttp_execute`. */
const CHUNK = 16384;
/** The longest head a parser keeps to recognize it again (its bytes, strings and objects stay with the connection). */
const REPEAT_BYTES = 2048;

class WasmHeadParser implements HeadParser {
  readonly ptr: number;
  readonly #wasm: Wasm;
  readonly #maxHeaderBytes: number;
  url = '';
  headers: string[] = [];
  /** Header bytes so far (URL, names, values), as Node's binding counts them. */
  #size = 0;
  overflow = false;
  /** Set by the head's callback: llhttp's flags for it. */
  complete = false;
  upgrade = false;
  keepAlive = false;
  /** Bytes were given to llhttp since the last reset. */
  #started = false;
  /** The last head parsed whole by one `execute` from a reset, and its bytes (see the module's comment). */
  #repeat: RequestHead | undefined;
  #repeatBytes: Buffer | undefined;

  constructor(wasm: Wasm, maxHeaderBytes: number) {
    this.#wasm = wasm;
    this.#maxHeaderBytes = maxHeaderBytes;
    this.ptr = wasm.exports.llhttp_alloc(TYPE_REQUEST);
  }

  /** Counts `length` header bytes: false past the limit (the error is HPE_HEADER_OVERFLOW). */
  track(length: number): boolean {
    this.#size += length;
    if (this.#size < this.#maxHeaderBytes) return true;
    this.overflow = true;
    return false;
  }

  execute(data: Buffer): RequestHead | ParseError | undefined {
    const fresh = !this.#started;
    if (fresh) {
      const bytes = this.#repeatBytes;
      if (bytes !== undefined && data.length >= bytes.length && data.compare(bytes, 0, bytes.length, 0, bytes.length) === 0) return this.#repeat;
      this.#started = true;
    }
    const result = this.#wasm.execute(this, data);
    if (fresh && result !== undefined && !(result instanceof Error) && result.end <= REPEAT_BYTES) {
      Object.freeze(result.headers);
      this.#repeat = Object.freeze(result);
      this.#repeatBytes = Buffer.from(data.subarray(0, result.end));
    }
    return result;
  }

  reset(): void {
    if (!this.#started) return;
    this.#started = false;
    this.#wasm.exports.llhttp_reset(this.ptr);
    this.url = '';
    this.headers = [];
    this.#size = 0;
    this.overflow = false;
    this.complete = false;
  }

  #freed = false;

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#repeat = undefined;
    this.#repeatBytes = undefined;
    this.#wasm.exports.llhttp_free(this.ptr);
  }
}

/** The one instance: its exports, the input area in its memory, and the parser whose `execute` runs (callbacks come synchronously). */
class Wasm {
  readonly exports: LlhttpExports;
  readonly #input: number;
  #view: Uint8Array;
  #current: WasmHeadParser | undefined;
  /** The bytes being parsed and where the chunk in the input area starts in them. */
  #data: Buffer = Buffer.alloc(0);
  #base = 0;
  readonly #methods: string[] = [];

  constructor(module: WebAssembly.Module) {
    const text = (at: number, length: number): string => {
      const start = this.#base + at - this.#input;
      return this.#data.toString('latin1', start, start + length);
    };
    // A name or value may come in pieces (a head split across reads): names at even places (parity 0), values at odd ones.
    const headerPiece =
      (parity: 0 | 1) =>
      (_p: number, at: number, length: number): number => {
        const parser = this.#current!;
        if (!parser.track(length)) return USER;
        const headers = parser.headers;
        if (headers.length % 2 === parity) headers.push(text(at, length));
        else headers[headers.length - 1] += text(at, length);
        return 0;
      };
    const instance = new WebAssembly.Instance(module, {
      env: {
        wasm_on_message_begin: () => 0,
        wasm_on_url: (_p: number, at: number, length: number): number => {
          const parser = this.#current!;
          if (!parser.track(length)) return USER;
          parser.url += text(at, length);
          return 0;
        },
        wasm_on_status: () => 0,
        wasm_on_header_field: headerPiece(0),
        wasm_on_header_value: headerPiece(1),
        wasm_on_headers_complete: (_p: number, _status: number, upgrade: number, keepAlive: number): number => {
          const parser = this.#current!;
          parser.complete = true;
          parser.upgrade = upgrade === 1;
          parser.keepAlive = keepAlive === 1;
          return STOP;
        },
        wasm_on_body: () => 0,
        wasm_on_message_complete: () => 0,
      },
    });
    this.exports = instance.exports as unknown as LlhttpExports;
    this.#input = this.exports.malloc(CHUNK);
    this.#view = new Uint8Array(this.exports.memory.buffer, this.#input, CHUNK);
  }

  /** The head that ended at `end`: the values without their trailing whitespace, as Node's binding hands them over (llhttp skips the leading). */
  #head(parser: WasmHeadParser, end: number): RequestHead {
    const llhttp = this.exports;
    const p = parser.ptr;
    const headers = parser.headers;
    for (let i = 1; i < headers.length; i += 2) {
      const value = headers[i]!;
      const last = value.charCodeAt(value.length - 1);
      if (last === 0x20 || last === 0x09) headers[i] = trimEnd(value);
    }
    return {
      method: this.#method(llhttp.llhttp_get_method(p)),
      url: parser.url,
      headers,
      major: llhttp.llhttp_get_http_major(p),
      minor: llhttp.llhttp_get_http_minor(p),
      upgrade: parser.upgrade,
      keepAlive: parser.keepAlive,
      end,
    };
  }

  #method(method: number): string {
    return (this.#methods[method] ??= this.#string(this.exports.llhttp_method_name(method)));
  }

  /** A NUL-terminated string in the module's memory. */
  #string(at: number): string {
    if (at === 0) return '';
    const memory = new Uint8Array(this.exports.memory.buffer);
    const end = memory.indexOf(0, at);
    return Buffer.from(memory.buffer, at, end - at).toString('latin1');
  }

  execute(parser: WasmHeadParser, data: Buffer): RequestHead | ParseError | undefined {
    const llhttp = this.exports;
    if (this.#view.buffer !== llhttp.memory.buffer) this.#view = new Uint8Array(llhttp.memory.buffer, this.#input, CHUNK);
    this.#current = parser;
    this.#data = data;
    try {
      for (let base = 0; base < data.length; base += CHUNK) {
        const length = Math.min(CHUNK, data.length - base);
        this.#view.set(base === 0 && length === data.length ? data : data.subarray(base, base + length));
        this.#base = base;
        const errno = llhttp.llhttp_execute(parser.ptr, this.#input, length);
        if (errno === 0) continue;
        const at = base + llhttp.llhttp_get_error_pos(parser.ptr) - this.#input;
        if (errno === PAUSED_UPGRADE && parser.complete) return this.#head(parser, at);
        const overflow = errno === USER && parser.overflow;
        const code = overflow ? 'HPE_HEADER_OVERFLOW' : this.#string(llhttp.llhttp_errno_name(errno));
        const reason = overflow ? 'Header overflow' : this.#string(llhttp.llhttp_get_error_reason(parser.ptr));
        return Object.assign(new Error(`Parse Error: ${reason}`), { code, reason, bytesParsed: at, rawPacket: data });
      }
      return undefined;
    } finally {
      this.#current = undefined;
      this.#data = EMPTY;
    }
  }
}

const EMPTY = Buffer.alloc(0);

/** Without trailing spaces and tabs (HTTP's OWS). */
function trimEnd(value: string): string {
  let end = value.length;
  while (end > 0 && (value.charCodeAt(end - 1) === 0x20 || value.charCodeAt(end - 1) === 0x09)) end--;
  return value.slice(0, end);
}

let loaded: { llhttp: Llhttp } | { reason: string } | undefined;

function compile(): WebAssembly.Module {
  const require = createRequire(import.meta.url);
  try {
    return new WebAssembly.Module(require('undici/lib/llhttp/llhttp_simd-wasm.js') as Uint8Array<ArrayBuffer>);
  } catch {
    // No WASM SIMD here (undici falls back the same way).
    return new WebAssembly.Module(require('undici/lib/llhttp/llhttp-wasm.js') as Uint8Array<ArrayBuffer>);
  }
}

/**
 * The parser factory, or undefined with the reason when the module does
 * not compile or does not parse a request as expected (checked once, on the
 * first call; the caller then stays on node:http).
 */
export function loadLlhttp(): { llhttp: Llhttp } | { reason: string } {
  if (loaded !== undefined) return loaded;
  try {
    const wasm = new Wasm(compile());
    const llhttp: Llhttp = { parser: (maxHeaderBytes) => new WasmHeadParser(wasm, maxHeaderBytes) };
    // One request through it, split in two reads, then a malformed one: what lean-http.ts reads.
    const probe = llhttp.parser(1024);
    const request = Buffer.from('POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nxGET');
    const first = probe.execute(request.subarray(0, 20));
    const head = probe.execute(request.subarray(20));
    probe.reset();
    const error = probe.execute(Buffer.from('POST /p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n'));
    probe.free();
    const seen = head === undefined || head instanceof Error ? String(head) : `${head.major}.${head.minor} ${head.method} ${head.url} ${head.headers.join(',')} ${head.end}`;
    if (first !== undefined || seen !== '1.1 POST /p Host,h,Content-Length,1 28') return (loaded = { reason: `llhttp (WASM) answered ${JSON.stringify(seen)}` });
    if (!(error instanceof Error) || error.code !== 'HPE_UNEXPECTED_CONTENT_LENGTH') return (loaded = { reason: `llhttp (WASM) took a duplicate Content-Length: ${String(error)}` });
    return (loaded = { llhttp });
  } catch (error) {
    return (loaded = { reason: `llhttp (WASM) does not load: ${String(error)}` });
  }
}
