/**
 * The shape of a `herald` command (packages/server/src/cli/main.ts): its
 * options, its positional arguments, its help, and what it runs.
 */
export type Values = Record<string, string | boolean | undefined>;
export type OptionSpec = { readonly type: 'string' | 'boolean'; readonly short?: string };

export interface Command {
  /** One line for the command list. */
  readonly summary: string;
  /** `herald <command> --help`. */
  readonly help: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Names of the positional arguments, all required, in order (`<channel> <json|->`); none when absent. */
  readonly args?: readonly string[];
  run(values: Values, args: readonly string[]): Promise<void> | void;
}
