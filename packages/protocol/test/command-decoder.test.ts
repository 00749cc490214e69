/**
 * The command decoder faces untrusted text. It must never throw, never let a
 * prototype-poisoning key through, and map every input to a command or to
 * one of its documented failures (docs/protocol.md, "Commands").
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeCommand, parseJsonSafely, utf8Length, validateCommand, type DecodeResult } from '../src/command-decoder.ts';

const MAX = 65536;
const MAX_ID = 2 ** 31 - 1;
const encoder = new TextEncoder();
const bytes = (text: string) => encoder.encode(text).length;

const methods = ['connect', 'subscribe', 'unsubscribe', 'publish', 'history', 'presence', 'presence_stats', 'ping', 'pong'] as const;
const documentedErrors = new Set(['too_large', 'malformed', 'method_not_found', 'bad_params', 'too_deep']);

function decode(value: unknown, maxBytes = MAX): DecodeResult {
  return decodeCommand(typeof value === 'string' ? value : JSON.stringify(value), maxBytes);
}

function assertOk(result: DecodeResult, message?: string): void {
  assert.ok(result.ok, `${message ?? 'expected ok'}: got ${JSON.stringify(result)}`);
}

function assertError(result: DecodeResult, error: string, id?: number): void {
  assert.equal(result.ok, false, `expected ${error}, got ${JSON.stringify(result)}`);
  assert.equal(result.ok === false && result.error, error, `expected ${error}, got ${JSON.stringify(result)}`);
  if (id !== undefined) assert.equal('id' in result ? result.id : undefined, id, 'the failure carries the command id');
}

/** Checks the invariants every decode result must satisfy. */
function assertWellFormedResult(result: DecodeResult): void {
  assert.equal(typeof result, 'object');
  if (result.ok) {
    const command = result.command as { id?: unknown; method: unknown };
    assert.ok((methods as readonly unknown[]).includes(command.method), `ok command has a known method: ${String(command.method)}`);
    if (command.id === undefined) assert.equal(command.method, 'pong', 'only pong may omit the id');
    else assert.ok(Number.isInteger(command.id) && (command.id as number) >= 1 && (command.id as number) <= MAX_ID, 'ok command has a valid id');
    return;
  }
  assert.ok(documentedErrors.has(result.error), `undocumented error ${String(result.error)}`);
  if (result.error === 'method_not_found' || result.error === 'bad_params' || result.error === 'too_deep') {
    assert.ok(Number.isInteger(result.id) && result.id >= 1 && result.id <= MAX_ID, `answerable failure carries a valid id: ${result.id}`);
  } else {
    assert.ok(!('id' in result), 'unanswerable failures carry no id');
  }
}

const prototypeKeys = ['polluted', 'isAdmin', 'x', 'mode'];
function assertNotPolluted(): void {
  for (const key of prototypeKeys) {
    assert.equal((Object.prototype as Record<string, unknown>)[key], undefined, `Object.prototype.${key} was polluted`);
    assert.equal(({} as Record<string, unknown>)[key], undefined, `{}.${key} was polluted`);
  }
}
after(assertNotPolluted);

describe('size limit (UTF-8 bytes, checked before parsing)', () => {
  /** A valid publish command padded with `unit` to exactly `target` bytes; returns null when `unit` cannot hit it. */
  function commandOfBytes(target: number, unit: string): string {
    const head = '{"id":1,"method":"publish","params":{"channel":"c","data":"';
    const tail = '"}}';
    const room = target - bytes(head) - bytes(tail);
    const unitBytes = bytes(unit);
    const pad = 'a'.repeat(room % unitBytes);
    const text = head + pad + unit.repeat(Math.floor(room / unitBytes)) + tail;
    assert.equal(bytes(text), target);
    return text;
  }

  for (const [name, unit] of [
    ['ASCII', 'a'],
    ['2-byte é', 'é'],
    ['3-byte €', '€'],
    ['4-byte emoji (surrogate pair)', '😀'],
  ] as const) {
    it(`${name}: exactly maxBytes is accepted, one byte more is too_large`, () => {
      for (const max of [256, 1000, MAX]) {
        const exact = commandOfBytes(max, unit);
        assertOk(decodeCommand(exact, max), `${bytes(exact)} bytes with max ${max}`);
        const over = commandOfBytes(max + 1, unit);
        assertError(decodeCommand(over, max), 'too_large');
      }
    });
  }

  it('multi-byte text counts bytes, not UTF-16 units', () => {
    // 100 UTF-16 units but 300 bytes: over a 256-byte limit.
    const text = JSON.stringify({ id: 1, method: 'publish', params: { channel: 'c', data: '€'.repeat(80) } });
    assert.ok(text.length <= 256 && bytes(text) > 256);
    assertError(decodeCommand(text, 256), 'too_large');
  });

  it('a multi-byte character straddling the limit does not fit', () => {
    // max − 1 bytes of ASCII plus one 2-byte character = max + 1 bytes.
    const max = 300;
    const head = '{"id":1,"method":"publish","params":{"channel":"c","data":"';
    const tail = '"}}';
    const text = head + 'a'.repeat(max - 1 - bytes(head) - bytes(tail)) + 'é' + tail;
    assert.equal(bytes(text), max + 1);
    assertError(decodeCommand(text, max), 'too_large');
  });

  it('oversize garbage is too_large, not malformed (nothing is parsed)', () => {
    assertError(decodeCommand('x'.repeat(MAX + 1), MAX), 'too_large');
    assertError(decodeCommand('{'.repeat(MAX + 1), MAX), 'too_large');
  });

  it('lone surrogates count as 3 bytes, like their UTF-8 replacement', () => {
    for (const text of ['\ud800', '\udc00', 'a\ud800b', '\udbff\udbff', '\udc00\ud800', '😀', '\ud83d']) {
      assert.equal(utf8Length(text), bytes(text), JSON.stringify(text));
    }
  });

  it('utf8Length equals the UTF-8 encoder on arbitrary UTF-16 strings', () => {
    const anyUnits = fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 64 }).map((units) => String.fromCharCode(...units));
    fc.assert(
      fc.property(fc.oneof(anyUnits, fc.string({ unit: 'binary' })), (text) => utf8Length(text) === bytes(text)),
      { numRuns: 2000 },
    );
  });
});

describe('malformed JSON and non-object JSON', () => {
  const cases: [string, string][] = [
    ['empty string', ''],
    ['whitespace', '   \n'],
    ['truncated object', '{"id":1,"method":"ping"'],
    ['trailing comma', '{"id":1,"method":"ping",}'],
    ['single quotes', "{'id':1,'method':'ping'}"],
    ['unquoted keys', '{id:1,method:"ping"}'],
    ['two objects', '{"id":1,"method":"ping"}{"id":2,"method":"ping"}'],
    ['trailing garbage', '{"id":1,"method":"ping"} x'],
    ['NaN', '{"id":NaN,"method":"ping"}'],
    ['comment', '{"id":1,"method":"ping"} // hi'],
    ['NUL byte', '\u0000'],
    ['array', '[{"id":1,"method":"ping"}]'],
    ['empty array', '[]'],
    ['number', '1'],
    ['null', 'null'],
    ['true', 'true'],
    ['string', '"ping"'],
    ['JSON-encoded object string', JSON.stringify(JSON.stringify({ id: 1, method: 'ping' }))],
  ];
  for (const [name, text] of cases) {
    it(`${name} is malformed`, () => assertError(decodeCommand(text, MAX), 'malformed'));
  }

  it('deeply nested JSON does not throw', () => {
    const depth = 30000;
    for (const text of ['['.repeat(depth) + ']'.repeat(depth), '{"id":1,"method":"publish","params":{"channel":"c","data":' + '['.repeat(depth) + ']'.repeat(depth) + '}}']) {
      const result = decodeCommand(text, 1 << 20);
      assertWellFormedResult(result);
    }
    assertError(decodeCommand('['.repeat(depth) + ']'.repeat(depth), 1 << 20), 'malformed');
  });

  it('nesting deeper than maxDepth is too_deep with the id to answer, or malformed without one', () => {
    const command = (depth: number) => '{"id":7,"method":"publish","params":{"channel":"c","data":' + '['.repeat(depth) + ']'.repeat(depth) + '}}';
    // the envelope takes 2 levels
    assertOk(decodeCommand(command(62), 1 << 20, 64));
    assertError(decodeCommand(command(63), 1 << 20, 64), 'too_deep', 7);
    assertError(decodeCommand(command(30000), 1 << 20, 64), 'too_deep', 7);
    assertOk(decodeCommand(command(98), 1 << 20, 100));
    // brackets in strings do not count
    assertOk(decodeCommand('{"id":7,"method":"publish","params":{"channel":"c","data":"' + '[{\\"'.repeat(100) + '"}}', 1 << 20, 64));
    assertError(decodeCommand('{"method":"publish","params":{"channel":"c","data":' + '['.repeat(100) + ']'.repeat(100) + '}}', 1 << 20, 64), 'malformed');
    assertError(decodeCommand('{"id":"7","method":"ping","x":' + '['.repeat(100) + ']'.repeat(100) + '}', 1 << 20, 64), 'malformed');
    assertError(decodeCommand('{"id":7,"method":"ping","x":' + '['.repeat(100) + '}', 1 << 20, 64), 'malformed');
  });
});

describe('ids', () => {
  for (const id of [0, -1, MAX_ID + 1, 2 ** 53, 1.5, 1e300, '1', true, null, [1], { n: 1 }]) {
    it(`id ${JSON.stringify(id)} is malformed (no answerable id)`, () => {
      assertError(decode({ id, method: 'ping' }), 'malformed');
      assertError(decode({ id, method: 'nope' }), 'malformed');
      assertError(decode({ id, method: 'subscribe', params: { channel: 1 } }), 'malformed');
    });
  }

  for (const id of [1, 2, 1000, MAX_ID]) {
    it(`id ${id} is accepted`, () => {
      const result = decode({ id, method: 'ping' });
      assertOk(result);
      assert.equal(result.ok && result.command.id, id);
    });
  }

  it('1.0 and 1e0 are the integer 1', () => {
    for (const text of ['{"id":1.0,"method":"ping"}', '{"id":1e0,"method":"ping"}']) assertOk(decodeCommand(text, MAX));
  });

  it('every method but pong requires an id', () => {
    for (const method of methods) {
      const params = validParams[method][0];
      const result = decode(params === undefined ? { method } : { method, params });
      if (method === 'pong') assertOk(result);
      else assertError(result, 'malformed');
    }
  });
});

describe('methods', () => {
  it('an unknown method with an id is method_not_found (reply 104)', () => {
    for (const method of ['nope', 'PING', 'Subscribe', 'publish ', '', 'toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf']) {
      assertError(decode({ id: 7, method }), 'method_not_found', 7);
      assertError(decode({ id: 7, method, params: {} }), 'method_not_found', 7);
    }
  });

  it('an unknown method without an id is malformed', () => {
    for (const method of ['nope', 'toString', '__proto__']) assertError(decode({ method }), 'malformed');
  });

  it('a long unknown method with an id is still method_not_found (docs: "An unknown method gets reply error 104")', () => {
    assertError(decode({ id: 7, method: 'x'.repeat(33) }), 'method_not_found', 7);
    assertError(decode({ id: 7, method: 'subscribe'.repeat(100) }), 'method_not_found', 7);
  });

  it('a command without a method but with a valid id is an answerable error, not a protocol violation', () => {
    const result = decode({ id: 7 });
    assert.equal(result.ok, false);
    assert.ok(result.ok === false && (result.error === 'bad_params' || result.error === 'method_not_found'), JSON.stringify(result));
    assert.equal('id' in result && result.id, 7);
  });

  it('a method that is not a string, with a valid id, is bad_params', () => {
    for (const method of [1, null, true, ['ping'], { name: 'ping' }]) assertError(decode({ id: 7, method }), 'bad_params', 7);
  });
});

/** For each method, params that must be accepted (`undefined` = no params key). */
const validParams: Record<(typeof methods)[number], unknown[]> = {
  connect: [undefined, {}, { token: 'eyJhbGciOiJIUzI1NiJ9.e30.x' }, { name: 'web' }, { token: 't', name: 'n'.repeat(64) }],
  subscribe: [
    { channel: 'news' },
    { channel: 'chat:room-1', recover: true, epoch: 'q3Yk2w8T', offset: 41 },
    { channel: 'c', recover: false },
    { channel: 'c', offset: 0 },
    { channel: 'c', offset: Number.MAX_SAFE_INTEGER, epoch: 'e'.repeat(32) },
  ],
  unsubscribe: [{ channel: 'news' }],
  publish: [
    { channel: 'news', data: { text: 'hi' } },
    { channel: 'news', data: null },
    { channel: 'news', data: 0 },
    { channel: 'news', data: 'text' },
    { channel: 'news', data: [1, 'two', { three: 3 }] },
    { channel: 'news', data: { constructor: 'not a prototype', prototype: 1, proto: 2 } },
    { channel: 'news', data: { nested: { keys: { are: { free: true } } } } },
  ],
  history: [
    { channel: 'news' },
    { channel: 'news', limit: 0 },
    { channel: 'news', limit: 10, reverse: true },
    { channel: 'news', limit: 10, since: { epoch: 'q3Yk2w8T', offset: 40 } },
  ],
  presence: [{ channel: 'chat:room-1' }],
  presence_stats: [{ channel: 'chat:room-1' }],
  ping: [undefined, {}],
  pong: [undefined, {}],
};

describe('valid commands of every method', () => {
  for (const method of methods) {
    it(`${method} is accepted and returned unchanged`, () => {
      for (const params of validParams[method]) {
        const command = params === undefined ? { id: 3, method } : { id: 3, method, params };
        const result = decode(command);
        assertOk(result, JSON.stringify(command));
        assert.deepEqual(result.ok && result.command, command);
      }
    });
  }

  it('pong without an id and without params is accepted', () => {
    const result = decodeCommand('{"method":"pong"}', MAX);
    assertOk(result);
    assert.deepEqual(result.ok && result.command, { method: 'pong' });
  });

  it('key order and whitespace do not matter', () => {
    assertOk(decodeCommand(' {\n "params" : {"channel":"news"},\t"method":"subscribe", "id":9 } ', MAX));
  });
});

describe('wrong types for every field', () => {
  const wrongValues: unknown[] = [null, true, 1, -1, 1.5, 'x', '', [], ['x'], {}, { a: 1 }];
  /** Per method and field: which of `wrongValues` are actually valid for that field. */
  const fields: [string, string, (v: unknown) => boolean][] = [
    ['connect', 'token', (v) => typeof v === 'string'],
    ['connect', 'name', (v) => typeof v === 'string'],
    ['subscribe', 'channel', (v) => typeof v === 'string' && v.length > 0],
    ['subscribe', 'recover', (v) => typeof v === 'boolean'],
    ['subscribe', 'epoch', (v) => typeof v === 'string' && v.length > 0],
    ['subscribe', 'offset', (v) => Number.isInteger(v) && (v as number) >= 0],
    ['unsubscribe', 'channel', (v) => typeof v === 'string' && v.length > 0],
    ['publish', 'channel', (v) => typeof v === 'string' && v.length > 0],
    ['history', 'channel', (v) => typeof v === 'string' && v.length > 0],
    ['history', 'limit', (v) => Number.isInteger(v) && (v as number) >= 0],
    ['history', 'since', () => false],
    ['history', 'reverse', (v) => typeof v === 'boolean'],
    ['presence', 'channel', (v) => typeof v === 'string' && v.length > 0],
    ['presence_stats', 'channel', (v) => typeof v === 'string' && v.length > 0],
  ];
  const base: Record<string, Record<string, unknown>> = {
    connect: {},
    subscribe: { channel: 'news' },
    unsubscribe: { channel: 'news' },
    publish: { channel: 'news', data: 1 },
    history: { channel: 'news' },
    presence: { channel: 'news' },
    presence_stats: { channel: 'news' },
  };
  for (const [method, field, isValid] of fields) {
    it(`${method}.${field} of the wrong type is bad_params`, () => {
      for (const value of wrongValues) {
        if (isValid(value)) continue;
        assertError(decode({ id: 5, method, params: { ...base[method], [field]: value } }), 'bad_params', 5);
      }
    });
  }

  it('history.since needs exactly an epoch and an offset', () => {
    for (const since of [{}, { epoch: 'e' }, { offset: 1 }, { epoch: '', offset: 1 }, { epoch: 'e', offset: -1 }, { epoch: 'e', offset: 1, extra: 1 }, { epoch: 1, offset: 1 }, { epoch: 'e', offset: '1' }]) {
      assertError(decode({ id: 5, method: 'history', params: { channel: 'news', since } }), 'bad_params', 5);
    }
  });

  it('params that are not an object are bad_params', () => {
    for (const method of methods) {
      for (const params of [null, 1, 'x', true, [], [{ channel: 'news' }]]) {
        assertError(decode({ id: 5, method, params }), 'bad_params', 5);
      }
    }
  });

  it('missing required params are bad_params', () => {
    for (const method of ['subscribe', 'unsubscribe', 'publish', 'history', 'presence', 'presence_stats']) {
      assertError(decode({ id: 5, method }), 'bad_params', 5);
      assertError(decode({ id: 5, method, params: {} }), 'bad_params', 5);
    }
    assertError(decode({ id: 5, method: 'publish', params: { channel: 'news' } }), 'bad_params', 5);
    assertError(decode({ id: 5, method: 'publish', params: { data: 1 } }), 'bad_params', 5);
  });

  it('out-of-range values are bad_params', () => {
    const cases: Record<string, unknown>[] = [
      { method: 'subscribe', params: { channel: 'news', offset: Number.MAX_SAFE_INTEGER + 1 } },
      { method: 'subscribe', params: { channel: 'news', offset: -1 } },
      { method: 'subscribe', params: { channel: 'news', offset: 1.5 } },
      { method: 'subscribe', params: { channel: 'news', epoch: 'e'.repeat(33) } },
      { method: 'subscribe', params: { channel: '' } },
      { method: 'subscribe', params: { channel: 'c'.repeat(1025) } },
      { method: 'history', params: { channel: 'news', limit: -1 } },
      { method: 'history', params: { channel: 'news', limit: 10001 } },
      { method: 'connect', params: { name: 'n'.repeat(65) } },
      { method: 'connect', params: { token: 't'.repeat(16385) } },
    ];
    for (const command of cases) assertError(decode({ id: 5, ...command }), 'bad_params', 5);
  });
});

describe('unknown keys', () => {
  it('unknown top-level keys are rejected', () => {
    assertError(decode({ id: 5, method: 'ping', extra: 1 }), 'bad_params', 5);
    assertError(decode({ id: 5, method: 'subscribe', params: { channel: 'news' }, channel: 'news' }), 'bad_params', 5);
    assertError(decode({ method: 'pong', extra: 1 }), 'malformed');
  });

  it('unknown params keys are rejected for every method (reply 107)', () => {
    for (const method of methods) {
      const params = validParams[method].find((p) => p !== undefined) as Record<string, unknown>;
      assertError(decode({ id: 5, method, params: { ...params, unknown: true } }), 'bad_params', 5);
    }
  });

  it('a pong with unknown params keys and no id is malformed', () => {
    assertError(decode({ method: 'pong', params: { x: 1 } }), 'malformed');
  });
});

describe('prototype-poisoning keys', () => {
  const protoKeys = ['"__proto__"', '"\\u005f_proto__"', '"__proto\\u005F_"', '"\\u005f\\u005f\\u0070\\u0072\\u006f\\u0074\\u006f\\u005f\\u005f"'];
  const payload = '{"polluted":true,"isAdmin":true}';
  const places: [string, (key: string) => string][] = [
    ['top level', (k) => `{"id":1,"method":"ping",${k}:${payload}}`],
    ['top level, before id', (k) => `{${k}:${payload},"id":1,"method":"ping"}`],
    ['in params', (k) => `{"id":1,"method":"subscribe","params":{"channel":"c",${k}:${payload}}}`],
    ['in data', (k) => `{"id":1,"method":"publish","params":{"channel":"c","data":{${k}:${payload}}}}`],
    ['deep in data', (k) => `{"id":1,"method":"publish","params":{"channel":"c","data":{"a":[1,{"b":{${k}:${payload}}}]}}}`],
    ['in data array', (k) => `{"id":1,"method":"publish","params":{"channel":"c","data":[{${k}:${payload}}]}}`],
    ['in history.since', (k) => `{"id":1,"method":"history","params":{"channel":"c","since":{"epoch":"e","offset":1,${k}:${payload}}}}`],
    ['in pong', (k) => `{"method":"pong","params":{${k}:${payload}}}`],
  ];
  for (const [place, build] of places) {
    it(`__proto__ ${place} is rejected`, () => {
      for (const key of protoKeys) {
        const text = build(key);
        assert.doesNotThrow(() => JSON.parse(text), 'test input is valid JSON');
        const result = decodeCommand(text, MAX);
        assert.equal(result.ok, false, `accepted ${text}`);
        assertWellFormedResult(result);
      }
      assertNotPolluted();
    });

    it(`constructor.prototype ${place} is rejected`, () => {
      for (const key of ['"constructor"', '"\\u0063onstructor"']) {
        const text = build(key).replace(payload, `{"prototype":${payload}}`);
        assert.doesNotThrow(() => JSON.parse(text), 'test input is valid JSON');
        const result = decodeCommand(text, MAX);
        assert.equal(result.ok, false, `accepted ${text}`);
        assertWellFormedResult(result);
      }
      assertNotPolluted();
    });
  }

  it('__proto__ with a non-object value is rejected too', () => {
    for (const value of ['null', '1', '"x"', '[]']) {
      assert.equal(decodeCommand(`{"id":1,"method":"publish","params":{"channel":"c","data":{"__proto__":${value}}}}`, MAX).ok, false);
    }
  });

  it('whitespace between key and colon does not hide __proto__', () => {
    const text = '{"id":1,"method":"publish","params":{"channel":"c","data":{"__proto__" \t\n : {"polluted":true}}}}';
    assert.equal(decodeCommand(text, MAX).ok, false);
  });

  it('"__proto__" and "constructor" as values, and "constructor" without "prototype", are fine', () => {
    assertOk(decode({ id: 1, method: 'publish', params: { channel: 'c', data: { text: '"__proto__": {}', key: '__proto__', constructor: { name: 'x' } } } }));
  });

  it('parseJsonSafely returns undefined for poisoned input, without polluting', () => {
    assert.equal(parseJsonSafely('{"__proto__":{"polluted":true}}'), undefined);
    assert.equal(parseJsonSafely('{"a":{"constructor":{"prototype":{"polluted":true}}}}'), undefined);
    assert.equal(parseJsonSafely('not json'), undefined);
    assert.deepEqual(parseJsonSafely('{"a":[1,2]}'), { a: [1, 2] });
    assertNotPolluted();
  });

  it('validateCommand on objects with a poisoned or odd prototype does not throw', () => {
    const withProto = JSON.parse('{"id":1,"method":"ping","__proto__":{"polluted":true}}') as unknown;
    assertWellFormedResult(validateCommand(withProto));
    assert.equal(validateCommand(withProto).ok, false, 'an own __proto__ key is an unknown key');
    const nullProto = Object.assign(Object.create(null) as object, { id: 1, method: 'ping' });
    assertWellFormedResult(validateCommand(nullProto));
    assertNotPolluted();
  });
});

describe('properties', () => {
  const runs = { numRuns: 2000 };

  it('arbitrary strings never throw and give a well-formed result', () => {
    const anyUnits = fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 200 }).map((u) => String.fromCharCode(...u));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), anyUnits, fc.json()), fc.integer({ min: 1, max: 300 }), (text, max) => {
        const result = decodeCommand(text, max);
        assertWellFormedResult(result);
        assert.equal(result.ok === false && result.error === 'too_large', bytes(text) > max);
      }),
      runs,
    );
    assertNotPolluted();
  });

  it('arbitrary JSON values never throw and give a well-formed result', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
        const text = JSON.stringify(value) ?? 'null';
        assertWellFormedResult(decodeCommand(text, MAX));
        assertWellFormedResult(validateCommand(value));
      }),
      runs,
    );
    assertNotPolluted();
  });

  it('arbitrary command-shaped objects never throw and give a well-formed result', () => {
    const id = fc.oneof(fc.integer({ min: -5, max: 10 }), fc.constantFrom(MAX_ID, MAX_ID + 1, 1.5, '1', null), fc.constant(undefined));
    const method = fc.oneof(fc.constantFrom(...methods), fc.string({ maxLength: 40 }), fc.constantFrom('__proto__', 'constructor', 'toString'));
    const params = fc.oneof(
      fc.constant(undefined),
      fc.dictionary(
        fc.oneof(fc.constantFrom('channel', 'data', 'token', 'name', 'recover', 'epoch', 'offset', 'limit', 'since', 'reverse', '__proto__', 'constructor'), fc.string({ maxLength: 8 })),
        fc.jsonValue({ maxDepth: 3 }),
        { maxKeys: 5 },
      ),
      fc.jsonValue({ maxDepth: 2 }),
    );
    fc.assert(
      fc.property(id, method, params, fc.boolean(), (i, m, p, extra) => {
        const command: Record<string, unknown> = { method: m };
        if (i !== undefined) command['id'] = i;
        if (p !== undefined) command['params'] = p;
        if (extra) command['extra'] = 1;
        const text = JSON.stringify(command);
        const result = decodeCommand(text, MAX);
        assertWellFormedResult(result);
        if (extra) assert.equal(result.ok, false, 'unknown top-level key accepted');
        if (/"(__proto__|constructor)":/.test(text) && result.ok) {
          assert.ok(!text.includes('"__proto__":'), `accepted __proto__ key: ${text}`);
        }
      }),
      runs,
    );
    assertNotPolluted();
  });

  it('generated valid commands are accepted unchanged', () => {
    const channel = fc.string({ minLength: 1, maxLength: 64 });
    const epoch = fc.string({ minLength: 1, maxLength: 32 });
    const offset = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
    const cmdId = fc.integer({ min: 1, max: MAX_ID });
    const data = fc.jsonValue({ maxDepth: 4 }).filter((v) => !/"(__proto__|constructor)"/.test(JSON.stringify(v)));
    const command = fc.oneof(
      fc.record({ id: cmdId, method: fc.constant('connect'), params: fc.record({ token: fc.string({ maxLength: 200 }), name: fc.string({ maxLength: 64 }) }, { requiredKeys: [] }) }, { requiredKeys: ['id', 'method'] }),
      fc.record({ id: cmdId, method: fc.constant('subscribe'), params: fc.record({ channel, recover: fc.boolean(), epoch, offset }, { requiredKeys: ['channel'] }) }),
      fc.record({ id: cmdId, method: fc.constantFrom('unsubscribe', 'presence', 'presence_stats'), params: fc.record({ channel }) }),
      fc.record({ id: cmdId, method: fc.constant('publish'), params: fc.record({ channel, data }) }),
      fc.record({ id: cmdId, method: fc.constant('history'), params: fc.record({ channel, limit: fc.integer({ min: 0, max: 10000 }), since: fc.record({ epoch, offset }), reverse: fc.boolean() }, { requiredKeys: ['channel'] }) }),
      fc.record({ id: cmdId, method: fc.constant('ping'), params: fc.constant({}) }, { requiredKeys: ['id', 'method'] }),
      fc.record({ id: cmdId, method: fc.constant('pong'), params: fc.constant({}) }, { requiredKeys: ['method'] }),
    );
    fc.assert(
      fc.property(command, (cmd) => {
        const result = decodeCommand(JSON.stringify(cmd), MAX);
        assertOk(result, JSON.stringify(cmd));
        assert.deepEqual(result.ok && result.command, JSON.parse(JSON.stringify(cmd)));
      }),
      runs,
    );
  });
});
