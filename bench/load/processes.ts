/**
 * The processes of `deno task bench`: a server under test
 * ({@linkcode ServerProcess}: the chat server, the baseline, or cluster nodes
 * with their local redis-server), the load generators ({@linkcode Generator},
 * driven over stdin/stdout JSON lines, see `control.ts`), a session that
 * starts and stops them all, and how clients are dealt to generators and
 * rooms. It measures nothing (`measure.ts` does) and prints only a failed
 * exit.
 *
 * Why this file is long: `session` starts and stops the servers, their
 * redis-server or Redis Cluster and the generators as one unit (nothing is
 * left running when a scenario fails), so the classes it starts stay with
 * it, and dealing clients follows the same `Deployment`.
 *
 * @module
 */
import type { ClientSpec, Command, ConnectReply, Reply } from "./control.ts";
import { type LocalRedis, startLocalRedis } from "../../tools/local_redis.ts";
import {
  type LocalRedisCluster,
  startLocalRedisCluster,
} from "../../tools/local_redis_cluster.ts";
import { type BenchOptions, type LoadContext, ROOT } from "./context.ts";
import { cpuSeconds } from "./proc.ts";
import { log } from "./report.ts";

/** A server under test, as a subprocess. */
export class ServerProcess {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  readonly port: number;
  readonly pid: number;
  readonly logTail: string[] = [];

  private constructor(name: string, child: Deno.ChildProcess, port: number) {
    this.name = name;
    this.child = child;
    this.port = port;
    this.pid = child.pid;
  }

  /** Starts `args` and waits for its `listening` line on stderr. */
  static async start(
    name: string,
    cwd: string,
    args: string[],
    env: Record<string, string> = {},
  ): Promise<ServerProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      // The load comes from a few loopback addresses, many sockets each, all
      // opening at once: the per-address and sign-in caps (issue 13) are off
      // so the figures stay comparable. An older build ignores these.
      env: {
        MAX_CONNECTIONS_PER_IP: "0",
        MAX_UNAUTHENTICATED_PER_IP: "0",
        MAX_UNAUTHENTICATED: "0",
        ...env,
      },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const port = Promise.withResolvers<number>();
    const tail: string[] = [];
    // Keep reading stderr for the whole run: a full pipe would stall the server.
    (async () => {
      let buffered = "";
      for await (
        const chunk of child.stderr.pipeThrough(new TextDecoderStream())
      ) {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          tail.push(line);
          if (tail.length > 50) tail.shift();
          if (line.includes('"listening"')) {
            try {
              const parsed = JSON.parse(line);
              const found = parsed.port ?? Number(
                String(parsed.url).match(/:(\d+)\/?$/)?.[1],
              );
              port.resolve(Number(found));
            } catch { /* not JSON after all */ }
          }
        }
      }
      port.reject(
        new Error(`${name} exited before listening:\n${tail.join("\n")}`),
      );
    })();
    const timer = setTimeout(
      () => port.reject(new Error(`${name} did not listen in 30 s`)),
      30_000,
    );
    try {
      const server = new ServerProcess(name, child, await port.promise);
      server.logTail.push(...tail);
      return server;
    } finally {
      clearTimeout(timer);
    }
  }

  /** `true` while the process runs. */
  alive(): boolean {
    return cpuSeconds(this.pid) !== null &&
      !Deno.readTextFileSync(`/proc/${this.pid}/stat`).includes(") Z ");
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<Deno.CommandStatus> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* gone already */ }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone already */ }
    }, graceMs);
    const status = await this.child.status;
    clearTimeout(timer);
    return status;
  }
}

/** A command before it gets its `id`. */
type WithoutId<T> = T extends unknown ? Omit<T, "id"> : never;

/** One load generator process. */
export class Generator {
  readonly child: Deno.ChildProcess;
  readonly pid: number;
  readonly index: number;
  #nextId = 1;
  #pending = new Map<number, (reply: Reply) => void>();
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #encoder = new TextEncoder();

  constructor(index: number) {
    this.index = index;
    this.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-read",
        `${ROOT}bench/load/generator.ts`,
      ],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.pid = this.child.pid;
    this.#writer = this.child.stdin.getWriter();
    const stdout = this.child.stdout;
    (async () => {
      let buffered = "";
      for await (
        const chunk of stdout.pipeThrough(new TextDecoderStream())
      ) {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          const reply = JSON.parse(line) as Reply;
          this.#pending.get(reply.id)?.(reply);
          this.#pending.delete(reply.id);
        }
      }
      for (const [id, resolve] of this.#pending) {
        resolve({ id, error: `generator ${index} exited` });
      }
      this.#pending.clear();
    })();
  }

  /** Sends a command (its `id` is filled in) and waits for the reply. */
  async call<R extends Reply>(command: WithoutId<Command>): Promise<R> {
    const id = this.#nextId++;
    const { promise, resolve } = Promise.withResolvers<Reply>();
    this.#pending.set(id, resolve);
    await this.#writer.write(
      this.#encoder.encode(JSON.stringify({ ...command, id }) + "\n"),
    );
    const reply = await promise;
    if ("error" in reply) {
      throw new Error(`generator ${this.index}: ${reply.error}`);
    }
    return reply as R;
  }

  /** Closes its clients and waits for it to exit. */
  async stop(): Promise<void> {
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    try {
      await this.call({ cmd: "close" });
    } catch { /* exiting */ }
    await this.child.status;
    clearTimeout(timer);
  }
}

/** Source addresses for generator `index`: four of its own in 127.0.0.0/8. */
export function sourceAddresses(index: number): string[] {
  return [0, 1, 2, 3].map((j) => `127.0.0.${10 + index * 4 + j}`);
}

/** The servers the benchmark knows. */
export type ServerKind =
  | "chat"
  | "chat-sqlite"
  | "baseline"
  | "baseline-framed"
  | "chat-redis"
  | "chat-redis-cluster";

/** Whether `kind` is chat nodes on Redis (standalone or a Redis Cluster). */
export function onRedis(kind: ServerKind): boolean {
  return kind === "chat-redis" || kind === "chat-redis-cluster";
}

/** A server to start: its kind, extra flags and nodes. */
export interface ServerSetup {
  kind: ServerKind;
  /** Extra flags for the chat server. */
  extra?: string[];
  /** Extra environment for the chat server (secrets such as `ADMIN_TOKEN`). */
  env?: Record<string, string>;
  /**
   * `chat-redis`: nodes sharing one local redis-server; `chat-redis-cluster`:
   * nodes sharing a local Redis Cluster of 3 masters and 3 replicas (default 1).
   */
  nodes?: number;
}

/** The servers of one session: one process, or cluster nodes and their Redis. */
export interface Deployment {
  /** What the output calls it: the kind, and `×N` for a cluster. */
  name: string;
  nodes: ServerProcess[];
  /** The redis-server the nodes share, when they do. */
  redis: LocalRedis | null;
  /** The Redis Cluster they share, when they do. */
  redisCluster: LocalRedisCluster | null;
  /**
   * Every redis-server of the deployment: the standalone one, or the
   * cluster's masters (one per shard, in slot order) then its replicas.
   */
  redisPids: number[];
  /** How many of `redisPids` are shards (masters): the first ones. */
  shards: number;
}

/** What the output calls a setup. */
export function setupName(setup: { kind: ServerKind; nodes?: number }): string {
  return onRedis(setup.kind)
    ? `${setup.kind} ×${setup.nodes ?? 1}`
    : setup.kind;
}

/** `ws://` URL of every node of `deployment`, in order. */
export function nodeUrls(deployment: Deployment): string[] {
  return deployment.nodes.map((node) => `ws://127.0.0.1:${node.port}/ws`);
}

/**
 * The pid of the redis-server at `url`, from its own `INFO server`: the
 * harness reads its CPU from `/proc/<pid>/stat` as it does the servers'.
 */
async function redisPid(url: string): Promise<number | null> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) || 6379 });
  try {
    await conn.write(new TextEncoder().encode("INFO server\r\n"));
    const decoder = new TextDecoder();
    let text = "";
    const buffer = new Uint8Array(16384);
    const deadline = Date.now() + 5000;
    // The reply is one bulk string; its `process_id:` line is all we need.
    let pid: string | undefined;
    while (pid === undefined && Date.now() < deadline) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
      pid = text.match(/process_id:(\d+)\r\n/)?.[1];
    }
    return pid === undefined ? null : Number(pid);
  } finally {
    conn.close();
  }
}

/** Starts one server of `setup` (one node of a cluster). */
async function startServer(
  { options, tmp }: LoadContext,
  setup: ServerSetup,
  name = setup.kind as string,
): Promise<ServerProcess> {
  if (setup.kind === "baseline" || setup.kind === "baseline-framed") {
    return await ServerProcess.start(setup.kind, ROOT, [
      "run",
      "--allow-net",
      `${ROOT}bench/load/baseline_server.ts`,
      "--port",
      "0",
      ...(setup.kind === "baseline-framed" ? ["--framed"] : []),
    ]);
  }
  const database = setup.kind === "chat-sqlite"
    ? `${tmp}/bench-${crypto.randomUUID()}.db`
    : ":memory:";
  const prof = options.cpuProfDir
    ? ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfDir}`]
    : [];
  return await ServerProcess.start(name, options.serverDir, [
    "run",
    "--allow-net",
    "--allow-env",
    "--allow-read",
    "--allow-write",
    ...prof,
    `${options.serverDir}main.ts`,
    "--port",
    "0",
    "--database",
    database,
    "--rate-limit",
    "0",
    "--max-connections",
    "20000",
    "--shutdown-grace",
    "5",
    ...(setup.extra ?? []),
  ], setup.env);
}

/**
 * Starts the server of `setup`: one process, or for `chat-redis` a fresh
 * local redis-server and its nodes (each with `--redis`), for
 * `chat-redis-cluster` a fresh local Redis Cluster and its nodes.
 */
async function startDeployment(
  context: LoadContext,
  setup: ServerSetup,
): Promise<Deployment> {
  const name = setupName(setup);
  if (setup.kind === "chat-redis-cluster") {
    return await startOnCluster(context, setup);
  }
  if (setup.kind !== "chat-redis") {
    const server = await startServer(context, setup);
    return {
      name,
      nodes: [server],
      redis: null,
      redisCluster: null,
      redisPids: [],
      shards: 0,
    };
  }
  const redis = await startLocalRedis({
    dir: await Deno.makeTempDir({ dir: context.tmp, prefix: "redis-" }),
    // As a production Redis would run (and as the cluster figures were taken).
    appendfsync: "everysec",
  });
  const nodes: ServerProcess[] = [];
  try {
    const pid = await redisPid(redis.url);
    const count = setup.nodes ?? 1;
    for (let i = 0; i < count; i++) {
      nodes.push(
        await startServer(
          context,
          { ...setup, extra: [...setup.extra ?? [], "--redis", redis.url] },
          count > 1 ? `${name}/${i}` : name,
        ),
      );
    }
    return {
      name,
      nodes,
      redis,
      redisCluster: null,
      redisPids: pid === null ? [] : [pid],
      shards: pid === null ? 0 : 1,
    };
  } catch (error) {
    await Promise.all(nodes.map((node) => node.stop()));
    await redis.stop();
    throw error;
  }
}

/** Starts a local Redis Cluster (3 masters, 3 replicas) and the nodes on it. */
async function startOnCluster(
  context: LoadContext,
  setup: ServerSetup,
): Promise<Deployment> {
  const name = setupName(setup);
  const redisCluster = await startLocalRedisCluster({
    dir: await Deno.makeTempDir({ dir: context.tmp, prefix: "redis-" }),
  });
  const nodes: ServerProcess[] = [];
  try {
    const topology = await redisCluster.topology();
    const masters = topology.filter((node) => node.master)
      .sort((a, b) => (a.slots[0]?.[0] ?? 0) - (b.slots[0]?.[0] ?? 0));
    const replicas = topology.filter((node) => !node.master);
    const pids = [...masters, ...replicas].map((node) =>
      redisCluster.node(node.port).pid ?? 0
    );
    const count = setup.nodes ?? 1;
    for (let i = 0; i < count; i++) {
      nodes.push(
        await startServer(
          context,
          {
            ...setup,
            extra: [...setup.extra ?? [], "--redis", redisCluster.url],
          },
          count > 1 ? `${name}/${i}` : name,
        ),
      );
    }
    return {
      name,
      nodes,
      redis: null,
      redisCluster,
      redisPids: pids,
      shards: masters.length,
    };
  } catch (error) {
    await Promise.all(nodes.map((node) => node.stop()));
    await redisCluster.stop();
    throw error;
  }
}

/** Runs `fn` with a fresh server and fresh generators, then stops them all. */
export async function session<T>(
  context: LoadContext,
  setup: ServerSetup,
  generatorCount: number,
  fn: (deployment: Deployment, generators: Generator[]) => Promise<T>,
): Promise<T> {
  const deployment = await startDeployment(context, setup);
  const generators = Array.from(
    { length: generatorCount },
    (_, i) => new Generator(i),
  );
  try {
    return await fn(deployment, generators);
  } finally {
    await Promise.all(generators.map((g) => g.stop()));
    await Promise.all(deployment.nodes.map(async (server) => {
      const status = await server.stop();
      if (!status.success && status.signal !== "SIGTERM") {
        log(`  ${server.name} exited with ${JSON.stringify(status)}`);
      }
    }));
    await deployment.redis?.stop();
    await deployment.redisCluster?.stop();
  }
}

/**
 * Connects each generator's clients, to the first node unless a client
 * names its own; fails when any did not connect.
 */
export async function connectAll(
  deployment: Deployment,
  generators: Generator[],
  specs: ClientSpec[][],
  concurrency = 64,
): Promise<{ connected: number; failed: number; seconds: number }> {
  const started = performance.now();
  const replies = await Promise.all(
    generators.map((g, i) =>
      g.call<ConnectReply>({
        cmd: "connect",
        url: nodeUrls(deployment)[0]!,
        clients: specs[i] ?? [],
        localAddresses: sourceAddresses(i),
        concurrency,
        timeoutMs: 60_000,
      })
    ),
  );
  const connected = replies.reduce((s, r) => s + r.connected, 0);
  const failed = replies.reduce((s, r) => s + r.failed, 0);
  if (failed > 0) {
    const first = replies.find((r) => r.firstError)?.firstError;
    throw new Error(
      `${deployment.name}: ${failed} clients failed to connect (${first})`,
    );
  }
  return {
    connected,
    failed,
    seconds: Math.round((performance.now() - started) / 100) / 10,
  };
}

/**
 * How the fan-out and direct-message clients (`--clients` in rooms of
 * `--room-size`) are dealt: to how many generators, each one's clients
 * (named `prefix` and a number), and each one's share of the rate.
 */
export function roomLoad(
  options: BenchOptions,
  prefix: string,
): {
  generators: number;
  specs: ClientSpec[][];
  total: number;
  shares: number[];
} {
  const generators = Math.min(
    options.generators,
    Math.ceil(options.clients / options.roomSize),
  );
  const specs = roomClients(
    options.clients,
    options.roomSize,
    generators,
    prefix,
  );
  const total = specs.reduce((s, l) => s + l.length, 0);
  const shares = specs.map((l) => l.length / total);
  return { generators, specs, total, shares };
}

/**
 * Clients in rooms of `roomSize`, each room wholly in one generator (its
 * members read one clock). With several `urls` (cluster nodes), a room's
 * members take them in turn, so that every room has members on every node.
 */
export function roomClients(
  clients: number,
  roomSize: number,
  generators: number,
  prefix: string,
  urls: string[] = [],
): ClientSpec[][] {
  const specs: ClientSpec[][] = Array.from({ length: generators }, () => []);
  const rooms = Math.ceil(clients / roomSize);
  for (let r = 0; r < rooms; r++) {
    const g = r % generators;
    for (let i = r * roomSize; i < Math.min(clients, (r + 1) * roomSize); i++) {
      const spec: ClientSpec = { name: `${prefix}${i}`, room: `room${r}` };
      if (urls.length > 1) spec.url = urls[(i - r * roomSize) % urls.length];
      specs[g]!.push(spec);
    }
  }
  return specs;
}
