/**
 * The schemas of a backend's answers to proxy hooks (docs/hooks.md). An
 * answer is untrusted input: its text is size- and depth-checked and parsed
 * by the one safe JSON reader, then checked here; anything else is a failed
 * call, never a crash.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { Channel } from 'node:diagnostics_channel';
import type { HookCallEvent } from '../observability/diagnostics.ts';
import type { ConnectDecision, HookEvent, PublishDecision, RpcDecision, SubscribeDecision } from './hooks.ts';

/** Codes a backend may give when it refuses: disconnect codes at connect, reply codes elsewhere. */
export const APP_DISCONNECT_CODES = { minimum: 4000, maximum: 4999 } as const;
export const APP_REPLY_CODES = { minimum: 1000, maximum: 1999 } as const;

const Message = Type.String({ maxLength: 256 });
const error = (range: { readonly minimum: number; readonly maximum: number }) =>
  Type.Object({ error: Type.Object({ code: Type.Optional(Type.Integer(range)), message: Type.Optional(Message) }, { additionalProperties: false }) }, { additionalProperties: false });
const result = (properties: Record<string, TSchema>) => Type.Object({ result: Type.Object(properties, { additionalProperties: false }) }, { additionalProperties: false });

/** Unix seconds, as JWT `exp`. */
const ExpireAt = Type.Integer({ minimum: 1, maximum: 2 ** 40 });
const UserId = Type.String({ maxLength: 255 });

const answers = {
  connect: Type.Union([result({ user: Type.Optional(UserId), expire_at: Type.Optional(ExpireAt), info: Type.Optional(Type.Unknown()) }), error(APP_DISCONNECT_CODES)]),
  refresh: Type.Union([result({ expire_at: Type.Optional(ExpireAt), info: Type.Optional(Type.Unknown()), expired: Type.Optional(Type.Boolean()) }), error(APP_DISCONNECT_CODES)]),
  subscribe: Type.Union([result({ info: Type.Optional(Type.Unknown()) }), error(APP_REPLY_CODES)]),
  publish: Type.Union([result({ data: Type.Optional(Type.Unknown()) }), error(APP_REPLY_CODES)]),
  rpc: Type.Union([result({ data: Type.Optional(Type.Unknown()) }), error(APP_REPLY_CODES)]),
} satisfies Record<HookEvent, TSchema>;

const checks = {} as Record<HookEvent, TypeCheck<TSchema>>;
for (const event of Object.keys(answers) as HookEvent[]) checks[event] = TypeCompiler.Compile<TSchema>(answers[event]);

export type HookAnswer =
  | { readonly result: { readonly user?: string; readonly expire_at?: number; readonly info?: unknown; readonly data?: unknown; readonly expired?: boolean } }
  | { readonly error: { readonly code?: number; readonly message?: string } };

/** The answer when it matches the event's schema; undefined otherwise. */
export function checkAnswer(event: HookEvent, value: unknown): HookAnswer | undefined {
  return checks[event].Check(value) ? (value as HookAnswer) : undefined;
}

/** The JSON Schema of each event's answer (docs). */
export const answerSchemas: Readonly<Record<HookEvent, TSchema>> = answers;

/** Default message of a denial without one. */
const DENIED = 'permission denied';

/*
 * What a checked answer decides, for every backend that answers with these
 * schemas (proxy hooks, JavaScript hooks). Unix seconds become epoch ms.
 */

export function connectDecision(answer: HookAnswer): ConnectDecision {
  if ('error' in answer) return { outcome: 'deny', code: answer.error.code ?? 3504, message: answer.error.message ?? DENIED };
  const r = answer.result;
  return { outcome: 'allow', user: r.user, expiresAt: r.expire_at === undefined ? undefined : r.expire_at * 1000, ...('info' in r ? { info: r.info } : {}) };
}

export function subscribeDecision(answer: HookAnswer): SubscribeDecision {
  if ('error' in answer) return { outcome: 'deny', code: answer.error.code ?? 103, message: answer.error.message ?? DENIED };
  return 'info' in answer.result ? { outcome: 'allow', info: answer.result.info } : { outcome: 'allow' };
}

export function publishDecision(answer: HookAnswer): PublishDecision {
  if ('error' in answer) return { outcome: 'deny', code: answer.error.code ?? 103, message: answer.error.message ?? DENIED };
  return 'data' in answer.result ? { outcome: 'allow', data: answer.result.data } : { outcome: 'allow' };
}

export function rpcDecision(answer: HookAnswer): RpcDecision {
  if ('error' in answer) return { outcome: 'deny', code: answer.error.code ?? 103, message: answer.error.message ?? DENIED };
  return { outcome: 'allow', data: answer.result.data ?? null };
}

/** Publishes one call's outcome (a checked answer, or why it failed) on a hook diagnostics channel, when anybody listens. */
export function reportHookCall(channel: Channel, node: string, event: string, outcome: HookAnswer | { readonly failed: string }, started: number): void {
  if (!channel.hasSubscribers) return;
  const report: HookCallEvent = {
    node,
    event,
    outcome: 'failed' in outcome ? 'failed' : 'error' in outcome ? 'deny' : 'allow',
    reason: 'failed' in outcome ? outcome.failed : undefined,
    ms: performance.now() - started,
  };
  channel.publish(report);
}
