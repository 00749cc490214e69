/** The IPC messages between the server and a sandbox process (sandbox-pool.ts ↔ sandbox-process.ts): plain data (Node's "advanced" IPC serialization, so the JSON text of an event or answer is copied, not escaped again). */

export interface SandboxLimits {
  /** The QuickJS runtime's memory limit (bytes): heap of the hook's code, its data and its answer. */
  readonly memoryBytes: number;
  /** The QuickJS stack limit (bytes). */
  readonly stackBytes: number;
  /** Deadline for evaluating the hook file (ms). */
  readonly loadTimeoutMs: number;
  /** `log` lines per second per sandbox process; more are dropped (and counted in the next line). */
  readonly logPerSecond: number;
}

export type SandboxRequest =
  | { readonly type: 'init'; readonly source: string; readonly filename: string; readonly limits: SandboxLimits }
  | {
      readonly type: 'calls';
      readonly id: number;
      /** Run in this order, each with its own deadline. */
      readonly calls: readonly SandboxCall[];
    };

export interface SandboxCall {
  /** onConnect, onSubscribe, onPublish or onRpc. */
  readonly fn: string;
  /** The event as JSON text. */
  readonly input: string;
  readonly timeoutMs: number;
  readonly maxAnswerChars: number;
}

/** A call's result: `answer`, the JSON text of what the hook returned (null: it returned undefined); or `failed`, why the call failed. */
export type SandboxResult = { readonly answer: string | null } | { readonly failed: string; readonly message: string };

export type SandboxReply =
  | { readonly type: 'started' }
  | { readonly type: 'ready'; readonly functions: readonly string[] }
  | { readonly type: 'failed'; readonly message: string }
  | { readonly type: 'log'; readonly text: string; readonly dropped: number }
  /** The results of a `calls` message, in its order. */
  | { readonly type: 'done'; readonly id: number; readonly results: readonly SandboxResult[] };
