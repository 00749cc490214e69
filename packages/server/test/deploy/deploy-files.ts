/**
 * The files in deploy/, read the way their tools read them: the Dockerfile
 * through dockerfile-ast (the parser behind dockerfile-utils), YAML through
 * `yaml`. Shared by the lint tests and the process tests, so that what is
 * checked is what is run.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DockerfileParser, type Instruction, type ModifiableInstruction } from 'dockerfile-ast';
import { parse, parseAllDocuments } from 'yaml';

export const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const DEPLOY_DIR = `${REPO_ROOT}deploy/`;

export function deployFile(name: string): string {
  return readFileSync(DEPLOY_DIR + name, 'utf8');
}

export interface DockerInstruction {
  readonly keyword: string;
  /** `--name=value` flags (`--from=build`, `--mount=…`, `--interval=10s`). */
  readonly flags: Readonly<Record<string, string>>;
  /** Shell-form words, flags left out (the JSON form is in `json`). */
  readonly args: readonly string[];
  /** The JSON (exec) form, when the instruction is written in it. */
  readonly json: readonly string[] | undefined;
  readonly line: number;
}

export interface DockerStage {
  readonly name: string;
  readonly image: string;
  readonly instructions: readonly DockerInstruction[];
}

function jsonForm(text: string | null): string[] | undefined {
  if (text === null || !text.trimStart().startsWith('[')) return undefined;
  const value: unknown = JSON.parse(text);
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new Error(`not a JSON string array: ${text}`);
  return value;
}

function toInstruction(instruction: Instruction): DockerInstruction {
  const keyword = instruction.getKeyword();
  const flags: Record<string, string> = {};
  const modifiable = instruction as Partial<ModifiableInstruction>;
  if (typeof modifiable.getFlags === 'function') {
    for (const flag of modifiable.getFlags()) flags[flag.getName()] = flag.getValue() ?? '';
  }
  const args = instruction.getArguments().map((a) => a.getValue());
  let json: string[] | undefined;
  if (keyword === 'HEALTHCHECK') {
    // HEALTHCHECK [flags] CMD [...]: the command after CMD.
    const content = instruction.getArgumentsContent() ?? '';
    const at = content.search(/\bCMD\b/);
    json = at < 0 ? undefined : jsonForm(content.slice(at + 3).trim());
  } else if (keyword === 'CMD' || keyword === 'ENTRYPOINT' || keyword === 'RUN' || keyword === 'VOLUME') {
    json = jsonForm(instruction.getArgumentsContent());
  }
  return { keyword, flags, args, json, line: instruction.getRange().start.line + 1 };
}

/** deploy/Dockerfile as stages (FROM … AS name), each with its instructions; the global ARGs resolved in FROM. */
export function dockerStages(text = deployFile('Dockerfile')): DockerStage[] {
  const dockerfile = DockerfileParser.parse(text);
  const globals = new Map<string, string>();
  for (const arg of dockerfile.getInitialARGs()) {
    const property = arg.getProperty();
    if (property !== null) globals.set(property.getName(), property.getValue() ?? '');
  }
  const stages: { name: string; image: string; instructions: DockerInstruction[] }[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const parsed = toInstruction(instruction);
      const image = (parsed.args[0] ?? '').replace(/^\$\{?(\w+)\}?$/, (_, name: string) => globals.get(name) ?? '');
      const as = parsed.args.findIndex((a) => a.toUpperCase() === 'AS');
      stages.push({ name: as >= 0 ? parsed.args[as + 1]! : String(stages.length), image, instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push(toInstruction(instruction));
    }
  }
  return stages;
}

/** The last instruction of `keyword` in a stage (Docker uses the last CMD, ENTRYPOINT, USER, …). */
export function lastOf(stage: DockerStage, keyword: string): DockerInstruction | undefined {
  return stage.instructions.filter((i) => i.keyword === keyword).at(-1);
}

/** The environment a stage's ENV instructions set (`ENV A=1 B=2`). */
export function stageEnv(stage: DockerStage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const instruction of stage.instructions.filter((i) => i.keyword === 'ENV')) {
    for (const word of instruction.args) {
      const eq = word.indexOf('=');
      if (eq <= 0) throw new Error(`line ${instruction.line}: write ENV as NAME=value`);
      env[word.slice(0, eq)] = word.slice(eq + 1);
    }
  }
  return env;
}

/** The working directory in force at the end of a stage. */
export function stageWorkdir(stage: DockerStage): string {
  return lastOf(stage, 'WORKDIR')?.args[0] ?? '/';
}

/** deploy/compose.yaml as plain data. */
export function composeFile(): Record<string, any> {
  return parse(deployFile('compose.yaml')) as Record<string, any>;
}

export interface KubernetesObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly [key: string]: unknown };
  readonly [key: string]: any;
}

/** Every document of every YAML file in deploy/kubernetes/, with the file it came from. */
export function kubernetesObjects(files: readonly string[]): { file: string; object: KubernetesObject }[] {
  const out: { file: string; object: KubernetesObject }[] = [];
  for (const file of files) {
    for (const doc of parseAllDocuments(deployFile(`kubernetes/${file}`))) {
      if (doc.errors.length > 0) throw new Error(`kubernetes/${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const object = doc.toJS() as KubernetesObject | null;
      if (object !== null) out.push({ file, object });
    }
  }
  return out;
}

/** The systemd unit as [section] → key → values (a key may repeat). */
export function systemdUnit(text = deployFile('herald.service')): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (current === undefined || eq < 0) throw new Error(`herald.service: cannot read "${line}"`);
    const key = line.slice(0, eq);
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}
