/**
 * The operator's admin command: the admin API's operations from a shell,
 * against a running server (its URL and `ADMIN_TOKEN`), and the ones that
 * only need storage (bans, deleting a message) directly on the server's
 * SQLite file or a cluster's Redis, as `deno task token` does.
 *
 * ```sh
 * deno task admin rooms
 * deno task admin members lobby --limit 50
 * deno task admin user alice
 * deno task admin kick alice
 * deno task admin ban alice --for 2h
 * deno task admin unban alice
 * deno task admin bans
 * deno task admin say lobby "maintenance at noon"
 * deno task admin delete lobby 42            # by seq, or by the message's id
 * deno task admin --database data/chat.db ban alice --for 7d
 * deno task admin --redis redis://127.0.0.1:6379 delete lobby 42
 * ```
 *
 * Through the API: `--url` (default `http://HOST:PORT` from the settings),
 * with `ADMIN_TOKEN` from the environment or `.env` (never a flag: it would
 * show in `ps`). With `--database` or `--redis` the command works on the
 * storage instead: `ban`, `unban`, `bans` and `delete` only. A ban made so
 * reaches running servers within 5 seconds (they read the bans again); with
 * `--redis` the nodes are told at once, and a deletion reaches the rooms'
 * members as `Deleted`; with `--database` a deletion reaches clients only
 * when they read history again.
 *
 * Exit status: `0` done, `1` failed (an error answer, a storage error, an
 * unreachable server), `2` bad usage. It decides no chat rule; its command
 * line is parsed in `admin_args.ts`.
 *
 * @module
 */
import { ConfigError, loadConfig, readDotenv } from "../src/runtime/config.ts";
import {
  type Command,
  HELP,
  parseCommandLine,
  type Parsed,
  USAGE,
  UsageError,
} from "./admin_args.ts";
import { publishAdminAction } from "../src/redis/control_channel.ts";
import { textTable } from "./text_table.ts";
import { createLogger } from "../src/runtime/log.ts";
import type { RedisConnection } from "../src/redis/connection.ts";
import { openRedis } from "../src/redis/open_redis.ts";
import { RedisStorage } from "../src/redis/storage.ts";
import { SqliteStorage } from "../src/storage/sqlite_storage.ts";
import type { Storage } from "../src/chat/storage.ts";

export { USAGE };

/** Where the command reads its settings and writes its output. */
export interface AdminCliIo {
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

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * Runs the admin command with `args` (without the program name); resolves
 * with its exit status: `0` done, `1` failed, `2` bad usage.
 */
export async function main(
  args: readonly string[],
  io: Partial<AdminCliIo> = {},
): Promise<number> {
  const out = io.out ?? ((line: string) => console.log(line));
  const err = io.err ?? ((line: string) => console.error(line));
  const now = io.now ?? Date.now;
  let parsed: Parsed;
  let config;
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
    config = loaded.config;
    if (parsed.direct && config.redisUrl === undefined) {
      if (config.databasePath === ":memory:") {
        throw new UsageError(
          "DATABASE_PATH is ':memory:': name a database file",
        );
      }
    }
    if (!parsed.direct && config.adminToken === undefined) {
      throw new UsageError(
        "ADMIN_TOKEN is not set (environment or .env); or work on storage with --database/--redis",
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
  if (parsed.direct) {
    return await direct(parsed.command, config, { out, err, now });
  }
  const host = config.host === "0.0.0.0" ? "127.0.0.1" : config.host;
  const base = (parsed.url ?? `http://${host}:${config.port}`).replace(
    /\/+$/,
    "",
  );
  return await viaApi(parsed.command, base, config.adminToken!, out, err);
}

/** One call of the admin API; the status and the parsed body. */
async function call(
  base: string,
  secret: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${secret}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = text === "" ? {} : JSON.parse(text);
  } catch {
    parsed = { error: text.slice(0, 200) };
  }
  return { status: response.status, body: parsed };
}

async function viaApi(
  command: Exclude<Command, { kind: "help" }>,
  base: string,
  secret: string,
  out: (line: string) => void,
  err: (line: string) => void,
): Promise<number> {
  const part = encodeURIComponent;
  let answer;
  try {
    switch (command.kind) {
      case "rooms":
        answer = await call(base, secret, "GET", "/api/rooms");
        break;
      case "members": {
        const query = new URLSearchParams();
        if (command.limit !== undefined) {
          query.set("limit", String(command.limit));
        }
        if (command.cursor !== undefined) query.set("cursor", command.cursor);
        const tail = query.size > 0 ? `?${query}` : "";
        answer = await call(
          base,
          secret,
          "GET",
          `/api/rooms/${part(command.room)}/members${tail}`,
        );
        break;
      }
      case "user":
        answer = await call(
          base,
          secret,
          "GET",
          `/api/users/${part(command.username)}`,
        );
        break;
      case "kick":
        answer = await call(
          base,
          secret,
          "POST",
          `/api/users/${part(command.username)}/kick`,
        );
        break;
      case "ban":
        answer = await call(
          base,
          secret,
          "POST",
          `/api/users/${part(command.username)}/ban`,
          { seconds: command.seconds },
        );
        break;
      case "unban":
        answer = await call(
          base,
          secret,
          "DELETE",
          `/api/users/${part(command.username)}/ban`,
        );
        break;
      case "bans":
        answer = await call(base, secret, "GET", "/api/bans");
        break;
      case "say":
        answer = await call(
          base,
          secret,
          "POST",
          `/api/rooms/${part(command.room)}/messages`,
          { content: command.content },
        );
        break;
      case "delete":
        answer = await call(
          base,
          secret,
          "DELETE",
          `/api/rooms/${part(command.room)}/messages/${part(command.ref)}`,
        );
        break;
    }
  } catch (error) {
    err(`error: cannot reach ${base}: ${String(error)}`);
    return 1;
  }
  const { status, body } = answer;
  if (status >= 400) {
    err(`error: ${status} ${String(body.error ?? "")}`);
    return 1;
  }
  for (const line of describe(command, body)) out(line);
  return 0;
}

/** What an answer says, for people. */
function describe(
  command: Exclude<Command, { kind: "help" }>,
  body: Record<string, unknown>,
): string[] {
  // deno-lint-ignore no-explicit-any
  const b = body as any;
  const scope = b.scope === "node" ? [`(node ${b.node} only)`] : [];
  switch (command.kind) {
    case "rooms":
      return b.rooms.length === 0 ? ["no rooms", ...scope] : [
        ...textTable(
          ["ROOM", "MEMBERS", "CONNECTIONS", "LAST_SEQ"],
          // deno-lint-ignore no-explicit-any
          b.rooms.map((r: any) => [
            r.room,
            String(r.members),
            String(r.connections),
            String(r.last_seq),
          ]),
        ),
        ...scope,
      ];
    case "members":
      return [
        ...textTable(
          ["USERNAME", "CONNECTIONS"],
          // deno-lint-ignore no-explicit-any
          b.members.map((m: any) => [m.username, String(m.connections)]),
        ),
        ...(b.next_cursor === null ? [] : [`more: --cursor ${b.next_cursor}`]),
        ...scope,
      ];
    case "user":
      return [
        `${b.username}: ${b.connections.length} connection(s)${
          b.banned_until === null ? "" : `, banned until ${iso(b.banned_until)}`
        }`,
        // deno-lint-ignore no-explicit-any
        ...b.connections.map((c: any) => `  ${c.id}  ${c.rooms.join(" ")}`),
        ...scope,
      ];
    case "kick":
      return [`kicked ${b.username}: ${b.closed} connection(s) closed`];
    case "ban":
      return [
        `banned ${b.username} until ${
          iso(b.until)
        }: ${b.closed} connection(s) closed`,
      ];
    case "unban":
      return [`unbanned ${b.username}`];
    case "bans":
      return b.bans.length === 0 ? ["no bans"] : textTable(
        ["USERNAME", "UNTIL"],
        // deno-lint-ignore no-explicit-any
        b.bans.map((ban: any) => [ban.username, iso(ban.until)]),
      );
    case "say":
      return [`sent to ${b.room} as seq ${b.seq} (id ${b.id})`];
    case "delete":
      return [`deleted ${b.room} seq ${b.seq} (id ${b.id})`];
  }
}

/** How long the command waits for Redis to answer. */
const REDIS_WAIT_MS = 3000;

async function direct(
  command: Exclude<Command, { kind: "help" }>,
  config: { databasePath: string; redisUrl?: string | undefined },
  io: {
    out: (line: string) => void;
    err: (line: string) => void;
    now: () => number;
  },
): Promise<number> {
  const { out, err, now } = io;
  let storage: Storage;
  let redis: RedisConnection | undefined;
  if (config.redisUrl !== undefined) {
    redis = openRedis(config.redisUrl, {
      name: "admin-cli",
      log: createLogger("error", err),
    });
    const deadline = Date.now() + REDIS_WAIT_MS;
    while (!redis.up && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    if (!redis.up) {
      await redis.close();
      err("error: cannot reach Redis");
      return 1;
    }
    storage = new RedisStorage(redis, {
      nodeId: "admin-cli",
      historySize: 0,
      authEnabled: true,
    });
  } else {
    try {
      Deno.statSync(config.databasePath);
      storage = new SqliteStorage(config.databasePath, 0);
    } catch (error) {
      err(
        `error: cannot open ${config.databasePath} (see --database): ${
          String(error)
        }`,
      );
      return 1;
    }
  }
  const tell = async (
    action: Parameters<typeof publishAdminAction>[2],
  ): Promise<void> => {
    if (redis) await publishAdminAction(redis, "admin-cli", action);
  };
  try {
    switch (command.kind) {
      case "ban": {
        const at = now();
        const until = at + command.seconds * 1000;
        await storage.ban(command.username, until, at);
        await tell({ kind: "ban", username: command.username, until });
        out(`banned ${command.username} until ${iso(until)}`);
        return 0;
      }
      case "unban": {
        if (!await storage.unban(command.username)) {
          err(`error: ${command.username} is not banned`);
          return 1;
        }
        await tell({ kind: "unban", username: command.username });
        out(`unbanned ${command.username}`);
        return 0;
      }
      case "bans": {
        const rows = await storage.bans(now());
        if (rows.length === 0) out("no bans");
        else {
          for (
            const line of textTable(
              ["USERNAME", "UNTIL"],
              rows.map((row) => [row.username, iso(row.until)]),
            )
          ) out(line);
        }
        return 0;
      }
      case "delete": {
        const match = /^[0-9]{1,15}$/.test(command.ref)
          ? { seq: Number(command.ref) }
          : { id: command.ref };
        const deleted = await storage.deleteMessage(command.room, match);
        if (!deleted) {
          err(`error: ${command.room} keeps no message ${command.ref}`);
          return 1;
        }
        await tell({
          kind: "deleted",
          room: command.room,
          id: deleted.id,
          seq: deleted.seq,
        });
        out(`deleted ${command.room} seq ${deleted.seq} (id ${deleted.id})`);
        return 0;
      }
      default:
        return 2;
    }
  } catch (error) {
    err(`error: ${String(error)}`);
    return 1;
  } finally {
    await storage.close();
    await redis?.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
