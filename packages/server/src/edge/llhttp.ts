/**
 * llhttp through Node's own binding: `HTTPParser` of `node:_http_common`,
 * the parser node:http drives. The module is UNDOCUMENTED, outside
 * Node's semver and deprecated in Node's documentation (DEP0199,
 * documentation-only): `initialize`'s arguments and the callbacks' signatures
 * (`kOnHeaders`, `kOnHeadersComplete`, `kOnExecute`), `consume`/`unconsume`
 * and `getCurrentBuffer` are internal and may
 * change in any Node major. This module is the only place Herald touches
 * it: `loadLlhttp` checks at start that it loads and has what lean-http.ts
 * uses, and answers undefined otherwise (the caller then stays on
 * node:http). Checked on Node 24.21.
 */
import { createRequire } from 'node:module';

export interface LlhttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string; bytesParsed?: number });
  /** Parses the stream handle's reads in C++ (no stream `data` event), calling `kOnExecute` after each. */
  consume(handle: object): void;
  unconsume(): void;
  /** A copy of the read being parsed (only inside `kOnExecute`). */
  getCurrentBuffer(): Buffer;
  remove(): void;
  free(): void;
  [key: number]: unknown;
}

export interface Llhttp {
  readonly HTTPParser: {
    new (): LlhttpParser;
    readonly REQUEST: number;
    readonly kOnHeaders: number;
    readonly kOnHeadersComplete: number;
    readonly kOnBody: number;
    readonly kOnMessageComplete: number;
    readonly kOnExecute: number;
    readonly kLenientNone: number;
  };
  /** Method names by llhttp's method number. */
  readonly methods: readonly string[];
}

/** The binding, or undefined with the reason when this Node does not have what is used. */
export function loadLlhttp(): { binding: Llhttp } | { reason: string } {
  try {
    const binding = createRequire(import.meta.url)('node:_http_common') as Partial<Llhttp>;
    const parser = binding.HTTPParser;
    if (typeof parser !== 'function' || !Array.isArray(binding.methods)) return { reason: 'node:_http_common has no HTTPParser or methods' };
    for (const key of ['REQUEST', 'kOnHeaders', 'kOnHeadersComplete', 'kOnBody', 'kOnMessageComplete', 'kOnExecute', 'kLenientNone'] as const) {
      if (typeof parser[key] !== 'number') return { reason: `HTTPParser.${key} is missing` };
    }
    for (const method of ['initialize', 'execute', 'consume', 'unconsume', 'getCurrentBuffer', 'remove', 'free'] as const) {
      if (typeof (parser.prototype as Record<string, unknown>)[method] !== 'function') return { reason: `HTTPParser#${method} is missing` };
    }
    // One request through it: the callbacks' shapes are what lean-http.ts reads.
    const probe = new parser();
    let seen = '';
    probe.initialize(parser.REQUEST, {}, 1024, parser.kLenientNone);
    probe[parser.kOnHeadersComplete] = (major: number, minor: number, headers: string[], method: number, url: string) => {
      seen = `${major}.${minor} ${binding.methods![method]} ${url} ${headers.join(',')}`;
      return 2;
    };
    const done = probe.execute(Buffer.from('POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx'));
    probe.remove();
    probe.free();
    if (seen !== '1.1 POST /p Host,h,Content-Length,1' || done !== 48) return { reason: `HTTPParser answered ${JSON.stringify(seen)} after ${String(done)} bytes` };
    return { binding: binding as Llhttp };
  } catch (error) {
    return { reason: `node:_http_common does not load: ${String(error)}` };
  }
}
