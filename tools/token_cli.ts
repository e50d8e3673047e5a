/**
 * The operator's token command: creates, lists and revokes tokens in the
 * server's database, even while the server runs on the same file (SQLite in
 * WAL mode; each side waits on the other's lock for up to `busy_timeout`).
 *
 * ```sh
 * deno task token create alice --ttl 3600
 * deno task token list
 * deno task token revoke 4f0d1c52-7c8a-4b8e-9a55-7a8ab3c2f9e1
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
 * (5 seconds).
 *
 * Exit status: `0` on success, `1` when the command failed (an unknown token,
 * a database error), `2` on bad usage.
 *
 * @module
 */
import { ConfigError, loadConfig, readDotenv } from "../src/runtime/config.ts";
import { usernameProblem } from "../src/wire/names.ts";
import { publishRevocation } from "../src/redis/bus.ts";
import { createLogger } from "../src/runtime/log.ts";
import { openRedis, type RedisConnection } from "../src/redis/connection.ts";
import { RedisStorage } from "../src/redis/storage.ts";
import { SqliteStorage } from "../src/storage/sqlite_storage.ts";
import type { Storage, TokenRow } from "../src/chat/storage.ts";

/** The usage line, printed with every usage error. */
export const USAGE =
  "usage: deno task token [--database <path> | --redis <url>] (create <username> [--ttl <seconds>] | list | revoke <token>)";

/** The longest `--ttl`, as the token API allows: ten years. */
const MAX_TTL_SECONDS = 10 * 365 * 86400;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const HELP = `${USAGE}

Commands:
  create <username> [--ttl <seconds>]  issue a token; --ttl defaults to TOKEN_TTL_SECONDS (86400)
  list                                 every token, newest first (tokens are stored hashed: the
                                       HASH column is the start of the token's SHA-256)
  revoke <token>                       revoke a token; connections using it are closed within 5 seconds
                                       (at once with --redis: the nodes are told)

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

/** The command line, parsed. */
type Command =
  | { kind: "help" }
  | { kind: "create"; username: string; ttlSeconds: number | undefined }
  | { kind: "list" }
  | { kind: "revoke"; token: string };

interface Parsed {
  command: Command;
  /** Flags for {@linkcode loadConfig}: `--database` and `--redis` only. */
  configArgs: string[];
}

/** Splits `args` into the command's words and its flags. */
function parseArgs(args: readonly string[]): Parsed {
  const words: string[] = [];
  const configArgs: string[] = [];
  let ttl: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "-h" || arg === "--help") {
      return { command: { kind: "help" }, configArgs };
    }
    if (!arg.startsWith("-") || arg === "-") {
      words.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    if (flag !== "--database" && flag !== "--redis" && flag !== "--ttl") {
      throw new UsageError(`unknown option ${flag}`);
    }
    let value: string | undefined;
    if (eq !== -1) value = arg.slice(eq + 1);
    else value = args[++i];
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    if (flag === "--database" || flag === "--redis") {
      configArgs.push(flag, value);
    } else ttl = value;
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
  if (ttl !== undefined && name !== "create") {
    throw new UsageError("--ttl goes with create only");
  }
  switch (name) {
    case "create": {
      expect(1, "a username");
      const username = rest[0] as string;
      const problem = usernameProblem(username);
      if (problem !== null) {
        throw new UsageError(`username: ${problem}; got '${username}'`);
      }
      let ttlSeconds: number | undefined;
      if (ttl !== undefined) {
        ttlSeconds = /^\d+$/.test(ttl) ? Number(ttl) : NaN;
        if (!(ttlSeconds >= 1 && ttlSeconds <= MAX_TTL_SECONDS)) {
          throw new UsageError(
            `--ttl takes a whole number of seconds from 1 to ${MAX_TTL_SECONDS}; got '${ttl}'`,
          );
        }
      }
      return { command: { kind: "create", username, ttlSeconds }, configArgs };
    }
    case "list":
      expect(0, "nothing");
      return { command: { kind: "list" }, configArgs };
    case "revoke": {
      expect(1, "a token");
      const token = rest[0] as string;
      if (!UUID.test(token)) {
        throw new UsageError(`token: must be a UUID; got '${token}'`);
      }
      return {
        command: { kind: "revoke", token: token.toLowerCase() },
        configArgs,
      };
    }
    case undefined:
      throw new UsageError("a command is required");
    default:
      throw new UsageError(`unknown command '${name}'`);
  }
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
  const lines = [["HASH", "USERNAME", "STATUS", "CREATED", "EXPIRES"]];
  for (const row of rows) {
    const status = row.revoked
      ? "revoked"
      : row.expiresAt <= now
      ? "expired"
      : "active";
    lines.push([
      row.hashPrefix,
      row.username,
      status,
      iso(row.createdAt),
      iso(row.expiresAt),
    ]);
  }
  const widths = lines[0]!.map((_, column) =>
    Math.max(...lines.map((line) => line[column]!.length))
  );
  return lines.map((line) =>
    line.map((cell, column) =>
      column === line.length - 1 ? cell : cell.padEnd(widths[column]!)
    ).join("  ")
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
    parsed = parseArgs(args);
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
  let storage: Storage;
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
        const token = crypto.randomUUID();
        const createdAt = now();
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
      case "revoke": {
        if (await storage.revokeToken(command.token)) {
          // A cluster's nodes hear of it at once, not after their cache.
          if (redis) {
            await publishRevocation(redis, "token-cli", command.token);
          }
          out(`revoked ${command.token}`);
          return 0;
        }
        err(`error: no live token ${command.token} (unknown or revoked)`);
        return 1;
      }
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
