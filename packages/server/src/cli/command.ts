/**
 * The shape of a `herald` command: its options, its positional arguments,
 * its help, and what it runs. main.ts registers every command in its table,
 * parses its options (refusing any other) and answers `--help`; commands
 * that live in modules of their own (api-commands, init, bench) use it too.
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

/** A usage error: the message on stderr, exit code 2 (as main.ts does). */
export function fail(message: string): never {
  process.stderr.write(message + '\n');
  process.exit(2);
}

/** An integer option within [min, max], or a usage error naming the flag. */
export function intOption(command: string, flag: string, text: string, min: number, max: number): number {
  const n = /^[0-9]{1,9}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) fail(`herald ${command}: --${flag} must be an integer from ${min} to ${max}, not "${text}" (herald ${command} --help)`);
  return n;
}
