/**
 * `deno task admin`'s command line (`tools/admin_cli.ts`): its usage and
 * help, and the parsing of its words and flags through `node:util`'s
 * `parseArgs` into a {@linkcode Command}. It reads no setting and calls
 * nothing.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NAME_PATTERN, NAME_RULE } from "../src/wire/names.ts";

/** The usage line, printed with every usage error. */
export const USAGE =
  "usage: deno task admin [--url <url> | --database <path> | --redis <url>] (rooms | members <room> [--limit N] [--cursor NAME] | user <name> | kick <name> | ban <name> --for <duration> | unban <name> | bans | say <room> <text> | delete <room> <seq|id>)";

/** The text of `--help`. */
export const HELP = `${USAGE}

Commands (through the server's admin API, with ADMIN_TOKEN):
  rooms                          rooms with members, connections and last seq
  members <room>                 a room's members, a page at a time (--limit 1..1000, --cursor)
  user <name>                    a user's connections and ban
  kick <name>                    close every connection of a user (Leave reason kicked)
  ban <name> --for <duration>    ban a name: kicked, Enter and tokens refused until it ends
                                 (<duration>: seconds, or 30m, 2h, 7d)
  unban <name>                   lift a ban
  bans                           the bans still running
  say <room> <text>              a message to a room from 'system'
  delete <room> <seq|id>         delete a message: gone from history, members get Deleted

Options:
  --url <url>        the server (default http://HOST:PORT from the settings)
  --database <path>  work on this SQLite file instead (ban, unban, bans, delete)
  --redis <url>      work on a cluster's Redis instead (ban, unban, bans, delete; nodes told)
  -h, --help         this text

ADMIN_TOKEN comes from the environment or .env, never from a flag.`;

/** A usage error: exit status 2 with the usage line. */
export class UsageError extends Error {}

/** The command line, parsed. */
export type Command =
  | { kind: "help" }
  | { kind: "rooms" }
  | { kind: "members"; room: string; limit?: number; cursor?: string }
  | { kind: "user"; username: string }
  | { kind: "kick"; username: string }
  | { kind: "ban"; username: string; seconds: number }
  | { kind: "unban"; username: string }
  | { kind: "bans" }
  | { kind: "say"; room: string; content: string }
  | { kind: "delete"; room: string; ref: string };

/** The commands that work on storage directly. */
const DIRECT = new Set(["ban", "unban", "bans", "delete"]);

const OPTIONS = {
  help: { type: "boolean", short: "h" },
  url: { type: "string" },
  database: { type: "string" },
  redis: { type: "string" },
  for: { type: "string" },
  limit: { type: "string" },
  cursor: { type: "string" },
} as const;

/** The command line, parsed, with the flags for the settings. */
export interface Parsed {
  command: Command;
  url?: string;
  /** `--database` / `--redis` for {@linkcode loadConfig}. */
  configArgs: string[];
  direct: boolean;
}

/** The longest ban, as the API allows: ten years. */
const MAX_BAN_SECONDS = 10 * 365 * 86400;

/** `90`, `30m`, `2h`, `7d` in seconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(text);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[match?.[2] ?? ""];
  const seconds = match && unit ? Number(match[1]) * unit : NaN;
  if (!(seconds >= 1 && seconds <= MAX_BAN_SECONDS)) {
    throw new UsageError(
      `--for takes a duration from 1 second to ten years (90, 30m, 2h, 7d); got '${text}'`,
    );
  }
  return seconds;
}

function checkName(value: string, field: string): string {
  if (!NAME_PATTERN.test(value)) {
    throw new UsageError(`${field}: ${NAME_RULE}; got '${value}'`);
  }
  return value;
}

/**
 * Parses `args` (not strict: each token is checked here so each error
 * names the option). @throws {UsageError}
 */
export function parseCommandLine(args: readonly string[]): Parsed {
  const { tokens } = parseArgs({
    args: [...args],
    options: OPTIONS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const configArgs: string[] = [];
  const values: Record<string, string> = {};
  const words: string[] = [];
  if (tokens.some((t) => t.kind === "option" && t.name === "help")) {
    return { command: { kind: "help" }, configArgs, direct: false };
  }
  for (const token of tokens) {
    if (token.kind === "positional") {
      words.push(token.value);
      continue;
    }
    if (token.kind === "option-terminator") continue;
    const flag = token.rawName;
    if (!flag.startsWith("--") || !Object.hasOwn(OPTIONS, token.name)) {
      throw new UsageError(
        token.name === "admin-token"
          ? "--admin-token is refused (it would show in ps): set ADMIN_TOKEN in the environment or .env"
          : `unknown option ${flag}`,
      );
    }
    if (token.value === undefined) {
      throw new UsageError(`${flag} needs a value`);
    }
    if (token.name === "database" || token.name === "redis") {
      configArgs.push(flag, token.value);
    }
    values[token.name] = token.value;
  }
  if (values.database !== undefined && values.redis !== undefined) {
    throw new UsageError("give --database or --redis, not both");
  }
  const direct = configArgs.length > 0;
  if (direct && values.url !== undefined) {
    throw new UsageError(
      "--url goes with the API, not with --database/--redis",
    );
  }
  const [name, ...rest] = words;
  const expect = (count: number, what: string) => {
    if (rest.length < count) throw new UsageError(`${name} needs ${what}`);
    if (rest.length > count) {
      throw new UsageError(`unexpected argument '${rest[count]}'`);
    }
  };
  const only = (flag: string, command: string) => {
    if (values[flag] !== undefined && name !== command) {
      throw new UsageError(`--${flag} goes with ${command} only`);
    }
  };
  only("for", "ban");
  if (name !== "members") {
    only("limit", "members");
    only("cursor", "members");
  }
  let command: Command;
  switch (name) {
    case "rooms":
    case "bans":
      expect(0, "nothing");
      command = { kind: name };
      break;
    case "members": {
      expect(1, "a room");
      const limit = values.limit === undefined ? undefined : Number(
        /^\d+$/.test(values.limit) ? values.limit : NaN,
      );
      if (limit !== undefined && !(limit >= 1 && limit <= 1000)) {
        throw new UsageError(
          `--limit takes a whole number from 1 to 1000; got '${values.limit}'`,
        );
      }
      command = {
        kind: "members",
        room: checkName(rest[0]!, "room"),
        ...(limit === undefined ? {} : { limit }),
        ...(values.cursor === undefined ? {} : { cursor: values.cursor }),
      };
      break;
    }
    case "user":
    case "kick":
    case "unban":
      expect(1, "a username");
      command = { kind: name, username: checkName(rest[0]!, "username") };
      break;
    case "ban":
      expect(1, "a username");
      if (values.for === undefined) {
        throw new UsageError("ban needs --for <duration>");
      }
      command = {
        kind: "ban",
        username: checkName(rest[0]!, "username"),
        seconds: parseDuration(values.for),
      };
      break;
    case "say":
      if (rest.length < 2) throw new UsageError("say needs a room and a text");
      command = {
        kind: "say",
        room: checkName(rest[0]!, "room"),
        content: rest.slice(1).join(" "),
      };
      break;
    case "delete":
      expect(2, "a room and a message's seq or id");
      command = {
        kind: "delete",
        room: checkName(rest[0]!, "room"),
        ref: rest[1]!,
      };
      break;
    case undefined:
      throw new UsageError("a command is required");
    default:
      throw new UsageError(`unknown command '${name}'`);
  }
  if (direct && !DIRECT.has(command.kind)) {
    throw new UsageError(
      `${command.kind} needs a running server (the API): drop --database/--redis`,
    );
  }
  return {
    command,
    configArgs,
    direct,
    ...(values.url === undefined ? {} : { url: values.url }),
  };
}
