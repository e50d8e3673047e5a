/**
 * The operator's token command: creates, lists and revokes tokens in the
 * server's database, even while the server runs on the same file (SQLite in
 * WAL mode; each side waits on the other's lock for up to `busy_timeout`).
 *
 * ```sh
 * deno task token create alice --ttl 3600
 * deno task token list
 * deno task token revoke 4f0d1c52-7c8a-4b8e-9a55-7a8ab3c2f9e1
 * deno task token revoke 9b1f04c2aa71   # the HASH column of list, for a lost token
 * deno task token revoke --user alice   # every token of alice
 * ```
 *
 * The database is found as the server finds it: `--database`, then
 * `DATABASE_PATH` from the environment, then from `.env`, then
 * `data/chat.db`. With `REDIS_URL` (or `--redis`) set, a cluster's tokens
 * live in Redis and the command works on them there; a token revoked there
 * ends its connections on every node at once (the nodes are told). A token
 * created here works on a running server at once; a token revoked here is
 * refused at once to new connections, and the server closes the connections
 * that already use it at its next re-check, within `TOKEN_RECHECK_MS`
 * (5 seconds). Tokens revoked by id or by user are known here only by their
 * hash, so a cluster's nodes too end their connections at that re-check.
 *
 * Exit status: `0` on success, `1` when the command failed (an unknown token,
 * a database error), `2` on bad usage.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ConfigError, loadConfig, readDotenv } from "../src/runtime/config.ts";
import { isReservedName, usernameProblem } from "../src/wire/names.ts";
import { publishRevocation } from "../src/redis/control_channel.ts";
import { textTable } from "./text_table.ts";
import { createLogger } from "../src/runtime/log.ts";
import type { RedisConnection } from "../src/redis/connection.ts";
import { openRedis } from "../src/redis/open_redis.ts";
import { RedisStorage } from "../src/redis/storage.ts";
import { SqliteStorage } from "../src/storage/sqlite_storage.ts";
import type { Storage, TokenAdmin, TokenRow } from "../src/chat/storage.ts";

/** The usage line, printed with every usage error. */
export const USAGE =
  "usage: deno task token [--database <path> | --redis <url>] (create <username> [--ttl <seconds>] | list | revoke (<token> | <id> | --user <username>))";

/** The longest `--ttl`, as the token API allows: ten years. */
const MAX_TTL_SECONDS = 10 * 365 * 86400;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const HELP = `${USAGE}

Commands:
  create <username> [--ttl <seconds>]  issue a token; --ttl defaults to TOKEN_TTL_SECONDS (86400)
  list                                 every token, newest first (tokens are stored hashed: the
                                       HASH column is the start of the token's SHA-256, and the
                                       id revoke takes)
  revoke <token>                       revoke a token; connections using it are closed within 5 seconds
                                       (at once with --redis: the nodes are told)
  revoke <id>                          revoke the token whose HASH in list starts with <id> (6 to 12
                                       hexadecimal digits, naming one token): for a token you no
                                       longer have; its connections are closed within 5 seconds
  revoke --user <username>             revoke every token of a user; their connections are closed
                                       within 5 seconds

Options:
  --database <path>  SQLite file of the server (DATABASE_PATH, default data/chat.db)
  --redis <url>      a cluster's Redis (REDIS_URL): its tokens live there
  -h, --help         this text`;

/** Where the command reads its settings and writes its output. */
export interface CliIo {
  /** The environment; defaults to `Deno.env.toObject()`. */
  env: Readonly<Record<string, string | undefined>>;
  /** The text of `.env`; defaults to reading `.env` in the working directory. */
  dotenv: string | undefined;
  /** Writes a line of output; defaults to `console.log`. */
  out: (line: string) => void;
  /** Writes a line of diagnostics; defaults to `console.error`. */
  err: (line: string) => void;
  /** The clock, in milliseconds since the epoch; defaults to `Date.now`. */
  now: () => number;
}

/** A usage error: exit status 2 with the usage line. */
class UsageError extends Error {}

/** What `revoke` revokes: one token, the token of a listed id, or every token of a user. */
type RevokeTarget =
  | { token: string }
  | { id: string }
  | { username: string };

/** The command line, parsed. */
type Command =
  | { kind: "help" }
  | { kind: "create"; username: string; ttlSeconds: number | undefined }
  | { kind: "list" }
  | { kind: "revoke"; target: RevokeTarget };

interface Parsed {
  command: Command;
  /** Flags for {@linkcode loadConfig}: `--database` and `--redis` only. */
  configArgs: string[];
}

/** The command's options, for `parseArgs`. */
const OPTIONS = {
  help: { type: "boolean", short: "h" },
  database: { type: "string" },
  redis: { type: "string" },
  ttl: { type: "string" },
  user: { type: "string" },
} as const;

/** A listed id: the start of a token's hash, 6 to 12 hexadecimal digits. */
const ID = /^[0-9a-f]{6,12}$/i;

/**
 * Splits `args` into the command's words and its flags, through
 * `node:util`'s `parseArgs` (not strict: its tokens are checked here so each
 * error names the option).
 */
function parseCommandLine(args: readonly string[]): Parsed {
  const { tokens } = parseArgs({
    args: [...args],
    options: OPTIONS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const words: string[] = [];
  const configArgs: string[] = [];
  const values: { ttl?: string; user?: string } = {};
  if (
    tokens.some((token) => token.kind === "option" && token.name === "help")
  ) {
    return { command: { kind: "help" }, configArgs };
  }
  for (const token of tokens) {
    if (token.kind === "positional") {
      words.push(token.value);
      continue;
    }
    if (token.kind === "option-terminator") {
      throw new UsageError("unexpected argument '--'");
    }
    const flag = token.rawName;
    if (!flag.startsWith("--") || !Object.hasOwn(OPTIONS, token.name)) {
      throw new UsageError(`unknown option ${flag}`);
    }
    const value = token.value;
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    if (token.name === "database" || token.name === "redis") {
      configArgs.push(flag, value);
    } else if (token.name === "ttl" || token.name === "user") {
      values[token.name] = value;
    }
  }
  const [name, ...rest] = words;
  const expect = (count: number, what: string) => {
    if (rest.length !== count) {
      throw new UsageError(
        rest.length < count
          ? `${name} needs ${what}`
          : `unexpected argument '${rest[count]}'`,
      );
    }
  };
  if (values.ttl !== undefined && name !== "create") {
    throw new UsageError("--ttl goes with create only");
  }
  if (values.user !== undefined && name !== "revoke") {
    throw new UsageError("--user goes with revoke only");
  }
  switch (name) {
    case "create": {
      expect(1, "a username");
      const username = rest[0] as string;
      checkUsername(username);
      if (isReservedName(username)) {
        throw new UsageError(
          `username: '${username}' is reserved for the server's own messages`,
        );
      }
      return {
        command: { kind: "create", username, ttlSeconds: ttl(values.ttl) },
        configArgs,
      };
    }
    case "list":
      expect(0, "nothing");
      return { command: { kind: "list" }, configArgs };
    case "revoke": {
      if (values.user !== undefined) {
        expect(0, "nothing");
        checkUsername(values.user);
        return {
          command: { kind: "revoke", target: { username: values.user } },
          configArgs,
        };
      }
      expect(1, "a token, an id from list, or --user <username>");
      const given = rest[0] as string;
      if (UUID.test(given)) {
        return {
          command: { kind: "revoke", target: { token: given.toLowerCase() } },
          configArgs,
        };
      }
      if (ID.test(given)) {
        return {
          command: { kind: "revoke", target: { id: given.toLowerCase() } },
          configArgs,
        };
      }
      throw new UsageError(
        `token: must be a UUID, or an id from list (6 to 12 hexadecimal digits); got '${given}'`,
      );
    }
    case undefined:
      throw new UsageError("a command is required");
    default:
      throw new UsageError(`unknown command '${name}'`);
  }
}

/** @throws {UsageError} when `username` is not a valid username. */
function checkUsername(username: string): void {
  const problem = usernameProblem(username);
  if (problem !== null) {
    throw new UsageError(`username: ${problem}; got '${username}'`);
  }
}

/** `--ttl` in seconds, checked; `undefined` when not given. */
function ttl(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const seconds = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(seconds >= 1 && seconds <= MAX_TTL_SECONDS)) {
    throw new UsageError(
      `--ttl takes a whole number of seconds from 1 to ${MAX_TTL_SECONDS}; got '${text}'`,
    );
  }
  return seconds;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The listing as an aligned table, one token a row. */
function table(rows: readonly TokenRow[], now: number): string[] {
  return textTable(
    ["HASH", "USERNAME", "STATUS", "CREATED", "EXPIRES"],
    rows.map((row) => [
      row.hashPrefix,
      row.username,
      row.revoked ? "revoked" : row.expiresAt <= now ? "expired" : "active",
      iso(row.createdAt),
      iso(row.expiresAt),
    ]),
  );
}

/**
 * Runs the token command with `args` (without the program name) and returns
 * its exit status: `0` done, `1` failed, `2` bad usage.
 *
 * @example Issue a token for a day
 * ```ts ignore
 * const status = await main(["--database", "data/chat.db", "create", "alice", "--ttl", "86400"]);
 * ```
 */
export async function main(
  args: readonly string[],
  io: Partial<CliIo> = {},
): Promise<number> {
  const out = io.out ?? ((line: string) => console.log(line));
  const err = io.err ?? ((line: string) => console.error(line));
  const now = io.now ?? Date.now;
  let parsed: Parsed;
  let databasePath: string;
  let redisUrl: string | undefined;
  let defaultTtl: number;
  try {
    parsed = parseCommandLine(args);
    if (parsed.command.kind === "help") {
      out(HELP);
      return 0;
    }
    const loaded = loadConfig({
      args: parsed.configArgs,
      env: io.env ?? Deno.env.toObject(),
      dotenv: "dotenv" in io ? io.dotenv : readDotenv(),
    });
    if (loaded.kind !== "config") throw new Error("unreachable");
    databasePath = loaded.config.databasePath;
    redisUrl = loaded.config.redisUrl;
    defaultTtl = loaded.config.tokenTtlSeconds;
    if (databasePath === ":memory:" && redisUrl === undefined) {
      throw new UsageError(
        "DATABASE_PATH is ':memory:': a server keeps its tokens to itself then; name a database file",
      );
    }
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      err(`error: ${error.message}`);
      err(USAGE);
      return 2;
    }
    throw error;
  }

  const { command } = parsed;
  let storage: Storage & TokenAdmin;
  let redis: RedisConnection | undefined;
  const where = redisUrl === undefined ? databasePath : "Redis";
  if (redisUrl !== undefined) {
    redis = openRedis(redisUrl, {
      name: "token-cli",
      log: createLogger("error", err),
    });
    if (!await until(() => redis?.up ?? false, REDIS_WAIT_MS)) {
      await redis.close();
      err(`error: cannot reach Redis at ${hideSecret(redisUrl)}`);
      return 1;
    }
    storage = new RedisStorage(redis, {
      nodeId: "token-cli",
      historySize: 0,
      authEnabled: true,
    });
  } else {
    if (command.kind !== "create" && !exists(databasePath)) {
      // Reading or revoking must not create an empty database by mistake.
      err(`error: no database at ${databasePath} (see --database)`);
      return 1;
    }
    try {
      // The command reads and writes no messages: the history size is moot.
      storage = new SqliteStorage(databasePath, 0);
    } catch (error) {
      err(`error: cannot open ${databasePath}: ${String(error)}`);
      return 1;
    }
  }
  try {
    switch (command.kind) {
      case "create": {
        const createdAt = now();
        const until = await storage.bannedUntil(command.username, createdAt);
        if (until !== null) {
          err(`error: ${command.username} is banned until ${iso(until)}`);
          return 1;
        }
        const token = crypto.randomUUID();
        const expiresAt = createdAt +
          (command.ttlSeconds ?? defaultTtl) * 1000;
        await storage.createToken(
          token,
          { username: command.username, expiresAt },
          createdAt,
        );
        out(`token:      ${token}`);
        out(`username:   ${command.username}`);
        out(`expires_at: ${iso(expiresAt)} (${expiresAt})`);
        return 0;
      }
      case "list": {
        const rows = await storage.listTokens();
        if (rows.length === 0) out(`no tokens in ${where}`);
        else for (const line of table(rows, now())) out(line);
        return 0;
      }
      case "revoke":
        return await revoke(storage, redis, command.target, out, err);
    }
    // `help` returned before the storage was opened.
    return 2;
  } catch (error) {
    err(`error: ${String(error)}`);
    return 1;
  } finally {
    await storage.close();
    await redis?.close();
  }
}

/**
 * Revokes what `target` names; the exit status. A token given whole is
 * announced to a cluster's nodes at once; tokens named by id or by user are
 * known only by their hash here, so the nodes end their connections at their
 * next re-check (within `TOKEN_RECHECK_MS`, 5 seconds), as a single server
 * does.
 */
async function revoke(
  storage: Storage & TokenAdmin,
  redis: RedisConnection | undefined,
  target: RevokeTarget,
  out: (line: string) => void,
  err: (line: string) => void,
): Promise<number> {
  if ("token" in target) {
    if (await storage.revokeToken(target.token)) {
      // A cluster's nodes hear of it at once, not after their cache.
      if (redis) await publishRevocation(redis, "token-cli", target.token);
      out(`revoked ${target.token}`);
      return 0;
    }
    err(`error: no live token ${target.token} (unknown or revoked)`);
    return 1;
  }
  if ("username" in target) {
    const count = await storage.revokeTokensWhere(target);
    if (count === 0) {
      err(`error: ${target.username} has no live token (none, or all revoked)`);
      return 1;
    }
    out(
      `revoked ${count} token${count === 1 ? "" : "s"} of ${target.username}`,
    );
    return 0;
  }
  const rows = (await storage.listTokens()).filter((row) =>
    row.hashPrefix.startsWith(target.id)
  );
  if (rows.length > 1) {
    err(
      `error: id ${target.id} names ${rows.length} tokens; give more of it (the whole HASH of list)`,
    );
    return 1;
  }
  const row = rows[0];
  if (row === undefined || row.revoked) {
    err(`error: no live token with id ${target.id} (unknown or revoked)`);
    return 1;
  }
  await storage.revokeTokensWhere({ hashPrefix: row.hashPrefix });
  out(`revoked ${row.hashPrefix} (${row.username})`);
  return 0;
}

/** How long the command waits for Redis to answer. */
const REDIS_WAIT_MS = 3000;

/** Polls `done` every 20 ms for up to `ms`; whether it came true. */
async function until(done: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

/** A Redis URL without its password, for messages. */
function hideSecret(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//(credentials)@");
}

if (import.meta.main) Deno.exit(await main(Deno.args));
