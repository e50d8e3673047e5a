/**
 * The command line of `deno task cluster`: its own flags (`--nodes`,
 * `--port`, `--redis`, `--redis-port`, `--redis-cluster`, `--help`) parsed
 * through `node:util`'s `parseArgs`, every server flag passed on as given,
 * and the `--help` text.
 *
 * It does not check the server's flags (the server's own parser does), nor
 * start anything: that is `cluster_cli.ts`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ConfigError, SERVER_FLAG_OPTIONS } from "../src/runtime/config.ts";

/** What the command line of `deno task cluster` asks for. */
export interface ClusterArgs {
  /** `--help` or `-h` was given. */
  help: boolean;
  /** Nodes to start. */
  nodes: number;
  /** Flags for every node, as given (`--port` and `--redis` taken out). */
  passthrough: string[];
  /** `--port` as given, when it was. */
  port?: string;
  /** `--redis` as given, when it was. */
  redis?: string;
  /** `--redis-port`: the port of the redis-server started here, when given. */
  redisPort?: number;
  /** `--redis-cluster M`: start a local Redis Cluster of M masters and a replica each. */
  redisCluster?: number;
}

/** The nodes started when `--nodes` is not given. */
export const DEFAULT_NODES = 2;

/** The text of `deno task cluster --help`. */
export function clusterHelp(): string {
  return `Usage: deno task cluster [--nodes N] [--port P] [--redis-port N | --redis-cluster M] [server flags]

Starts N nodes of the chat server (main.ts) as one cluster through Redis,
on ports P, P+1, ..., P+N-1, and prints the URL of each.

  --nodes N      nodes to start (default ${DEFAULT_NODES})
  --port P       first port (default: PORT, or 8080); 0 puts every node on a
                 free port of its own, and the lines printed name them
  --redis URL    the Redis every node uses (default: REDIS_URL); without one,
                 a redis-server is started on a free port, with its data in a
                 temporary directory, and stopped with the nodes
  --redis-port N the port of that redis-server (127.0.0.1), instead of a free
                 one; not with --redis or REDIS_URL
  --redis-cluster M
                 instead, start a local Redis Cluster of M masters (3 or more)
                 and a replica each, on free ports, in a temporary directory
  -h, --help     this text

Every other flag goes to every node unchanged (see deno task start --help).
Secrets come from the environment or .env, never a flag (a flag shows in ps):
  ADMIN_TOKEN=s3cret deno task cluster --nodes 3 --auth
--admin-token, and --redis with a password in it, are refused (exit 2).
History and tokens live in Redis in cluster mode, so each node gets
--database :memory: unless a database is set (flag, DATABASE_PATH or .env);
a file is then given one per node: data/chat.db becomes data/chat.node0.db, ...

Node i's output lines start with [i]. Ctrl-C or SIGTERM stops every node with
SIGTERM, waits for them (SHUTDOWN_GRACE_SECONDS, plus 5 s, then SIGKILL), and
then the redis-server this command started. Another Ctrl-C, a second or more
later, kills the nodes at once.`;
}

/** This command's own flags; every other one is the server's. */
const OWN_OPTIONS = {
  help: { type: "boolean", short: "h" },
  nodes: { type: "string" },
  port: { type: "string" },
  redis: { type: "string" },
  "redis-port": { type: "string" },
  "redis-cluster": { type: "string" },
} as const;

/** A port number as text, checked: 1 to 65535. */
function portNumber(flag: string, value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
    throw new ConfigError(
      `--${flag} takes a whole number from 1 to 65535; got '${value}'`,
    );
  }
  return Number(value);
}

/**
 * Splits the command line into this command's flags and the server's,
 * through `node:util`'s `parseArgs` (not strict: the server's flags are
 * passed on as given, each with its value, and checked by the server's own
 * parser).
 *
 * @throws {ConfigError} on a bad `--nodes` or `--redis-port`, or a flag
 * without its value.
 */
export function parseClusterArgs(args: readonly string[]): ClusterArgs {
  const parsed: ClusterArgs = {
    help: false,
    nodes: DEFAULT_NODES,
    passthrough: [],
  };
  const { tokens } = parseArgs({
    args: [...args],
    options: { ...SERVER_FLAG_OPTIONS, ...OWN_OPTIONS },
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  for (const token of tokens) {
    if (token.kind === "positional") {
      parsed.passthrough.push(token.value);
      continue;
    }
    if (token.kind === "option-terminator") {
      parsed.passthrough.push("--");
      continue;
    }
    if (token.name === "help") {
      parsed.help = true;
      continue;
    }
    const own = token.rawName.startsWith("--") &&
      Object.hasOwn(OWN_OPTIONS, token.name);
    if (!own) {
      // A server flag goes along as given, with its value.
      if (token.inlineValue) {
        parsed.passthrough.push(`${token.rawName}=${token.value}`);
      } else {
        parsed.passthrough.push(token.rawName);
        if (token.value !== undefined) parsed.passthrough.push(token.value);
      }
      continue;
    }
    const value = token.value;
    if (value === undefined) {
      throw new ConfigError(`--${token.name} needs a value`);
    }
    switch (token.name) {
      case "nodes":
        if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 256) {
          throw new ConfigError(
            `--nodes takes a whole number from 1 to 256; got '${value}'`,
          );
        }
        parsed.nodes = Number(value);
        break;
      case "port":
        parsed.port = value;
        break;
      case "redis":
        parsed.redis = value;
        break;
      case "redis-port":
        parsed.redisPort = portNumber("redis-port", value);
        break;
      case "redis-cluster":
        if (!/^\d+$/.test(value) || Number(value) < 3 || Number(value) > 16) {
          throw new ConfigError(
            `--redis-cluster takes a whole number of masters from 3 to 16; got '${value}'`,
          );
        }
        parsed.redisCluster = Number(value);
        break;
    }
  }
  if (parsed.redis !== undefined && parsed.redisPort !== undefined) {
    throw new ConfigError(
      "--redis-port is the port of the redis-server this command starts; with --redis none is started",
    );
  }
  return parsed;
}
