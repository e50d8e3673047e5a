/**
 * Settings: one table, read from flags, the environment, `.env` and defaults,
 * in that order of precedence, and validated before the server listens.
 *
 * The table itself (each setting's flag, variable, default and schema) is in
 * `settings.ts`; this file parses values against it and prints `--help`.
 *
 * @module
 */
import { parseArgs, parseEnv } from "node:util";
import { z } from "zod";
import { type SettingName, SETTINGS, type SettingSpec } from "./settings.ts";

/**
 * The shape of {@linkcode Config} as a zod object: each setting's schema, made
 * optional when the setting has no default.
 */
type ConfigShape = {
  [K in SettingName]: (typeof SETTINGS)[K] extends { fallback: string }
    ? (typeof SETTINGS)[K]["schema"]
    : z.ZodOptional<(typeof SETTINGS)[K]["schema"]>;
};

function configShape(): ConfigShape {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, spec] of settingEntries()) {
    shape[name] = spec.fallback === undefined
      ? spec.schema.optional()
      : spec.schema;
  }
  // The loop above builds exactly ConfigShape; TypeScript cannot follow a
  // loop over keys, so the type is stated once here, on the schema, never on
  // a parse result.
  return shape as ConfigShape;
}

/** The whole settings table as one schema: text values in, {@linkcode Config} out. */
const CONFIG_SCHEMA = z.object(configShape());

/**
 * The validated settings of one server, derived from {@linkcode SETTINGS}: a
 * setting without a default may be `undefined` (for `trustedProxies`: no
 * proxy is trusted).
 */
export type Config = z.output<typeof CONFIG_SCHEMA>;

/** Where each setting's value came from, for the startup log. */
export type Sources = Partial<Record<SettingName, "flag" | "env" | ".env">>;

/** A setting that failed to parse, or an unknown flag. */
export class ConfigError extends Error {
  /** Creates the error with a one-line message naming the setting. */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The outcome of {@linkcode loadConfig}: settings, or a request for help. */
export type LoadResult =
  | { kind: "config"; config: Config; sources: Sources }
  | { kind: "help" };

/** Inputs of {@linkcode loadConfig}; all explicit so tests need no globals. */
export interface ConfigInputs {
  /** Command-line arguments, without the program name. */
  args: readonly string[];
  /** The environment. */
  env: Readonly<Record<string, string | undefined>>;
  /** The text of `.env`, or `undefined` when there is none. */
  dotenv: string | undefined;
}

/** Every row of the table with its name, in the table's order. */
function settingEntries(): [SettingName, SettingSpec][] {
  return Object.entries(SETTINGS) as [SettingName, SettingSpec][];
}

/** A flag of the server: the setting it sets and, for booleans, the value. */
interface FlagEntry {
  name: SettingName;
  value?: "true" | "false";
}

const FLAG_INDEX = new Map<string, FlagEntry>();
/** The options for `parseArgs`: every flag of the table, and `--help`. */
const FLAG_OPTIONS: Record<
  string,
  { type: "string" | "boolean"; short?: string }
> = {
  help: { type: "boolean", short: "h" },
};
for (const [name, spec] of settingEntries()) {
  if (spec.negation) {
    FLAG_INDEX.set(spec.flag, { name, value: "true" });
    FLAG_INDEX.set(spec.negation, { name, value: "false" });
    FLAG_OPTIONS[spec.flag] = { type: "boolean" };
    FLAG_OPTIONS[spec.negation] = { type: "boolean" };
  } else {
    FLAG_INDEX.set(spec.flag, { name });
    FLAG_OPTIONS[spec.flag] = { type: "string" };
  }
}

/** The server's flags in the form `parseArgs` takes, for commands that pass them on. */
export const SERVER_FLAG_OPTIONS: Readonly<
  Record<string, { readonly type: "string" | "boolean" }>
> = Object.fromEntries(
  Object.entries(FLAG_OPTIONS).filter(([flag]) => flag !== "help"),
);

/**
 * The flags given, by setting, through `node:util`'s `parseArgs` (not strict:
 * its tokens are checked here so every error names the flag and says what to
 * do). The last of a repeated flag wins.
 */
function parseFlags(
  args: readonly string[],
): Map<SettingName, string> | "help" {
  const { tokens } = parseArgs({
    args: [...args],
    options: FLAG_OPTIONS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  if (
    tokens.some((token) => token.kind === "option" && token.name === "help")
  ) {
    return "help";
  }
  const values = new Map<SettingName, string>();
  for (const token of tokens) {
    if (token.kind === "positional") {
      throw new ConfigError(
        `unexpected argument '${token.value}' (see --help)`,
      );
    }
    if (token.kind === "option-terminator") {
      throw new ConfigError("unexpected argument '--' (see --help)");
    }
    if (!token.rawName.startsWith("--")) {
      throw new ConfigError(
        `unexpected argument '${token.rawName}' (see --help)`,
      );
    }
    const flag = token.name;
    const entry = FLAG_INDEX.get(flag);
    if (!entry) throw new ConfigError(`unknown flag --${flag} (see --help)`);
    const spec: SettingSpec = SETTINGS[entry.name];
    if (spec.envOnly) {
      // Never echo the value: it is a secret, and it is already in `ps`.
      throw new ConfigError(
        `--${flag} is not accepted: a secret on the command line shows in ps and in deno task's banner; set ${spec.env} in the environment or in .env`,
      );
    }
    if (entry.value !== undefined) {
      if (token.inlineValue) {
        throw new ConfigError(`--${flag} takes no value`);
      }
      values.set(entry.name, entry.value);
      continue;
    }
    const value = token.value;
    if (value === undefined) {
      throw new ConfigError(`--${flag} needs a value`);
    }
    if (entry.name === "redisUrl" && /:\/\/[^/@]*@/.test(value)) {
      throw new ConfigError(
        `--${flag} with a password is not accepted: it shows in ps; set REDIS_URL in the environment or in .env`,
      );
    }
    values.set(entry.name, value);
  }
  return values;
}

/**
 * Reads every setting, flag > environment > `.env` > default.
 *
 * @throws {ConfigError} naming the setting and what it takes.
 */
export function loadConfig(inputs: ConfigInputs): LoadResult {
  const flags = parseFlags(inputs.args);
  if (flags === "help") return { kind: "help" };
  const dotenv = inputs.dotenv === undefined
    ? {}
    : parseEnv(inputs.dotenv) as Record<string, string>;
  const raw: Partial<Record<SettingName, string>> = {};
  const sources: Sources = {};
  for (const [name, spec] of settingEntries()) {
    const flag = flags.get(name);
    let value: string | undefined;
    if (flag !== undefined) {
      value = flag;
      sources[name] = "flag";
    } else if (inputs.env[spec.env] !== undefined) {
      value = inputs.env[spec.env];
      sources[name] = "env";
    } else if (dotenv[spec.env] !== undefined) {
      value = dotenv[spec.env];
      sources[name] = ".env";
    } else value = spec.fallback;
    if (value !== undefined) raw[name] = value;
  }
  const trimmed = Object.fromEntries(
    Object.entries(raw).map(([name, value]) => [name, value.trim()]),
  );
  const parsed = CONFIG_SCHEMA.safeParse(trimmed);
  if (parsed.success) return { kind: "config", config: parsed.data, sources };
  // The first issue, in the table's order: the setting it names.
  const issue = parsed.error.issues[0];
  const name = issue?.path[0] as SettingName;
  const spec: SettingSpec = SETTINGS[name];
  const what = issue?.message ?? "an invalid value";
  // One line, always; a secret is never echoed.
  const got = spec.secret
    ? "(hidden)"
    : JSON.stringify(raw[name] ?? "").slice(1, -1);
  throw new ConfigError(`${spec.env} (--${spec.flag}) ${what}; got '${got}'`);
}

/** The settings table, as printed by `--help`. */
export function helpText(): string {
  const lines = [
    "Usage: chat-server [flags]",
    "",
    "Every flag has an environment variable and a .env line of the same name.",
    "Precedence: flag > environment > .env > default.",
    "",
  ];
  for (const [, spec] of settingEntries()) {
    const flag = spec.envOnly
      ? "(environment or .env only)"
      : spec.negation
      ? `--${spec.flag} / --${spec.negation}`
      : `--${spec.flag} <value>`;
    const fallback = spec.fallback === undefined
      ? "none"
      : `'${spec.fallback}'`;
    lines.push(
      `  ${flag.padEnd(34)} ${spec.env.padEnd(26)} default ${fallback}`,
    );
    lines.push(`      ${spec.help}`);
  }
  return lines.join("\n");
}

/** Settings that differ from their defaults, secrets masked, for the log. */
export function changedSettings(
  config: Config,
  sources: Sources,
): Record<string, unknown> {
  const changed: Record<string, unknown> = {};
  for (const name of Object.keys(sources) as SettingName[]) {
    const spec: SettingSpec = SETTINGS[name];
    changed[spec.env] = spec.secret ? "(set)" : config[name];
  }
  return changed;
}

/** The text of `.env` in the working directory, or `undefined` when there is none. */
export function readDotenv(): string | undefined {
  try {
    return Deno.readTextFileSync(".env");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}
