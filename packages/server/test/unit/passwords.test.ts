/**
 * Admin passwords (console/passwords.ts): argon2id PHC strings with their
 * parameters, verification, rehash when the parameters change, length
 * rules, the stand-in check for unknown names, and the bound on hashes
 * running at once. Low-cost parameters keep the test fast where the
 * parameters themselves are not the point.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PasswordBusyError, PasswordHasher, PASSWORD_PARAMS, passwordProblem, generatePassword } from '../../src/console/passwords.ts';

const cheap = { memory: 64, passes: 1, parallelism: 1 };

test('a hash names argon2id and OWASP\'s parameters, with a 16-byte salt and a 32-byte tag', async () => {
  const hash = await new PasswordHasher().hash('correct horse battery staple');
  assert.deepEqual(PASSWORD_PARAMS, { memory: 19456, passes: 2, parallelism: 1 });
  const match = /^\$argon2id\$v=19\$m=19456,t=2,p=1\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(hash);
  assert.ok(match, hash);
  assert.equal(Buffer.from(match[1]!, 'base64').length, 16);
  assert.equal(Buffer.from(match[2]!, 'base64').length, 32);
  const again = await new PasswordHasher().hash('correct horse battery staple');
  assert.notEqual(again, hash, 'a new salt each time');
});

test('verify: right and wrong passwords; a hash with other parameters asks for a rehash', async () => {
  const old = new PasswordHasher({ params: cheap });
  const hash = await old.hash('correct horse battery staple');
  assert.deepEqual(await old.verify('correct horse battery staple', hash), { ok: true, needsRehash: false });
  assert.deepEqual(await old.verify('correct horse battery stapl', hash), { ok: false, needsRehash: false });
  const raised = new PasswordHasher({ params: { ...cheap, passes: 2 } });
  assert.deepEqual(await raised.verify('correct horse battery staple', hash), { ok: true, needsRehash: true });
  assert.deepEqual(await raised.verify('wrong horse battery staple', hash), { ok: false, needsRehash: false });
});

test('a malformed or foreign hash never matches', async () => {
  const hasher = new PasswordHasher({ params: cheap });
  for (const bad of ['', 'plain', '$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g', '$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g', '$2b$10$abcdefghijklmnopqrstuv']) {
    assert.deepEqual(await hasher.verify('anything', bad), { ok: false, needsRehash: false }, bad);
  }
  assert.equal(await hasher.verifyUnknown('correct horse battery staple'), false);
});

test('length rules: 12 to 256 characters', () => {
  assert.match(passwordProblem('short')!, /at least 12/);
  assert.equal(passwordProblem('a'.repeat(12)), undefined);
  assert.equal(passwordProblem('a'.repeat(256)), undefined);
  assert.match(passwordProblem('a'.repeat(257))!, /at most 256/);
  // Characters, not UTF-16 units: 256 four-byte characters (1024 bytes) are allowed, one more is not.
  assert.equal(passwordProblem('𝄞'.repeat(256)), undefined);
  assert.match(passwordProblem('𝄞'.repeat(257))!, /at most 256/);
  assert.equal(passwordProblem(generatePassword()), undefined);
});

test('hashes beyond the concurrency and the queue are refused, not piled up', async () => {
  const hasher = new PasswordHasher({ params: cheap, concurrency: 1, queue: 1 });
  const results = await Promise.allSettled([hasher.hash('aaaaaaaaaaaa'), hasher.hash('bbbbbbbbbbbb'), hasher.hash('cccccccccccc')]);
  assert.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'fulfilled', 'rejected'],
  );
  assert.ok((results[2] as PromiseRejectedResult).reason instanceof PasswordBusyError);
  assert.match(await hasher.hash('dddddddddddd'), /^\$argon2id\$/);
});
