/**
 * `deno task cluster`: its command line, and the real thing: nodes that
 * answer `/healthz`, a local redis-server, and a `SIGTERM` that stops them
 * all and leaves no redis-server behind.
 *
 * Why this file is long: it tests one command, whose tests share the
 * `Cluster` child-process harness and the process checks at the top (free
 * ports, `listening`, no redis-server left running); its command line and
 * its real runs are read together.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  clusterHelp,
  DEFAULT_NODES,
  parseClusterArgs,
} from "../../tools/cluster_args.ts";
import { nodeDatabasePath, withoutPassword } from "../../tools/cluster_cli.ts";
import { startLocalRedis } from "../../tools/local_redis.ts";
import { childEnv } from "../support/helpers.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const CLI = new URL("../../tools/cluster_cli.ts", import.meta.url).pathname;
/** Longest the cluster may take to start or to stop in these tests. */
const PROCESS_MS = 30_000;
/** `--shutdown-grace` of the nodes in these tests. */
const GRACE_SECONDS = 1;

/** `deno task cluster …` as a child process, its output kept as lines. */
class Cluster implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  #exited = false;
  #pumps: Promise<void>;
  #wake: (() => void)[] = [];

  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["task", "cluster", ...args],
      cwd: ROOT,
      env: childEnv(env),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.status = this.child.status.then((status) => {
      this.#exited = true;
      this.#notify();
      return status;
    });
    this.#pumps = Promise.all([
      this.#pump(this.child.stdout, this.stdout),
      this.#pump(this.child.stderr, this.stderr),
    ]).then(() => {});
  }

  async #pump(stream: ReadableStream<Uint8Array<ArrayBuffer>>, into: string[]) {
    let buffered = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      into.push(...lines);
      this.#notify();
    }
    if (buffered) into.push(buffered);
    this.#notify();
  }

  #notify(): void {
    const waiters = this.#wake;
    this.#wake = [];
    for (const wake of waiters) wake();
  }

  /** The first line of `lines` (stdout) matching `pattern`, waiting for it. */
  async line(
    pattern: RegExp,
    lines: string[] = this.stdout,
    ms = PROCESS_MS,
  ): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      for (const line of lines) {
        const match = line.match(pattern);
        if (match) return match;
      }
      const left = deadline - Date.now();
      if (this.#exited || left <= 0) {
        throw new Error(
          `no line ${pattern} (${this.#exited ? "exited" : "timed out"}):\n` +
            `${this.stdout.join("\n")}\n${this.stderr.join("\n")}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Sends `signal`; resolves with the status and the time it took. */
  async stop(
    signal: Deno.Signal = "SIGTERM",
  ): Promise<{ status: Deno.CommandStatus; ms: number }> {
    const started = performance.now();
    this.child.kill(signal);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`still running after ${PROCESS_MS} ms`)),
        PROCESS_MS,
      );
    });
    try {
      const status = await Promise.race([this.status, late]);
      await this.#pumps;
      return { status, ms: performance.now() - started };
    } finally {
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#exited) {
      // SIGTERM first: a SIGKILL would leave the nodes and Redis running.
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => {
        try {
          this.child.kill("SIGKILL");
        } catch {
          // exited meanwhile
        }
      }, PROCESS_MS);
      await this.status;
      clearTimeout(timer);
    }
    await this.status;
    await this.#pumps;
  }
}

/** Command lines of the running processes that hold `text`. */
function processesWith(text: string): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`)
        .replaceAll("\0", " ");
      if (cmdline.includes(text)) found.push(`${entry.name}: ${cmdline}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** `true` when something accepts TCP connections on 127.0.0.1:`port`. */
async function listening(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * `deno task cluster` flags for two nodes on free ports that stop quickly,
 * logging at `logLevel` (the default, `info`, when absent).
 */
function twoNodesOnFreePorts(logLevel?: string): string[] {
  return [
    "--nodes",
    "2",
    "--port",
    "0",
    "--shutdown-grace",
    String(GRACE_SECONDS),
    ...(logLevel ? ["--log-level", logLevel] : []),
  ];
}

/** `/healthz` of the node at `url`: status and body. */
async function health(url: string): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${url}healthz`);
  return { status: response.status, body: await response.json() };
}

/** Two consecutive ports that were both free a moment ago. */
function consecutiveFreePorts(): number {
  for (let tries = 0; tries < 50; tries++) {
    const first = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = first.addr.port;
    try {
      if (port >= 65535) continue;
      const second = Deno.listen({ hostname: "127.0.0.1", port: port + 1 });
      second.close();
      return port;
    } catch {
      // taken: try another
    } finally {
      first.close();
    }
  }
  throw new Error("found no two consecutive free ports");
}

Deno.test("cluster: the command line splits into its own flags and the server's", () => {
  assert.deepEqual(parseClusterArgs([]), {
    help: false,
    nodes: DEFAULT_NODES,
    passthrough: [],
  });
  assert.deepEqual(
    parseClusterArgs([
      "--nodes",
      "3",
      "--port=9000",
      "--auth",
      "--admin-token",
      "--nodes",
      "--redis",
      "redis://r:6379",
      "--log-level=warn",
    ]),
    {
      help: false,
      nodes: 3,
      port: "9000",
      redis: "redis://r:6379",
      // The value of a server flag stays with it, even one that looks like a flag.
      passthrough: ["--auth", "--admin-token", "--nodes", "--log-level=warn"],
    },
  );
  assert.equal(parseClusterArgs(["--nodes=1", "-h"]).help, true);
  for (const bad of [["--nodes", "0"], ["--nodes", "x"], ["--nodes"]]) {
    assert.throws(() => parseClusterArgs(bad), /--nodes/);
  }
  assert.match(clusterHelp(), /--nodes N/);
});

Deno.test("cluster: a database file is one per node; :memory: is shared", () => {
  assert.equal(nodeDatabasePath(":memory:", 1, 3), ":memory:");
  assert.equal(nodeDatabasePath("data/chat.db", 0, 1), "data/chat.db");
  assert.equal(nodeDatabasePath("data/chat.db", 2, 3), "data/chat.node2.db");
  assert.equal(nodeDatabasePath("./d.x/chat", 1, 2), "./d.x/chat.node1");
  assert.equal(nodeDatabasePath(".chat", 1, 2), ".chat.node1");
});

Deno.test("cluster: a Redis password is never printed", () => {
  assert.equal(
    withoutPassword("redis://:s3cret@redis.internal:6379/0"),
    "redis://:***@redis.internal:6379/0",
  );
  assert.equal(withoutPassword("redis://r:6379"), "redis://r:6379");
});

Deno.test("cluster: a bad flag exits 2 before anything starts", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "--nodes", "2", "--no-such-flag"],
    cwd: ROOT,
    env: childEnv(),
    clearEnv: true,
    stdin: "null",
  }).output();
  assert.equal(code, 2);
  assert.equal(new TextDecoder().decode(stdout), "");
  assert.match(new TextDecoder().decode(stderr), /unknown flag --no-such-flag/);
});

Deno.test("cluster: --admin-token is refused with where to put it, exit 2, the secret not echoed", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "--nodes", "2", "--admin-token", "s3cret-in-ps"],
    cwd: ROOT,
    env: childEnv(),
    clearEnv: true,
    stdin: "null",
  }).output();
  assert.equal(code, 2);
  assert.equal(new TextDecoder().decode(stdout), "");
  const text = new TextDecoder().decode(stderr);
  assert.match(
    text,
    /^error: --admin-token is not accepted: .*set ADMIN_TOKEN in the environment or in \.env\n$/,
  );
  assert.ok(!text.includes("s3cret-in-ps"));
});

Deno.test("cluster: without REDIS_URL and without redis-server it says so and exits 1", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "--nodes", "2", "--port", "0"],
    cwd: ROOT,
    env: childEnv({ PATH: "/nonexistent" }),
    clearEnv: true,
    stdin: "null",
  }).output();
  assert.equal(code, 1);
  assert.match(
    new TextDecoder().decode(stderr),
    /REDIS_URL is not set and redis-server is not installed/,
  );
  assert.doesNotMatch(new TextDecoder().decode(stdout), /^node /m);
});

Deno.test("cluster: --port 0 starts two nodes and a redis-server; SIGTERM stops them all", async () => {
  await using cluster = new Cluster(twoNodesOnFreePorts());
  const redis = await cluster.line(
    /^redis: +redis:\/\/127\.0\.0\.1:(\d+) \(local redis-server, data in (\S+)\)$/,
  );
  const redisPort = Number(redis[1]);
  const redisDir = redis[2]!;
  await cluster.line(/^cluster: 2 nodes up/);
  const nodes = [
    await cluster.line(/^node 0: (http:\/\/127\.0\.0\.1:(\d+)\/) /),
    await cluster.line(/^node 1: (http:\/\/127\.0\.0\.1:(\d+)\/) /),
  ];
  const ports = nodes.map((match) => Number(match[2]));
  assert.notEqual(ports[0], ports[1]);
  for (const match of nodes) {
    const { status, body } = await health(match[1]!);
    assert.equal(status, 200);
    assert.equal((body as { status: string }).status, "ok");
  }
  assert.equal(processesWith(`redis-server 127.0.0.1:${redisPort}`).length, 1);
  // Each node's lines come prefixed with its index.
  assert.ok(cluster.stderr.some((line) => line.startsWith("[0] {")));
  assert.ok(cluster.stderr.some((line) => line.startsWith("[1] {")));

  const { status, ms } = await cluster.stop("SIGTERM");
  assert.equal(status.code, 0, cluster.stderr.join("\n"));
  assert.ok(ms < (GRACE_SECONDS + 5) * 1000, `stopped after ${ms} ms`);
  assert.deepEqual(processesWith(`redis-server 127.0.0.1:${redisPort}`), []);
  assert.equal(await listening(redisPort), false);
  for (const port of ports) assert.equal(await listening(port), false);
  assert.throws(() => Deno.statSync(redisDir), Deno.errors.NotFound);
  // Redis stops after every node has stopped.
  const lines = cluster.stderr;
  const redisStopped = lines.indexOf("redis-server stopped");
  assert.ok(redisStopped > 0);
  assert.ok(
    lines.findLastIndex((line) => /^\[\d\] .*"stopped"/.test(line)) <
      redisStopped,
  );
});

Deno.test("cluster: --port P uses P and P+1, and a given REDIS_URL is left running", async () => {
  await using redis = await startLocalRedis();
  const port = consecutiveFreePorts();
  {
    await using cluster = new Cluster(
      [
        "--nodes",
        "2",
        "--port",
        String(port),
        "--shutdown-grace",
        String(GRACE_SECONDS),
        "--log-level",
        "warn",
      ],
      { REDIS_URL: redis.url },
    );
    await cluster.line(/^redis: +redis:\/\/127\.0\.0\.1:\d+ \(REDIS_URL\)$/);
    await cluster.line(/^cluster: 2 nodes up/);
    for (const [index, expected] of [port, port + 1].entries()) {
      const match = await cluster.line(
        new RegExp(`^node ${index}: (http://127\\.0\\.0\\.1:(\\d+)/) `),
      );
      assert.equal(Number(match[2]), expected);
      assert.equal((await health(match[1]!)).status, 200);
    }
    const { status } = await cluster.stop("SIGTERM");
    assert.equal(status.code, 0, cluster.stderr.join("\n"));
  }
  assert.equal(await listening(redis.port), true);
  assert.equal(await listening(port), false);
  assert.equal(await listening(port + 1), false);
});

Deno.test("cluster: nodes up only once in sync; with Redis unreachable they start degraded", async () => {
  // A port nothing listens on: Redis cannot be reached.
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const redisPort = dead.addr.port;
  dead.close();
  await using cluster = new Cluster(twoNodesOnFreePorts("error"), {
    REDIS_URL: `redis://127.0.0.1:${redisPort}`,
  });
  await cluster.line(/^cluster: 2 nodes up/);
  for (const index of [0, 1]) {
    const match = await cluster.line(
      new RegExp(
        `^node ${index}: (http://127\\.0\\.0\\.1:\\d+/) .*\\(degraded: Redis not reached yet\\)$`,
      ),
    );
    const { status, body } = await health(match[1]!);
    assert.equal(status, 200);
    assert.equal((body as { status: string }).status, "degraded");
  }
  const { status } = await cluster.stop("SIGTERM");
  assert.equal(status.code, 0, cluster.stderr.join("\n"));
});

Deno.test("cluster: a node that dies is reported, and the exit status is 1", async () => {
  await using cluster = new Cluster(twoNodesOnFreePorts("warn"));
  await cluster.line(/^cluster: 2 nodes up/);
  const port = Number(
    (await cluster.line(/^node 1: http:\/\/[\d.]+:(\d+)\//))[1],
  );
  const found = processesWith(`main.ts`).filter((line) =>
    line.includes(` --port ${port} `)
  );
  assert.equal(found.length, 1, found.join("\n"));
  Deno.kill(Number(found[0]!.split(":")[0]), "SIGKILL");
  await cluster.line(
    new RegExp(`^node 1 \\(port ${port}\\) died: signal SIGKILL$`),
    cluster.stderr,
  );
  const { status } = await cluster.stop("SIGTERM");
  assert.equal(status.code, 1);
  assert.ok(cluster.stderr.includes("redis-server stopped"));
});

Deno.test("cluster: --redis-port is parsed, checked, and refused beside --redis", () => {
  assert.equal(parseClusterArgs(["--redis-port", "7001"]).redisPort, 7001);
  assert.equal(parseClusterArgs(["--redis-port=7001"]).redisPort, 7001);
  for (
    const bad of [["--redis-port", "0"], ["--redis-port", "x"], [
      "--redis-port",
      "70000",
    ], ["--redis-port"]]
  ) {
    assert.throws(() => parseClusterArgs(bad), /--redis-port/);
  }
  assert.throws(
    () =>
      parseClusterArgs(["--redis", "redis://r:6379", "--redis-port", "7001"]),
    /--redis-port .*with --redis none is started/,
  );
  assert.match(clusterHelp(), /--redis-port N/);
});

Deno.test("cluster: --redis-port N starts its redis-server on port N", async () => {
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const redisPort = free.addr.port;
  free.close();
  {
    await using cluster = new Cluster([
      ...twoNodesOnFreePorts("warn"),
      "--redis-port",
      String(redisPort),
    ]);
    await cluster.line(
      new RegExp(
        `^redis: +redis://127\\.0\\.0\\.1:${redisPort} \\(local redis-server`,
      ),
    );
    await cluster.line(/^cluster: 2 nodes up/);
    assert.equal(await listening(redisPort), true);
    const { status } = await cluster.stop("SIGTERM");
    assert.equal(status.code, 0, cluster.stderr.join("\n"));
  }
  assert.equal(await listening(redisPort), false);
});

Deno.test("cluster: --redis-port with REDIS_URL set exits 2", async () => {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "--redis-port", "7001"],
    cwd: ROOT,
    env: childEnv({ REDIS_URL: "redis://127.0.0.1:6379" }),
    clearEnv: true,
    stdin: "null",
  }).output();
  assert.equal(code, 2);
  assert.match(
    new TextDecoder().decode(stderr),
    /--redis-port .*with REDIS_URL set none is started/,
  );
});

Deno.test("cluster: --redis-cluster 3 starts a local Redis Cluster for the nodes; SIGTERM stops it all", async () => {
  await using cluster = new Cluster([
    ...twoNodesOnFreePorts(),
    "--redis-cluster",
    "3",
  ]);
  const redis = await cluster.line(
    /^redis: +(\S+) \(local Redis Cluster, 3 masters and 3 replicas, data in (\S+)\)$/,
  );
  const ports = redis[1]!.split(",").map((url) => Number(new URL(url).port));
  assert.equal(ports.length, 6);
  const dir = redis[2]!;
  await cluster.line(/^cluster: 2 nodes up/);
  const node = await cluster.line(/^node 0: (http:\/\/127\.0\.0\.1:(\d+)\/) /);
  const { body } = await health(node[1]!);
  assert.equal((body as { status: string }).status, "ok");
  const { status } = await cluster.stop("SIGTERM");
  assert.equal(status.code, 0, cluster.stderr.join("\n"));
  assert.ok(cluster.stderr.includes("Redis Cluster stopped"));
  for (const port of ports) assert.equal(await listening(port), false);
  assert.throws(() => Deno.statSync(dir), Deno.errors.NotFound);
});

Deno.test("cluster: --redis-cluster takes 3 to 16 masters", () => {
  assert.equal(parseClusterArgs(["--redis-cluster", "3"]).redisCluster, 3);
  assert.throws(() => parseClusterArgs(["--redis-cluster", "2"]), /3 to 16/);
});
