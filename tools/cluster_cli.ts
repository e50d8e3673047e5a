/**
 * `deno task cluster`: several chat server nodes on one machine, one cluster
 * through Redis.
 *
 * ```sh
 * deno task cluster --nodes 3                 # ports 8080, 8081, 8082; a local redis-server
 * ADMIN_TOKEN=s3cret deno task cluster --nodes 2 --port 9000 --auth
 * REDIS_URL=redis://127.0.0.1:6379 deno task cluster --nodes 2
 * deno task cluster --nodes 2 --port 0        # each node on a free port of its own
 * deno task cluster --redis-port 6390         # its redis-server on 6390, not a free port
 * deno task cluster --nodes 3 --redis-cluster 3   # a local Redis Cluster: 3 masters, 3 replicas
 * ```
 *
 * It starts `main.ts` once per node as a subprocess, on consecutive ports
 * from `--port` (or `PORT`, default 8080), each with `REDIS_URL` set. Without
 * `REDIS_URL` (flag, environment or `.env`) it starts a redis-server of its
 * own on a free port (or `--redis-port`), with its data in a temporary directory. Every other
 * flag goes to every node unchanged. A stop (Ctrl-C, `SIGTERM`) stops every
 * node with `SIGTERM`, waits for them, then stops that redis-server.
 *
 * Its command line (flags, `--help`) is parsed in `cluster_args.ts`.
 *
 * @module
 */
import { ConfigError, loadConfig, readDotenv } from "../src/runtime/config.ts";
import {
  type ClusterArgs,
  clusterHelp,
  parseClusterArgs,
} from "./cluster_args.ts";
import { type LocalRedis, startLocalRedis } from "./local_redis.ts";
import {
  type LocalRedisCluster,
  startLocalRedisCluster,
} from "./local_redis_cluster.ts";

/**
 * The database of node `index` of `nodes`: `:memory:` stays so, a file gets
 * the node's index before its extension when there is more than one node.
 */
export function nodeDatabasePath(
  path: string,
  index: number,
  nodes: number,
): string {
  if (path === ":memory:" || nodes === 1) return path;
  const slash = path.lastIndexOf("/");
  const dot = path.lastIndexOf(".");
  if (dot > slash + 1) {
    return `${path.slice(0, dot)}.node${index}${path.slice(dot)}`;
  }
  return `${path}.node${index}`;
}

/** `count` distinct ports that were free a moment ago. */
function freePorts(hostname: string, count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname, port: 0 }),
  );
  const ports = listeners.map((listener) => listener.addr.port);
  for (const listener of listeners) listener.close();
  return ports;
}

/** The host a client on this machine reaches a node at, for URLs. */
function clientHost(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "[::1]";
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/** `url` with its password, if any, replaced by `***`, for printing. */
export function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password === "") return url;
    parsed.password = "***";
    return parsed.href;
  } catch {
    return "(unparsable URL)";
  }
}

/** `true` when `name` is an executable file in a directory of `PATH`. */
function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return true;
    } catch {
      // not there
    }
  }
  return false;
}

/** Copies `stream` to `write`, one line at a time, each after `prefix`. */
async function pipeLines(
  stream: ReadableStream<Uint8Array<ArrayBuffer>>,
  prefix: string,
  write: (line: string) => void,
): Promise<void> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      write(prefix + buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
    }
  }
  if (buffered) write(prefix + buffered);
}

/** Describes how a process ended. */
function describe(status: Deno.CommandStatus): string {
  return status.signal === null
    ? `exit code ${status.code}`
    : `signal ${status.signal}`;
}

/** One running node. */
interface Node {
  index: number;
  port: number;
  url: string;
  child: Deno.ChildProcess;
  status: Deno.CommandStatus | null;
  exited: Promise<Deno.CommandStatus>;
  output: Promise<void>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** How long a node that answers `degraded` gets to reach Redis and sync. */
const SYNC_WAIT_MS = 5000;

/**
 * Polls `/healthz` of `node` until it answers `ok` (connected to Redis and in
 * sync), the node exits or `ms` pass. A node that answers but stays
 * `degraded` for {@linkcode SYNC_WAIT_MS} (Redis unreachable) is up all the
 * same: it serves its own clients and joins the cluster when Redis comes.
 */
async function waitReady(
  node: Node,
  ms: number,
): Promise<"ok" | "degraded" | null> {
  const deadline = Date.now() + ms;
  let degradedSince: number | null = null;
  while (node.status === null && Date.now() < deadline) {
    try {
      const response = await fetch(`${node.url}healthz`, {
        signal: AbortSignal.timeout(1000),
      });
      const body = await response.json() as { status?: string };
      if (response.ok && body.status === "ok") return "ok";
      if (response.ok) {
        degradedSince ??= Date.now();
        if (Date.now() - degradedSince >= SYNC_WAIT_MS) return "degraded";
      }
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  return degradedSince === null ? null : "degraded";
}

/** Runs the command; resolves with the exit status. */
export async function main(
  args: readonly string[] = Deno.args,
): Promise<number> {
  let parsed: ClusterArgs;
  let config;
  let sources;
  try {
    parsed = parseClusterArgs(args);
    if (parsed.help) {
      console.log(clusterHelp());
      return 0;
    }
    const loaded = loadConfig({
      args: [
        ...parsed.passthrough,
        ...(parsed.port === undefined ? [] : ["--port", parsed.port]),
        ...(parsed.redis === undefined ? [] : ["--redis", parsed.redis]),
      ],
      env: Deno.env.toObject(),
      dotenv: readDotenv(),
    });
    if (loaded.kind === "help") throw new Error("unreachable");
    ({ config, sources } = loaded);
    if (config.redisUrl !== undefined && parsed.redisPort !== undefined) {
      throw new ConfigError(
        "--redis-port is the port of the redis-server this command starts; with REDIS_URL set none is started",
      );
    }
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`error: ${error.message}`);
      return 2;
    }
    throw error;
  }
  const count = parsed.nodes;
  if (config.port !== 0 && config.port + count - 1 > 65535) {
    console.error(
      `error: ${count} nodes from port ${config.port} go past port 65535`,
    );
    return 2;
  }

  // Signals are ours from here on: a stop while Redis or the nodes start
  // still stops what did start.
  const nodes: Node[] = [];
  let stopping = false;
  const { promise: stopSignal, resolve: requestStop } = Promise.withResolvers<
    "signal"
  >();
  // One Ctrl-C can arrive twice: from the terminal to the whole process
  // group, and forwarded by `deno task`. Only a signal a second or more
  // after the first one kills.
  let firstSignalAt = 0;
  const onSignal = (signal: Deno.Signal) => () => {
    if (firstSignalAt === 0) {
      firstSignalAt = Date.now();
      requestStop("signal");
      return;
    }
    if (Date.now() - firstSignalAt < 1000) return;
    console.error(`${signal} again: killing every node`);
    for (const node of nodes) kill(node, "SIGKILL");
  };
  const listeners = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const listener = onSignal(signal);
    Deno.addSignalListener(signal, listener);
    return [signal, listener] as const;
  });

  let redis: LocalRedis | undefined;
  let redisCluster: LocalRedisCluster | undefined;
  let failed = false;
  try {
    let redisUrl = config.redisUrl;
    if (parsed.redisCluster !== undefined) {
      if (redisUrl !== undefined) {
        console.error(
          "error: --redis-cluster starts its own Redis: drop --redis and REDIS_URL",
        );
        return 2;
      }
      try {
        redisCluster = await startLocalRedisCluster({
          masters: parsed.redisCluster,
        });
      } catch (error) {
        console.error(
          `error: could not start a local Redis Cluster: ${
            (error as Error).message
          }`,
        );
        return 1;
      }
      redisUrl = redisCluster.url;
      console.log(
        `redis:  ${redisUrl} (local Redis Cluster, ${parsed.redisCluster} masters and ${parsed.redisCluster} replicas, data in ${redisCluster.dir})`,
      );
    } else if (redisUrl === undefined) {
      if (!onPath("redis-server")) {
        console.error(
          "error: REDIS_URL is not set and redis-server is not installed (not on PATH).\n" +
            "Install Redis (apt-get install redis-server, brew install redis), or point\n" +
            "the nodes at a running one: --redis redis://HOST:6379 or REDIS_URL=...",
        );
        return 1;
      }
      try {
        // Redis's own default: a trial cluster need not fsync every reply.
        redis = await startLocalRedis({
          appendfsync: "everysec",
          port: parsed.redisPort,
        });
      } catch (error) {
        console.error(
          `error: could not start a local redis-server: ${
            (error as Error).message
          }`,
        );
        return 1;
      }
      redisUrl = redis.url;
      console.log(
        `redis:  ${redis.url} (local redis-server, data in ${redis.dir})`,
      );
    } else {
      const from = sources.redisUrl === "flag" ? "--redis" : "REDIS_URL";
      console.log(`redis:  ${withoutPassword(redisUrl)} (${from})`);
    }
    if (firstSignalAt !== 0) return 0;

    const ports = config.port === 0
      ? freePorts(config.host, count)
      : Array.from({ length: count }, (_, i) => config.port + i);
    const database = sources.databasePath === undefined
      ? ":memory:"
      : config.databasePath;
    const host = clientHost(config.host);
    for (const [index, port] of ports.entries()) {
      nodes.push(
        startNode({
          index,
          port,
          url: `http://${host}:${port}/`,
          args: [
            ...serverFlags(parsed.passthrough),
            "--port",
            String(port),
            "--database",
            nodeDatabasePath(database, index, count),
          ],
          redisUrl,
          reportExit: (status) => {
            if (!stopping) {
              failed = true;
              console.error(
                `node ${index} (port ${port}) died: ${describe(status)}`,
              );
            }
          },
        }),
      );
    }
    const ready = await Promise.race([
      Promise.all(nodes.map((node) => waitReady(node, 30_000))),
      stopSignal,
    ]);
    if (ready === "signal") return 0;
    for (const node of nodes) {
      const health = ready[node.index];
      if (health) {
        console.log(
          `node ${node.index}: ${node.url}  ws://${host}:${node.port}/ws` +
            (health === "degraded"
              ? "  (degraded: Redis not reached yet)"
              : ""),
        );
      } else {
        failed = true;
        console.error(
          node.status === null
            ? `node ${node.index} (port ${node.port}) did not answer /healthz within 30 s`
            : `node ${node.index} (port ${node.port}) did not start`,
        );
      }
    }
    if (failed) {
      console.error("stopping the cluster: a node did not start");
      return 1;
    }
    console.log(`cluster: ${count} nodes up; Ctrl-C stops them`);
    const allDead = Promise.all(nodes.map((node) => node.exited)).then(() =>
      "every node exited" as const
    );
    if (await Promise.race([stopSignal, allDead]) !== "signal") failed = true;
  } finally {
    stopping = true;
    if (!await stopNodes(nodes, config.shutdownGraceSeconds)) failed = true;
    if (redisCluster) {
      await redisCluster.stop();
      console.error("Redis Cluster stopped");
    }
    if (redis) {
      await redis.stop();
      console.error("redis-server stopped");
    }
    for (const [signal, listener] of listeners) {
      Deno.removeSignalListener(signal, listener);
    }
  }
  return failed ? 1 : 0;
}

/** The server's flags for every node: all but `--database`, which each node gets its own of. */
function serverFlags(passthrough: readonly string[]): string[] {
  const flags: string[] = [];
  for (let i = 0; i < passthrough.length; i++) {
    const arg = passthrough[i] as string;
    if (arg === "--database") {
      i++;
      continue;
    }
    if (arg.startsWith("--database=")) continue;
    flags.push(arg);
  }
  return flags;
}

/** What {@linkcode startNode} needs. */
interface NodeSpec {
  index: number;
  port: number;
  url: string;
  /** Flags after `main.ts`. */
  args: string[];
  redisUrl: string;
  /** Called once the process exits. */
  reportExit: (status: Deno.CommandStatus) => void;
}

/** Spawns `main.ts` for one node, its output prefixed with its index. */
function startNode(spec: NodeSpec): Node {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-write",
      new URL("../main.ts", import.meta.url).pathname,
      ...spec.args,
    ],
    // The URL goes in the environment, not on the command line: it may hold
    // a password, and every process's command line is public.
    env: { REDIS_URL: spec.redisUrl },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const prefix = `[${spec.index}] `;
  const node: Node = {
    index: spec.index,
    port: spec.port,
    url: spec.url,
    child,
    status: null,
    exited: child.status.then((status) => {
      node.status = status;
      spec.reportExit(status);
      return status;
    }),
    output: Promise.all([
      pipeLines(child.stdout, prefix, (line) => console.log(line)),
      pipeLines(child.stderr, prefix, (line) => console.error(line)),
    ]).then(() => {}),
  };
  return node;
}

/** Sends `signal` to a node that still runs. */
function kill(node: Node, signal: Deno.Signal): void {
  if (node.status !== null) return;
  try {
    node.child.kill(signal);
  } catch {
    // exited meanwhile
  }
}

/**
 * `SIGTERM` to every node that runs, `SIGKILL` to any still running after
 * the grace plus 5 s; resolves when all have exited and their output is
 * copied, with `false` when one of them did not exit 0.
 */
async function stopNodes(
  nodes: readonly Node[],
  graceSeconds: number,
): Promise<boolean> {
  let clean = true;
  const running = nodes.filter((node) => node.status === null);
  if (running.length > 0) console.error(`stopping ${running.length} node(s)`);
  for (const node of running) kill(node, "SIGTERM");
  const timer = setTimeout(() => {
    for (const node of nodes) {
      if (node.status === null) {
        console.error(`node ${node.index} still running: SIGKILL`);
        kill(node, "SIGKILL");
      }
    }
  }, (graceSeconds + 5) * 1000);
  for (const node of running) {
    const status = await node.exited;
    if (!status.success) {
      clean = false;
      console.error(`node ${node.index} stopped: ${describe(status)}`);
    }
  }
  clearTimeout(timer);
  await Promise.all(nodes.map((node) => node.output));
  return clean;
}

if (import.meta.main) Deno.exit(await main());
