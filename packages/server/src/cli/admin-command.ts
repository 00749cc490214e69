/**
 * `herald admin …`: the console's admin accounts, changed in the engine's
 * store while Herald runs (the sqlite state file opened as a tool beside its
 * owner, or Redis; the memory engine's store lives inside the server and
 * cannot be reached). Every change is in the audit log (actor `cli:<user>`).
 *
 * Passwords: read without echo from a terminal (asked twice), one line from
 * stdin when it is piped, or generated with `--generate` and shown once.
 */
import { isIP } from 'node:net';
import { userInfo } from 'node:os';
import type { Config } from '../config/schema.ts';
import { ADMIN_NAME_PATTERN, ADMIN_ROLES, type AdminRole, type AdminStore } from '../console/admin-store.ts';
import { generatePassword, passwordProblem, PasswordHasher, MAX_PASSWORD_BYTES } from '../console/passwords.ts';
import { accountKey, addressKey } from '../console/login-limiter.ts';
import { resetMfa } from '../console/totp.ts';
import { fail, type Command, type Values } from './command.ts';
import { openRedisTool, TOOL_BUSY_TIMEOUT_MS } from './key-backend.ts';

interface OpenStore {
  readonly store: AdminStore;
  readonly where: string;
  close(): Promise<void>;
}

/** Opens the console store of the config's engine, as a tool (never as the state file's owner). */
export async function openAdminStore(config: Config): Promise<OpenStore> {
  if (config.engine.type === 'sqlite') {
    const { openSqliteStore } = await import('../store/sqlite-store.ts');
    const { SqliteAdminStore } = await import('../console/sqlite-admin-store.ts');
    const file = openSqliteStore({ stateDir: config.stateDir, claim: false, busyTimeoutMs: TOOL_BUSY_TIMEOUT_MS });
    return { store: new SqliteAdminStore(file.db), where: file.path, close: async () => file.close() };
  }
  if (config.engine.type === 'redis') {
    const { redisTarget } = await import('../app/engine.ts');
    const { RedisAdminStore } = await import('../console/redis-admin-store.ts');
    const redis = await openRedisTool(config);
    return { store: new RedisAdminStore(redis.command, config.engine.redisPrefix), where: redisTarget(config), close: redis.close };
  }
  fail(
    'herald admin: engine.type is "memory": its console admins live inside the running server and no other process can reach them; use the sqlite engine (the default) or redis for the console',
  );
}

const configHelp = '--config FILE     the server\'s config file (default: HERALD_CONFIG, else development mode in ./.herald)';

function actor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

function nameArg(command: string, name: string | undefined): string {
  if (name === undefined || !ADMIN_NAME_PATTERN.test(name)) fail(`herald admin ${command}: the name must be 1-64 characters of A-Z a-z 0-9 _ . @ - (starting with a letter or digit)`);
  return name;
}

function roleOption(command: string, value: string | boolean | undefined): AdminRole {
  if (typeof value !== 'string' || !(ADMIN_ROLES as readonly string[]).includes(value)) fail(`herald admin ${command}: --role must be one of ${ADMIN_ROLES.join(', ')}`);
  return value as AdminRole;
}

/** One line typed on the terminal, not echoed. */
function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const input = process.stdin;
    // Echo off before the question: nothing typed after it shows.
    input.setRawMode(true);
    process.stderr.write(question);
    input.resume();
    input.setEncoding('utf8');
    let value = '';
    const done = (error?: Error) => {
      input.setRawMode(false);
      input.pause();
      input.removeListener('data', onData);
      process.stderr.write('\n');
      if (error !== undefined) reject(error);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003' || ch === '\u0004') return done(new Error('cancelled'));
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch >= ' ') value += ch;
        if (Buffer.byteLength(value) > MAX_PASSWORD_BYTES * 4) return done(new Error('password far too long'));
      }
    };
    input.on('data', onData);
  });
}

/** The first line of piped stdin (at most 64 KiB read). */
async function readPipedLine(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > 65536) break;
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text.split(/\r?\n/, 1)[0] ?? '';
}

/** The new password: generated, typed twice on a terminal, or piped. Refuses one outside the length limits. */
async function newPassword(command: string, values: Values): Promise<{ password: string; generated: boolean }> {
  if (values['generate'] === true) return { password: generatePassword(), generated: true };
  let password: string;
  if (process.stdin.isTTY === true) {
    password = await promptHidden('Password (12-256 characters, not shown): ');
    const problem = passwordProblem(password);
    if (problem !== undefined) fail(`herald admin ${command}: ${problem}`);
    if ((await promptHidden('Again: ')) !== password) fail(`herald admin ${command}: the two passwords differ`);
  } else {
    password = await readPipedLine();
  }
  const problem = passwordProblem(password);
  if (problem !== undefined) fail(`herald admin ${command}: ${problem} (pipe one line on stdin, type it on a terminal, or use --generate)`);
  return { password, generated: false };
}

function formatTime(ms: number | null): string {
  return ms === null ? '-' : new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

export const ADMIN_ACTIONS = ['create', 'passwd', 'role', 'disable', 'enable', 'list', 'unlock', 'unlock-address', 'end-sessions', 'reset-mfa'] as const;

export function adminCommands(loadConfig: (values: Values) => Config): Record<string, Command> {
  const withStore = async (values: Values, run: (open: OpenStore, config: Config) => Promise<void>): Promise<void> => {
    const config = loadConfig(values);
    const open = await openAdminStore(config);
    try {
      await run(open, config);
    } finally {
      await open.close();
    }
  };
  const common = { config: { type: 'string' } } as const;
  return {
    admin: {
      summary: 'console admins (create | passwd | role | disable | enable | list | unlock | unlock-address | end-sessions | reset-mfa)',
      help: `Usage:
  herald admin create NAME --role owner|operator|viewer [--generate]
  herald admin passwd NAME [--generate]
  herald admin role NAME --role owner|operator|viewer
  herald admin disable NAME | herald admin enable NAME
  herald admin list [--json]
  herald admin unlock NAME | herald admin unlock-address IP
  herald admin end-sessions NAME
  herald admin reset-mfa NAME
  (each also takes --config FILE)

Admins sign in to the console (docs/console.md). They live in the engine's
store: the state file herald.db (sqlite engine, the default) or Redis; these
commands work while Herald runs and take effect at its next request. The
first admin is always an owner. A new password, a new role or disabling an
admin ends that admin's sessions. Every change is in the audit log.
herald admin ACTION --help tells more.`,
      options: {},
      run: () => undefined,
    },
    'admin create': {
      summary: 'create a console admin',
      help: `Usage: herald admin create NAME --role owner|operator|viewer [--generate] [--config FILE]

Creates an admin. The password is read without echo from a terminal (twice),
as one line from stdin when it is piped, or generated with --generate and
printed once on stdout. 12 to 256 characters. The first admin is an owner
whatever --role says.

Roles: owner (admins and API keys, everything), operator (actions:
disconnect, revoke, publish a test message), viewer (read only).

Options:
  --role ROLE       owner, operator or viewer
  --generate        generate a password and print it once
  ${configHelp}`,
      options: { ...common, role: { type: 'string' }, generate: { type: 'boolean' } },
      args: ['name'],
      run: async (values, args) => {
        const name = nameArg('create', args[0]);
        const role = roleOption('create', values['role']);
        const { password, generated } = await newPassword('create', values);
        const passwordHash = await new PasswordHasher().hash(password);
        await withStore(values, async ({ store, where }) => {
          const created = await store.createAdmin({ name, role, passwordHash, now: Date.now() });
          if (created === undefined) fail(`herald admin create: an admin named "${name}" exists (herald admin passwd ${name} sets a new password)`);
          await store.appendAudit({ actor: actor(), action: 'admin.create', target: name, address: 'local', outcome: 'ok', detail: { role: created.role } }, Date.now());
          if (generated) process.stdout.write(password + '\n');
          process.stderr.write(
            `Created admin "${name}" with role ${created.role}${created.role !== role ? ' (the first admin is an owner)' : ''} in ${where}.` +
              (generated ? ' The password above is shown once.' : '') +
              '\n',
          );
        });
      },
    },
    'admin passwd': {
      summary: "set an admin's password",
      help: `Usage: herald admin passwd NAME [--generate] [--config FILE]

Sets a new password (read like herald admin create's) and ends the admin's
sessions.

Options:
  --generate        generate a password and print it once
  ${configHelp}`,
      options: { ...common, generate: { type: 'boolean' } },
      args: ['name'],
      run: async (values, args) => {
        const name = nameArg('passwd', args[0]);
        const { password, generated } = await newPassword('passwd', values);
        const passwordHash = await new PasswordHasher().hash(password);
        await withStore(values, async ({ store }) => {
          if ((await store.updateAdmin(name, { passwordHash }, Date.now())) === undefined) fail(`herald admin passwd: no admin named "${name}"`);
          const ended = await store.deleteSessionsOf(name);
          await store.appendAudit({ actor: actor(), action: 'admin.passwd', target: name, address: 'local', outcome: 'ok', detail: { sessionsEnded: ended } }, Date.now());
          if (generated) process.stdout.write(password + '\n');
          process.stderr.write(`New password for "${name}"${generated ? ' (above, shown once)' : ''}; ${ended} session${ended === 1 ? '' : 's'} ended.\n`);
        });
      },
    },
    'admin role': {
      summary: "change an admin's role",
      help: `Usage: herald admin role NAME --role owner|operator|viewer [--config FILE]

Changes the role and ends the admin's sessions (a privilege change needs a
new sign-in).

Options:
  --role ROLE       owner, operator or viewer
  ${configHelp}`,
      options: { ...common, role: { type: 'string' } },
      args: ['name'],
      run: async (values, args) => {
        const name = nameArg('role', args[0]);
        const role = roleOption('role', values['role']);
        await withStore(values, async ({ store }) => {
          const admins = await store.listAdmins();
          const target = admins.find((a) => a.name === name);
          if (target === undefined) fail(`herald admin role: no admin named "${name}"`);
          if (target.role === 'owner' && role !== 'owner' && !admins.some((a) => a.name !== name && a.role === 'owner' && !a.disabled)) {
            fail(`herald admin role: "${name}" is the last enabled owner; make another admin an owner first`);
          }
          await store.updateAdmin(name, { role }, Date.now());
          const ended = await store.deleteSessionsOf(name);
          await store.appendAudit({ actor: actor(), action: 'admin.role', target: name, address: 'local', outcome: 'ok', detail: { from: target.role, to: role, sessionsEnded: ended } }, Date.now());
          process.stderr.write(`"${name}" is now ${role}; ${ended} session${ended === 1 ? '' : 's'} ended.\n`);
        });
      },
    },
    'admin disable': {
      summary: 'disable an admin',
      help: `Usage: herald admin disable NAME [--config FILE]

The admin can no longer sign in; their sessions end at once.

Options:
  ${configHelp}`,
      options: common,
      args: ['name'],
      run: async (values, args) => setDisabled(withStore, values, nameArg('disable', args[0]), true),
    },
    'admin enable': {
      summary: 'enable a disabled admin',
      help: `Usage: herald admin enable NAME [--config FILE]

Options:
  ${configHelp}`,
      options: common,
      args: ['name'],
      run: async (values, args) => setDisabled(withStore, values, nameArg('enable', args[0]), false),
    },
    'admin list': {
      summary: 'list admins',
      help: `Usage: herald admin list [--json] [--config FILE]

Options:
  --json            JSON instead of a table
  ${configHelp}`,
      options: { ...common, json: { type: 'boolean' } },
      run: async (values) => {
        await withStore(values, async ({ store }, config) => {
          const now = Date.now();
          const c = config.admin.console;
          const policy = { idleMs: c.sessionIdleMs, absoluteMs: c.sessionAbsoluteMs, touchAfterMs: 0 };
          const rows = await Promise.all(
            (await store.listAdmins()).map(async (a) => {
              const counter = await store.getCounter(accountKey(a.name));
              return {
                name: a.name,
                role: a.role,
                disabled: a.disabled,
                createdAt: a.createdAt,
                sessions: await store.countSessions(a.name, now, policy),
                lockedUntil: counter !== undefined && counter.lockedUntil > now ? counter.lockedUntil : null,
              };
            }),
          );
          if (values['json'] === true) {
            process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
            return;
          }
          const table = [['NAME', 'ROLE', 'STATUS', 'CREATED', 'SESSIONS', 'LOCKED UNTIL']];
          for (const r of rows) table.push([r.name, r.role, r.disabled ? 'disabled' : 'enabled', formatTime(r.createdAt), String(r.sessions), formatTime(r.lockedUntil)]);
          const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
          process.stdout.write(table.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
        });
      },
    },
    'admin unlock': {
      summary: 'lift the sign-in lock of an account name',
      help: `Usage: herald admin unlock NAME [--config FILE]

Lifts the brute-force lock and delay of an account name (whether or not an
admin has it). herald admin unlock-address IP does it for a client address.

Options:
  ${configHelp}`,
      options: common,
      args: ['name'],
      run: async (values, args) => unlock(withStore, values, accountKey(nameArg('unlock', args[0]))),
    },
    'admin unlock-address': {
      summary: 'lift the sign-in lock of a client address',
      help: `Usage: herald admin unlock-address IP [--config FILE]

Lifts the brute-force lock and delay of a client address (IPv6: its /64).

Options:
  ${configHelp}`,
      options: common,
      args: ['address'],
      run: async (values, args) => {
        const address = args[0] ?? '';
        if (address.length > 64 || isIP(address) === 0) fail('herald admin unlock-address: give an IP address');
        await unlock(withStore, values, addressKey(address));
      },
    },
    'admin end-sessions': {
      summary: "end an admin's sessions",
      help: `Usage: herald admin end-sessions NAME [--config FILE]

Ends every console session of the admin, on every worker and node, at their
next request.

Options:
  ${configHelp}`,
      options: common,
      args: ['name'],
      run: async (values, args) => {
        const name = nameArg('end-sessions', args[0]);
        await withStore(values, async ({ store }) => {
          if ((await store.getAdmin(name)) === undefined) fail(`herald admin end-sessions: no admin named "${name}"`);
          const ended = await store.deleteSessionsOf(name);
          await store.appendAudit({ actor: actor(), action: 'admin.end_sessions', target: name, address: 'local', outcome: 'ok', detail: { sessions: ended } }, Date.now());
          process.stderr.write(`${ended} session${ended === 1 ? '' : 's'} of "${name}" ended.\n`);
        });
      },
    },
    'admin reset-mfa': {
      summary: "remove an admin's second factors",
      help: `Usage: herald admin reset-mfa NAME [--config FILE]

Removes the admin's TOTP secret, recovery codes and passkeys (for an admin who
lost the authenticator and the codes) and ends the admin's sessions. The next sign-in
asks for the password only, or, when admin.console.mfa.require covers the
admin's role, leads to enrolment. Audited as mfa.reset.

Options:
  ${configHelp}`,
      options: common,
      args: ['name'],
      run: async (values, args) => {
        const name = nameArg('reset-mfa', args[0]);
        await withStore(values, async ({ store }) => {
          if ((await store.getAdmin(name)) === undefined) fail(`herald admin reset-mfa: no admin named "${name}"`);
          const outcome = await resetMfa(store, name);
          await store.appendAudit({ actor: actor(), action: 'mfa.reset', target: name, address: 'local', outcome: 'ok', detail: { ...outcome } }, Date.now());
          process.stderr.write(
            `${outcome.totp ? 'TOTP and recovery codes removed' : 'No TOTP was enrolled'} for "${name}"; ${outcome.passkeys} passkey${outcome.passkeys === 1 ? '' : 's'} removed; ${outcome.sessions} session${outcome.sessions === 1 ? '' : 's'} ended.\n`,
          );
        });
      },
    },
  };
}

async function unlock(withStore: (values: Values, run: (open: OpenStore, config: Config) => Promise<void>) => Promise<void>, values: Values, key: string): Promise<void> {
  await withStore(values, async ({ store }) => {
    await store.clearAttempts(key);
    await store.appendAudit({ actor: actor(), action: 'admin.unlock', target: key, address: 'local', outcome: 'ok' }, Date.now());
    process.stderr.write(`Unlocked ${key}.\n`);
  });
}

async function setDisabled(
  withStore: (values: Values, run: (open: OpenStore, config: Config) => Promise<void>) => Promise<void>,
  values: Values,
  name: string,
  disabled: boolean,
): Promise<void> {
  const verb = disabled ? 'disable' : 'enable';
  await withStore(values, async ({ store }) => {
    const admins = await store.listAdmins();
    const target = admins.find((a) => a.name === name);
    if (target === undefined) fail(`herald admin ${verb}: no admin named "${name}"`);
    if (disabled && target.role === 'owner' && !admins.some((a) => a.name !== name && a.role === 'owner' && !a.disabled)) {
      fail(`herald admin disable: "${name}" is the last enabled owner; make another admin an owner first`);
    }
    await store.updateAdmin(name, { disabled }, Date.now());
    const ended = disabled ? await store.deleteSessionsOf(name) : 0;
    await store.appendAudit({ actor: actor(), action: `admin.${verb}`, target: name, address: 'local', outcome: 'ok', ...(disabled ? { detail: { sessionsEnded: ended } } : {}) }, Date.now());
    process.stderr.write(`"${name}" ${disabled ? `disabled; ${ended} session${ended === 1 ? '' : 's'} ended` : 'enabled'}.\n`);
  });
}
