/**
 * `deno task bench`: the project's benchmark. It starts the chat server and
 * the baseline (`bench/baseline_server.ts`) one after the other as
 * subprocesses, drives each with load generator processes
 * (`bench/load.ts`, coordinated over stdin/stdout JSON lines), reads server
 * CPU and memory from `/proc`, prints a table and writes every figure to
 * `bench/results/<timestamp>.json`.
 *
 * ```sh
 * deno task bench                              # everything (about 15 minutes)
 * deno task bench --scenario fanout --quick    # one scenario, short steps
 * deno task bench --scenario fanout,dm --clients 200 --quick
 * deno task bench --scenario cluster --quick --clients 100 --cluster-clients 2000
 * deno task bench --help
 * ```
 *
 * Scenarios: `fanout`, `dm`, `sqlite` (the fan-out ladder again with a
 * SQLite file), `idle`, `overload`, `scale`, `cluster` (the fan-out ladder on
 * one and on two nodes sharing a local redis-server, then 30 000 clients
 * across two nodes). See `docs/performance.md`.
 *
 * @module
 */
import type {
  ClientSpec,
  Command,
  ConnectReply,
  Phase,
  Reply,
  RunReply,
  WindowReport,
} from "./control.ts";
import { type LocalRedis, startLocalRedis } from "../tools/local_redis.ts";
import { Histogram } from "./histogram.ts";
import {
  cpuSeconds,
  loadAverage,
  machineInfo,
  machineTicks,
  rssBytes,
} from "./proc.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MB = 1024 * 1024;

/** Every scenario, in the order they run. */
export const SCENARIOS = [
  "fanout",
  "dm",
  "sqlite",
  "idle",
  "overload",
  "scale",
  "cluster",
] as const;

/** A scenario's name. */
export type Scenario = typeof SCENARIOS[number];

/** What the command line sets. */
export interface BenchOptions {
  scenarios: Scenario[];
  quick: boolean;
  /** Generator processes for the message scenarios. */
  generators: number;
  /** Clients of the fan-out and direct-message scenarios. */
  clients: number;
  roomSize: number;
  contentChars: number;
  idleClients: number;
  scaleClients: number;
  /** Users that the scale clients belong to (several connections each); `0`: one user per client. */
  scaleUsers: number;
  /** Connections of the cluster scenario's one room, spread over its two nodes. */
  clusterClients: number;
  /** Seconds measured per rate (after a warm-up). */
  stepSeconds: number;
  warmupSeconds: number;
  /** p99 at or under this passes, in milliseconds. */
  p99LimitMs: number;
  /** Overload: seconds at twice the ceiling. */
  overloadSeconds: number;
  /** Rates to measure instead of the ladder (messages/s per 1000 clients). */
  rates: number[] | null;
  /** Fan-out ceiling (messages/s) for `overload` when `fanout` does not run. */
  ceiling: number | null;
  /**
   * `fanout` and `dm` climb one server's ladder after the other's, instead of
   * measuring each rate on every server in turn.
   */
  sequential: boolean;
  /** Servers to measure; `baseline-framed` runs in `fanout` and `dm` only. */
  servers: ("chat" | "baseline" | "baseline-framed")[];
  /** Directory for the chat server's `--cpu-prof` output. */
  cpuProfDir: string | null;
  /** Directory holding the chat server's `main.ts` (a snapshot, say). */
  serverDir: string;
  /** What the results call that server (a commit, say). */
  serverLabel: string | null;
  out: string;
}

const HELP = `deno task bench [options]

  --scenario LIST      comma-separated: ${SCENARIOS.join(", ")} (default: all)
  --quick              short steps (2 s), coarse rate ladder, smaller idle/scale counts
  --generators N       load generator processes (default 2)
  --clients N          clients of fanout/dm (default 1000)
  --room-size N        clients per room (default 100)
  --content N          characters of content (default 64)
  --idle-clients N     connections of the idle memory scenario (default 10000)
  --scale-clients N    connections of the scale scenario (default 15000)
  --scale-users N      users they belong to, several connections each (default 150; 0 = one each)
  --cluster-clients N  connections in one room over two cluster nodes (default 30000; quick 4000)
  --step-seconds S     seconds measured per rate (default 8; quick 2)
  --overload-seconds S seconds at twice the ceiling (default 20; quick 8)
  --rates LIST         measure these rates (msg/s per 1000 clients) instead of the ladder
  --ceiling N          fan-out ceiling in messages/s, for overload without fanout
  --servers LIST       chat,baseline,baseline-framed (default chat,baseline);
                       baseline-framed (a diagnostic: the baseline sending the
                       chat server's frames) runs in fanout and dm only
  --sequential         fanout/dm: climb each server's ladder after the other's
                       (default: every rate on every server in turn, so that
                       a machine whose speed drifts moves them alike)
  --cpu-prof DIR       run the chat server with --cpu-prof into DIR
  --server-dir DIR     run the chat server from DIR (default: this checkout)
  --server-label TEXT  name that server in the results (default: git HEAD of this checkout)
  --out DIR            results directory (default bench/results)
  --report FILE        print the tables of a results file again
`;

/** Parses the command line; throws on an unknown flag. */
export function parseOptions(args: string[]): BenchOptions {
  const quick = args.includes("--quick");
  const options: BenchOptions = {
    scenarios: [...SCENARIOS],
    quick,
    generators: 2,
    clients: 1000,
    roomSize: 100,
    contentChars: 64,
    idleClients: quick ? 2000 : 10000,
    scaleClients: quick ? 3000 : 15000,
    scaleUsers: 150,
    clusterClients: quick ? 4000 : 30000,
    stepSeconds: quick ? 2 : 8,
    warmupSeconds: quick ? 0.5 : 1,
    p99LimitMs: 50,
    overloadSeconds: quick ? 8 : 20,
    ceiling: null,
    rates: null,
    servers: ["chat", "baseline"],
    sequential: false,
    cpuProfDir: null,
    serverDir: ROOT,
    serverLabel: null,
    out: `${ROOT}bench/results`,
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new Error(`${arg} takes a value`);
      return v;
    };
    const number = () => {
      const v = Number(value());
      if (!Number.isFinite(v) || v < 0) {
        throw new Error(`${arg} takes a number`);
      }
      return v;
    };
    switch (arg) {
      case "--quick":
        break;
      case "--sequential":
        options.sequential = true;
        break;
      case "--scenario":
      case "--scenarios": {
        const names = value().split(",").map((s) => s.trim()).filter(Boolean);
        for (const name of names) {
          if (!(SCENARIOS as readonly string[]).includes(name)) {
            throw new Error(`unknown scenario ${name}`);
          }
        }
        options.scenarios = SCENARIOS.filter((s) => names.includes(s));
        break;
      }
      case "--generators":
        options.generators = Math.max(1, Math.floor(number()));
        break;
      case "--clients":
        options.clients = Math.floor(number());
        break;
      case "--room-size":
        options.roomSize = Math.max(1, Math.floor(number()));
        break;
      case "--content":
        options.contentChars = Math.max(32, Math.floor(number()));
        break;
      case "--idle-clients":
        options.idleClients = Math.floor(number());
        break;
      case "--scale-clients":
        options.scaleClients = Math.floor(number());
        break;
      case "--scale-users":
        options.scaleUsers = Math.floor(number());
        break;
      case "--cluster-clients":
        options.clusterClients = Math.floor(number());
        break;
      case "--step-seconds":
        options.stepSeconds = number();
        break;
      case "--overload-seconds":
        options.overloadSeconds = number();
        break;
      case "--rates":
        options.rates = value().split(",").map(Number).filter((r) => r > 0);
        break;
      case "--ceiling":
        options.ceiling = number();
        break;
      case "--servers": {
        const names = value().split(",");
        options.servers = (["chat", "baseline", "baseline-framed"] as const)
          .filter((s) => names.includes(s));
        break;
      }
      case "--cpu-prof":
        options.cpuProfDir = value();
        break;
      case "--server-dir":
        options.serverDir = value().replace(/\/?$/, "/");
        break;
      case "--server-label":
        options.serverLabel = value();
        break;
      case "--out":
        options.out = value();
        break;
      case "--help":
      case "-h":
        console.log(HELP);
        Deno.exit(0);
        break;
      default:
        throw new Error(`unknown option ${arg}\n\n${HELP}`);
    }
  }
  return options;
}

// ---------------------------------------------------------------------------
// Processes

/** A server under test, as a subprocess. */
class ServerProcess {
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
class Generator {
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
      args: ["run", "--allow-net", "--allow-read", `${ROOT}bench/load.ts`],
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
function sourceAddresses(index: number): string[] {
  return [0, 1, 2, 3].map((j) => `127.0.0.${10 + index * 4 + j}`);
}

// ---------------------------------------------------------------------------
// Measuring

/** CPU and time at one instant. */
interface Snapshot {
  at: number;
  /** CPU seconds of each server process (one, or each node of a cluster). */
  nodes: number[];
  /** CPU seconds of the redis-server, `0` without one. */
  redis: number;
  generators: number[];
  machine: ReturnType<typeof machineTicks>;
}

function snapshot(deployment: Deployment, generators: Generator[]): Snapshot {
  return {
    at: performance.now(),
    nodes: deployment.nodes.map((node) => cpuSeconds(node.pid) ?? 0),
    redis: deployment.redisPid === null
      ? 0
      : cpuSeconds(deployment.redisPid) ?? 0,
    generators: generators.map((g) => cpuSeconds(g.pid) ?? 0),
    machine: machineTicks(),
  };
}

/** CPU use between two snapshots, in percent of one core. */
function cpuBetween(a: Snapshot, b: Snapshot) {
  const seconds = (b.at - a.at) / 1000;
  const pct = (x: number) => Math.round(x / seconds * 1000) / 10;
  const nodePct = b.nodes.map((n, i) => pct(n - (a.nodes[i] ?? 0)));
  const serverPct = Math.round(nodePct.reduce((x, y) => x + y, 0) * 10) / 10;
  const redisPct = pct(b.redis - a.redis);
  const generatorPct = b.generators.map((g, i) =>
    pct(g - (a.generators[i] ?? 0))
  );
  const ticks = Math.max(1, b.machine.total - a.machine.total);
  const cores = navigator.hardwareConcurrency;
  const machineBusyPct =
    Math.round((b.machine.busy - a.machine.busy) / ticks * 1000) / 10;
  // In percent of one core, as the process figures.
  const irqPct =
    Math.round((b.machine.irq - a.machine.irq) / ticks * cores * 1000) / 10;
  const otherPct = Math.max(
    0,
    Math.round(
      (machineBusyPct * cores - irqPct - serverPct - redisPct -
        generatorPct.reduce((x, y) => x + y, 0)) * 10,
    ) / 10,
  );
  return {
    serverPct,
    nodePct,
    redisPct,
    generatorPct,
    machineBusyPct,
    irqPct,
    otherPct,
  };
}

/**
 * Waits until the server and the generators are idle (under 10% of a core
 * for half a second), so that a backlog left by a failed rate does not
 * spill into the next one. Gives up after `maxMs`; returns the wait.
 */
async function settle(
  deployment: Deployment,
  generators: Generator[],
  maxMs = 30_000,
): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < maxMs) {
    const a = snapshot(deployment, generators);
    await sleep(500);
    const cpu = cpuBetween(a, snapshot(deployment, generators));
    if (
      cpu.nodePct.every((n) => n < 10) && cpu.redisPct < 10 &&
      cpu.generatorPct.every((g) => g < 10)
    ) break;
  }
  return Math.round(performance.now() - started);
}

/** Samples the RSS of processes every 250 ms: their sum, and each one's. */
class RssSampler {
  /** Highest sum. */
  max = 0;
  /** Highest of each process, in the order given. */
  maxEach: number[];
  samples: [number, number][] = [];
  #timer: ReturnType<typeof setInterval>;
  #start = performance.now();

  constructor(pids: number[]) {
    this.maxEach = pids.map(() => 0);
    const sample = () => {
      let rss = 0;
      let seen = false;
      pids.forEach((pid, i) => {
        const one = rssBytes(pid);
        if (one === null) return;
        seen = true;
        rss += one;
        this.maxEach[i] = Math.max(this.maxEach[i] ?? 0, one);
      });
      if (!seen) return;
      this.max = Math.max(this.max, rss);
      this.samples.push([
        Math.round(performance.now() - this.#start),
        Math.round(rss / MB * 10) / 10,
      ]);
    };
    sample();
    this.#timer = setInterval(sample, 250);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/** Latency figures in milliseconds. */
interface Latency {
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  meanMs: number;
  count: number;
}

function latency(h: Histogram): Latency {
  const ms = (us: number) => Math.round(us / 10) / 100;
  return {
    p50Ms: ms(h.percentile(50)),
    p90Ms: ms(h.percentile(90)),
    p99Ms: ms(h.percentile(99)),
    p999Ms: ms(h.percentile(99.9)),
    maxMs: ms(h.max),
    meanMs: ms(h.mean()),
    count: h.count,
  };
}

/** The replies of every generator to one run, added up. */
interface Merged {
  sent: number;
  expected: number;
  received: number;
  expectedAlive: number;
  receivedAlive: number;
  echoes: number;
  errors: number;
  stale: number;
  outOfOrder: number;
  duplicates: number;
  alive: number;
  closes: Record<string, number>;
  hist: Histogram;
  windows: { sent: number; received: number; hist: Histogram }[];
  receivedByWindow: number[];
  maxLagMs: number;
  sendMs: number;
  drainMs: number;
  generatorCpuSeconds: number[];
}

function merge(replies: RunReply[]): Merged {
  const merged: Merged = {
    sent: 0,
    expected: 0,
    received: 0,
    expectedAlive: 0,
    receivedAlive: 0,
    echoes: 0,
    errors: 0,
    stale: 0,
    outOfOrder: 0,
    duplicates: 0,
    alive: 0,
    closes: {},
    hist: new Histogram(),
    windows: [],
    receivedByWindow: [],
    maxLagMs: 0,
    sendMs: 0,
    drainMs: 0,
    generatorCpuSeconds: [],
  };
  for (const r of replies) {
    merged.sent += r.sent;
    merged.expected += r.expected;
    merged.received += r.received;
    merged.expectedAlive += r.expectedAlive;
    merged.receivedAlive += r.receivedAlive;
    merged.echoes += r.echoes;
    merged.errors += r.errors;
    merged.stale += r.stale;
    merged.outOfOrder += r.outOfOrder;
    merged.duplicates += r.duplicates;
    merged.alive += r.alive;
    for (const [code, n] of Object.entries(r.closes)) {
      merged.closes[code] = (merged.closes[code] ?? 0) + n;
    }
    merged.hist.merge(r.hist);
    r.windows.forEach((w: WindowReport, i: number) => {
      merged.windows[i] ??= { sent: 0, received: 0, hist: new Histogram() };
      merged.windows[i]!.sent += w.sent;
      merged.windows[i]!.received += w.received;
      merged.windows[i]!.hist.merge(w.hist);
    });
    r.receivedByWindow.forEach((n, i) => {
      merged.receivedByWindow[i] = (merged.receivedByWindow[i] ?? 0) + n;
    });
    merged.maxLagMs = Math.max(merged.maxLagMs, r.maxLagMs);
    merged.sendMs = Math.max(merged.sendMs, r.sendMs);
    merged.drainMs = Math.max(merged.drainMs, r.drainMs);
    merged.generatorCpuSeconds.push(Math.round(r.cpuSeconds * 100) / 100);
  }
  return merged;
}

/** Deliveries per second between `fromMs` and `toMs` after the start, by receipt time. */
function deliveryRate(
  receivedByWindow: number[],
  windowMs: number,
  fromMs: number,
  toMs: number,
): number {
  const first = Math.ceil(fromMs / windowMs);
  const last = Math.floor(toMs / windowMs);
  let sum = 0;
  for (let i = first; i < last; i++) sum += receivedByWindow[i] ?? 0;
  const seconds = (last - first) * windowMs / 1000;
  return seconds > 0 ? Math.round(sum / seconds) : 0;
}

// ---------------------------------------------------------------------------
// Servers

type ServerKind =
  | "chat"
  | "chat-sqlite"
  | "baseline"
  | "baseline-framed"
  | "chat-redis";

interface ServerSetup {
  kind: ServerKind;
  /** Extra flags for the chat server. */
  extra?: string[];
  /** `chat-redis`: nodes sharing one local redis-server (default 1). */
  nodes?: number;
}

/** The servers of one session: one process, or cluster nodes and their Redis. */
interface Deployment {
  /** What the output calls it: the kind, and `×N` for a cluster. */
  name: string;
  nodes: ServerProcess[];
  /** The redis-server the nodes share, when they do. */
  redis: LocalRedis | null;
  redisPid: number | null;
}

/** What the output calls a setup. */
function setupName(setup: { kind: ServerKind; nodes?: number }): string {
  return setup.kind === "chat-redis"
    ? `${setup.kind} ×${setup.nodes ?? 1}`
    : setup.kind;
}

/** `ws://` URL of every node of `deployment`, in order. */
function nodeUrls(deployment: Deployment): string[] {
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

async function startServer(
  options: BenchOptions,
  setup: ServerSetup,
  tmp: string,
  name = setup.kind as string,
): Promise<ServerProcess> {
  if (setup.kind === "baseline" || setup.kind === "baseline-framed") {
    return await ServerProcess.start(setup.kind, ROOT, [
      "run",
      "--allow-net",
      `${ROOT}bench/baseline_server.ts`,
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
  ]);
}

/**
 * Starts the server of `setup`: one process, or for `chat-redis` a fresh
 * local redis-server and its nodes (each with `--redis`).
 */
async function startDeployment(
  options: BenchOptions,
  setup: ServerSetup,
  tmp: string,
): Promise<Deployment> {
  const name = setupName(setup);
  if (setup.kind !== "chat-redis") {
    const server = await startServer(options, setup, tmp);
    return { name, nodes: [server], redis: null, redisPid: null };
  }
  const redis = await startLocalRedis({
    dir: await Deno.makeTempDir({ dir: tmp, prefix: "redis-" }),
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
          options,
          { ...setup, extra: [...setup.extra ?? [], "--redis", redis.url] },
          tmp,
          count > 1 ? `${name}/${i}` : name,
        ),
      );
    }
    return { name, nodes, redis, redisPid: pid };
  } catch (error) {
    await Promise.all(nodes.map((node) => node.stop()));
    await redis.stop();
    throw error;
  }
}

/** Runs `fn` with a fresh server and fresh generators, then stops them all. */
async function session<T>(
  options: BenchOptions,
  setup: ServerSetup,
  generatorCount: number,
  tmp: string,
  fn: (deployment: Deployment, generators: Generator[]) => Promise<T>,
): Promise<T> {
  const deployment = await startDeployment(options, setup, tmp);
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
  }
}

/**
 * Connects each generator's clients, to the first node unless a client
 * names its own; fails when any did not connect.
 */
async function connectAll(
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
 * Clients in rooms of `roomSize`, each room wholly in one generator (its
 * members read one clock). With several `urls` (cluster nodes), a room's
 * members take them in turn, so that every room has members on every node.
 */
function roomClients(
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

// ---------------------------------------------------------------------------
// Scenarios

/** One measured rate. */
export interface StepResult {
  /** When the step started (ISO 8601): paired ladders interleave. */
  startedAt?: string;
  /** Messages per second, all generators together. */
  rate: number;
  /** Deliveries per second asked for: rate times recipients. */
  offeredDeliveriesPerSec: number;
  sent: number;
  /** Messages per second actually sent. */
  sentPerSec: number;
  expected: number;
  received: number;
  deliveredPct: number;
  /** Deliveries per second, by receipt time, over the measured seconds. */
  deliveriesPerSec: number;
  latency: Latency;
  /** All server processes together (every node of a cluster). */
  serverCpuPct: number;
  serverRssMaxMb: number;
  /** A cluster's nodes, each (`chat-redis` only). */
  nodeCpuPct?: number[];
  nodeRssMaxMb?: number[];
  /** The redis-server the nodes share (`chat-redis` only). */
  redisCpuPct?: number;
  redisRssMaxMb?: number;
  generatorCpuPct: number[];
  machineBusyPct: number;
  /** Interrupt time (loopback networking), in percent of one core. */
  irqCpuPct: number;
  /** CPU used by other processes of the machine, in percent of one core. */
  otherCpuPct: number;
  /** Longest the send schedule ran behind, in milliseconds. */
  generatorLagMs: number;
  errors: number;
  closes: Record<string, number>;
  outOfOrder: number;
  duplicates: number;
  /** Frames of an earlier rate that arrived during this one. */
  stale: number;
  /** Milliseconds the server took to go idle after this rate. */
  settleMs: number;
  /** Per half second, by send time: messages sent, deliveries, p99 ms. */
  series: [number, number, number][];
  pass: boolean;
  /** Why it did not pass; also whether the generators kept up. */
  notes: string[];
}

let step = 0;

async function measureRate(
  options: BenchOptions,
  deployment: Deployment,
  generators: Generator[],
  shares: number[],
  mode: "group" | "private",
  rate: number,
  recipients: number,
): Promise<StepResult> {
  step++;
  const warmupMs = options.warmupSeconds * 1000;
  const measureMs = options.stepSeconds * 1000;
  const windowMs = 500;
  const startAt = Date.now() + 300;
  const rss = new RssSampler(deployment.nodes.map((node) => node.pid));
  const redisRss = deployment.redisPid === null
    ? null
    : new RssSampler([deployment.redisPid]);
  const replies = Promise.all(generators.map((g, i) =>
    g.call<RunReply>({
      cmd: "run",
      mode,
      step,
      startAt,
      phases: [{ rate: rate * shares[i]!, ms: warmupMs + measureMs }],
      warmupMs,
      windowMs,
      drainMs: 5000,
      quietMs: 1500,
      checkOrder: true,
      contentChars: options.contentChars,
    })
  ));
  await sleep(startAt - Date.now() + warmupMs);
  const a = snapshot(deployment, generators);
  await sleep(measureMs);
  const b = snapshot(deployment, generators);
  const merged = merge(await replies);
  rss.stop();
  redisRss?.stop();
  const cpu = cpuBetween(a, b);
  const lat = latency(merged.hist);
  const deliveredPct = merged.expected > 0
    ? Math.round(merged.received / merged.expected * 10000) / 100
    : 0;
  const notes: string[] = [];
  if (merged.received < merged.expected) {
    notes.push(`${merged.expected - merged.received} not delivered`);
  }
  if (lat.p99Ms > options.p99LimitMs) {
    notes.push(`p99 over ${options.p99LimitMs} ms`);
  }
  const closed = Object.values(merged.closes).reduce((s, n) => s + n, 0);
  if (closed > 0) notes.push(`${closed} clients closed`);
  if (merged.errors > 0) notes.push(`${merged.errors} Error frames`);
  if (merged.outOfOrder + merged.duplicates > 0) {
    notes.push(`${merged.outOfOrder} out of order, ${merged.duplicates} dup`);
  }
  const sentPerSec = Math.round(merged.sent / (merged.sendMs / 1000));
  const behind = sentPerSec < rate * 0.97 || merged.maxLagMs > 100;
  if (behind) notes.push("generators fell behind the schedule");
  if (cpu.generatorPct.some((p) => p >= 90)) {
    notes.push("a generator >= 90% CPU");
  }
  return {
    startedAt: new Date(startAt).toISOString(),
    rate: Math.round(rate),
    offeredDeliveriesPerSec: Math.round(rate * recipients),
    sent: merged.sent,
    sentPerSec,
    expected: merged.expected,
    received: merged.received,
    deliveredPct,
    deliveriesPerSec: deliveryRate(
      merged.receivedByWindow,
      windowMs,
      warmupMs,
      warmupMs + measureMs,
    ),
    latency: lat,
    serverCpuPct: cpu.serverPct,
    serverRssMaxMb: Math.round(rss.max / MB * 10) / 10,
    ...(redisRss
      ? {
        nodeCpuPct: cpu.nodePct,
        nodeRssMaxMb: rss.maxEach.map((b) => Math.round(b / MB * 10) / 10),
        redisCpuPct: cpu.redisPct,
        redisRssMaxMb: Math.round(redisRss.max / MB * 10) / 10,
      }
      : {}),
    generatorCpuPct: cpu.generatorPct,
    machineBusyPct: cpu.machineBusyPct,
    irqCpuPct: cpu.irqPct,
    otherCpuPct: cpu.otherPct,
    generatorLagMs: merged.maxLagMs,
    errors: merged.errors,
    closes: merged.closes,
    outOfOrder: merged.outOfOrder,
    duplicates: merged.duplicates,
    stale: merged.stale,
    settleMs: 0,
    series: merged.windows.map((w) => [
      w.sent,
      w.received,
      Math.round(w.hist.percentile(99) / 100) / 10,
    ]),
    pass: merged.received >= merged.expected && closed === 0 &&
      lat.p99Ms <= options.p99LimitMs && merged.errors === 0 &&
      merged.outOfOrder + merged.duplicates === 0,
    notes,
  };
}

/** A rising ladder of rates on one server, and its ceiling. */
export interface LadderResult {
  server: ServerKind;
  /** `chat-redis`: nodes sharing the redis-server, clients spread over them. */
  nodes?: number;
  mode: "group" | "private";
  clients: number;
  recipientsPerMessage: number;
  connectSeconds: number;
  steps: StepResult[];
  /** Highest rate (messages/s) with every message delivered and p99 within the limit. */
  ceiling: number;
  ceilingDeliveriesPerSec: number;
  /** `false` when even the highest rate tried passed: the ceiling is a lower bound. */
  ceilingReached: boolean;
  /** The step at the ceiling. */
  atCeiling: StepResult | null;
}

/**
 * One server's side of a ladder: its session, its steps so far, and its last
 * passing and first failing rate. {@linkcode ladder} drives one alone;
 * {@linkcode pairedLadders} drives several in turn.
 */
class Climber {
  readonly steps: StepResult[] = [];
  pass: StepResult | null = null;
  fail: StepResult | null = null;
  #options: BenchOptions;
  #setup: ServerSetup;
  #mode: "group" | "private";
  #servers: Deployment;
  #generators: Generator[];
  #shares: number[];
  #recipients: number;
  #connect: { connected: number; seconds: number };

  constructor(
    options: BenchOptions,
    setup: ServerSetup,
    mode: "group" | "private",
    servers: Deployment,
    generators: Generator[],
    shares: number[],
    recipients: number,
    connect: { connected: number; seconds: number },
  ) {
    this.#options = options;
    this.#setup = setup;
    this.#mode = mode;
    this.#servers = servers;
    this.#generators = generators;
    this.#shares = shares;
    this.#recipients = recipients;
    this.#connect = connect;
  }

  /** Measures one rate and waits until everything is idle again. */
  async tryRate(rate: number): Promise<StepResult> {
    const result = await measureRate(
      this.#options,
      this.#servers,
      this.#generators,
      this.#shares,
      this.#mode,
      rate,
      this.#recipients,
    );
    this.steps.push(result);
    printStep(this.#servers.name, this.#mode, result);
    for (const node of this.#servers.nodes) {
      if (!node.alive()) throw new Error(`${node.name} died`);
    }
    result.settleMs = await settle(this.#servers, this.#generators);
    return result;
  }

  /**
   * A failure is measured once more before it counts (not in --quick): on a
   * shared 2-core machine one slow second can fail a rate. When other
   * processes took CPU during a failure (over 15% of a core), it is measured
   * up to twice more. Records the outcome as this server's pass or fail.
   */
  async tryTwice(rate: number): Promise<StepResult> {
    let result = await this.tryRate(rate);
    for (
      let again = 0;
      !result.pass && !this.#options.quick && again < 3;
      again++
    ) {
      if (again > 0 && result.otherCpuPct <= 15) break;
      log(
        `      (again: confirming the failure${
          result.otherCpuPct > 15 ? ", other processes were busy" : ""
        })`,
      );
      result = await this.tryRate(rate);
    }
    this.record(result);
    return result;
  }

  /** Keeps the highest pass and the lowest failure. */
  record(result: StepResult): void {
    if (result.pass && result.rate > (this.pass?.rate ?? 0)) {
      this.pass = result;
    }
    if (!result.pass && (!this.fail || result.rate < this.fail.rate)) {
      this.fail = result;
    }
  }

  /** The next rate that would narrow the ceiling, or `null` when done. */
  nextBisection(): number | null {
    if (!this.pass || !this.fail) return null;
    if (this.fail.rate - this.pass.rate < this.pass.rate * 0.05) return null;
    return Math.sqrt(this.pass.rate * this.fail.rate);
  }

  result(): LadderResult {
    const setup = this.#setup;
    return {
      server: setup.kind,
      ...(setup.kind === "chat-redis" ? { nodes: setup.nodes ?? 1 } : {}),
      mode: this.#mode,
      clients: this.#connect.connected,
      recipientsPerMessage: this.#recipients,
      connectSeconds: this.#connect.seconds,
      steps: this.steps,
      ceiling: this.pass?.rate ?? 0,
      ceilingDeliveriesPerSec: this.pass
        ? this.pass.rate * this.#recipients
        : 0,
      ceilingReached: this.fail !== null,
      atCeiling: this.pass,
    };
  }
}

/** How a ladder's rates go: start, growth, limit and bisections. */
function ladderPlan(options: BenchOptions, mode: "group" | "private") {
  const scale = options.clients / 1000;
  return {
    // Start low, grow by `factor` until a rate fails, then bisect between
    // the last pass and the first failure.
    start: (mode === "group" ? 100 : 1000) * scale,
    factor: options.quick ? 2 : 1.5,
    bisections: options.quick ? 1 : 3,
    max: (mode === "group" ? 50_000 : 200_000) * scale,
    scale,
  };
}

/**
 * Opens a session on `setup`, connects the fan-out or direct-message
 * clients, and hands `fn` a {@linkcode Climber} for it.
 */
async function withClimber<T>(
  options: BenchOptions,
  setup: ServerSetup,
  mode: "group" | "private",
  tmp: string,
  fn: (climber: Climber) => Promise<T>,
): Promise<T> {
  const g = Math.min(
    options.generators,
    Math.ceil(options.clients / options.roomSize),
  );
  const counts = roomClients(options.clients, options.roomSize, g, "u");
  const total = counts.reduce((s, l) => s + l.length, 0);
  const shares = counts.map((l) => l.length / total);
  const recipients = mode === "group" ? Math.min(options.roomSize, total) : 1;
  return await session(options, setup, g, tmp, async (servers, generators) => {
    const specs = roomClients(
      options.clients,
      options.roomSize,
      g,
      "u",
      nodeUrls(servers),
    );
    const connect = await connectAll(servers, generators, specs);
    log(
      `  ${servers.name} ${mode}: ${connect.connected} clients in ${connect.seconds} s`,
    );
    await sleep(1000);
    return await fn(
      new Climber(
        options,
        setup,
        mode,
        servers,
        generators,
        shares,
        recipients,
        connect,
      ),
    );
  });
}

/** A rising ladder of rates on one server, and its ceiling. */
async function ladder(
  options: BenchOptions,
  setup: ServerSetup,
  mode: "group" | "private",
  tmp: string,
): Promise<LadderResult> {
  const plan = ladderPlan(options, mode);
  return await withClimber(options, setup, mode, tmp, async (climber) => {
    if (options.rates) {
      // Fixed rates (for profiling): each once, no ladder.
      for (const r of options.rates) {
        climber.record(await climber.tryRate(r * plan.scale));
      }
      return climber.result();
    }
    for (let rate = plan.start; rate <= plan.max; rate *= plan.factor) {
      if (!(await climber.tryTwice(rate)).pass) break;
    }
    // The first rate failed: go down until one passes.
    for (let i = 0; !climber.pass && climber.fail && i < 3; i++) {
      await climber.tryTwice(climber.fail.rate / plan.factor);
    }
    for (let i = 0; i < plan.bisections; i++) {
      const mid = climber.nextBisection();
      if (mid === null) break;
      await climber.tryTwice(mid);
    }
    return climber.result();
  });
}

/**
 * The ladders of several servers, climbed in turn: each rate is measured on
 * every server still climbing before the next rate, and each bisection round
 * takes one step per server. Every server keeps its own clients, connected
 * for the whole run and idle while another server is measured, so that the
 * servers are measured minutes apart at most, and a machine whose speed
 * drifts (a shared VM's does, by up to 1.6× within minutes) moves them
 * alike.
 */
async function pairedLadders(
  options: BenchOptions,
  setups: ServerSetup[],
  mode: "group" | "private",
  tmp: string,
): Promise<LadderResult[]> {
  const plan = ladderPlan(options, mode);
  const climbers: Climber[] = [];
  const climb = async (): Promise<LadderResult[]> => {
    if (options.rates) {
      for (const r of options.rates) {
        for (const climber of climbers) {
          climber.record(await climber.tryRate(r * plan.scale));
        }
      }
      return climbers.map((c) => c.result());
    }
    for (let rate = plan.start; rate <= plan.max; rate *= plan.factor) {
      const climbing = climbers.filter((c) => c.fail === null);
      if (climbing.length === 0) break;
      for (const climber of climbing) await climber.tryTwice(rate);
    }
    for (let i = 0; i < 3; i++) {
      const down = climbers.filter((c) => !c.pass && c.fail);
      if (down.length === 0) break;
      for (const c of down) await c.tryTwice(c.fail!.rate / plan.factor);
    }
    for (let i = 0; i < plan.bisections; i++) {
      let stepped = false;
      for (const climber of climbers) {
        const mid = climber.nextBisection();
        if (mid === null) continue;
        await climber.tryTwice(mid);
        stepped = true;
      }
      if (!stepped) break;
    }
    return climbers.map((c) => c.result());
  };
  const open = async (index: number): Promise<LadderResult[]> => {
    const setup = setups[index];
    if (!setup) return await climb();
    return await withClimber(options, setup, mode, tmp, async (climber) => {
      climbers.push(climber);
      return await open(index + 1);
    });
  };
  return await open(0);
}

/** Idle memory: RSS per open connection. */
export interface IdleResult {
  server: ServerKind;
  connections: number;
  connectSeconds: number;
  rssBeforeMb: number;
  rssAfterMb: number;
  bytesPerConnection: number;
}

async function idle(
  options: BenchOptions,
  setup: ServerSetup,
  tmp: string,
): Promise<IdleResult> {
  const g = Math.max(options.generators, Math.ceil(options.idleClients / 5000));
  const specs = roomClients(options.idleClients, options.roomSize, g, "i");
  return await session(options, setup, g, tmp, async (servers, generators) => {
    const server = servers.nodes[0]!;
    await sleep(1500);
    const before = rssBytes(server.pid) ?? 0;
    const connect = await connectAll(servers, generators, specs, 100);
    await sleep(3000);
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      samples.push(rssBytes(server.pid) ?? 0);
      await sleep(400);
    }
    samples.sort((x, y) => x - y);
    const after = samples[2]!;
    const result: IdleResult = {
      server: setup.kind,
      connections: connect.connected,
      connectSeconds: connect.seconds,
      rssBeforeMb: Math.round(before / MB * 10) / 10,
      rssAfterMb: Math.round(after / MB * 10) / 10,
      bytesPerConnection: Math.round((after - before) / connect.connected),
    };
    log(
      `  ${server.name} idle: ${result.connections} connections, RSS ${result.rssBeforeMb} -> ${result.rssAfterMb} MB, ${result.bytesPerConnection} B/connection`,
    );
    return result;
  });
}

/** Overload: half the ceiling, twice it, half again. */
export interface OverloadResult {
  server: ServerKind;
  ceiling: number;
  phases: { name: string; rate: number; seconds: number }[];
  serverStayedUp: boolean;
  rssMaxMb: number;
  rssSamples: [number, number][];
  /** Deliveries per second during the overload phase, by receipt time. */
  overloadDeliveriesPerSec: number;
  ceilingDeliveriesPerSec: number;
  /** overloadDeliveriesPerSec / ceilingDeliveriesPerSec. */
  overloadShareOfCeiling: number;
  /** Messages per second the generators managed during overload. */
  overloadSentPerSec: number;
  normalP99Ms: number;
  /** p99 at or under this counts as recovered. */
  recoveredThresholdMs: number;
  /** Seconds after the load dropped until every later window was back under the threshold; `null` if never. */
  recoverySeconds: number | null;
  deliveredToAlivePct: number;
  clientsClosed: Record<string, number>;
  clientsAlive: number;
  errors: number;
  outOfOrder: number;
  duplicates: number;
  serverCpuPct: number;
  generatorCpuPct: number[];
  machineBusyPct: number;
  windows: {
    t: number;
    sent: number;
    received: number;
    p99Ms: number;
    deliveriesPerSec: number;
  }[];
}

async function overload(
  options: BenchOptions,
  setup: ServerSetup,
  ceiling: number,
  tmp: string,
): Promise<OverloadResult> {
  const g = Math.min(
    options.generators,
    Math.ceil(options.clients / options.roomSize),
  );
  const specs = roomClients(options.clients, options.roomSize, g, "o");
  const total = specs.reduce((s, l) => s + l.length, 0);
  const shares = specs.map((l) => l.length / total);
  const recipients = Math.min(options.roomSize, total);
  const calm = options.quick ? 3 : 5;
  const after = options.quick ? 6 : 10;
  const phases = [
    { name: "half", rate: ceiling / 2, seconds: calm },
    { name: "double", rate: ceiling * 2, seconds: options.overloadSeconds },
    { name: "half again", rate: ceiling / 2, seconds: after },
  ];
  const windowMs = 500;
  return await session(options, setup, g, tmp, async (servers, generators) => {
    const server = servers.nodes[0]!;
    await connectAll(servers, generators, specs);
    await sleep(1000);
    step++;
    const startAt = Date.now() + 300;
    const rss = new RssSampler([server.pid]);
    const replies = Promise.all(generators.map((gen, i) =>
      gen.call<RunReply>({
        cmd: "run",
        mode: "group",
        step,
        startAt,
        phases: phases.map((p): Phase => ({
          rate: p.rate * shares[i]!,
          ms: p.seconds * 1000,
        })),
        warmupMs: 0,
        windowMs,
        drainMs: 30_000,
        quietMs: 3000,
        checkOrder: true,
        contentChars: options.contentChars,
      })
    ));
    await sleep(startAt - Date.now() + calm * 1000);
    const a = snapshot(servers, generators);
    await sleep(options.overloadSeconds * 1000);
    const b = snapshot(servers, generators);
    const merged = merge(await replies);
    rss.stop();
    const stayedUp = server.alive();
    const cpu = cpuBetween(a, b);
    const overStart = calm * 1000;
    const overEnd = overStart + options.overloadSeconds * 1000;
    const overloadDeliveriesPerSec = deliveryRate(
      merged.receivedByWindow,
      windowMs,
      overStart + 1000,
      overEnd,
    );
    let overSent = 0;
    for (let i = overStart / windowMs; i < overEnd / windowMs; i++) {
      overSent += merged.windows[i]?.sent ?? 0;
    }
    const normal = new Histogram();
    for (let i = 1000 / windowMs; i < overStart / windowMs; i++) {
      const w = merged.windows[i];
      if (w) normal.merge(w.hist);
    }
    const normalP99Ms = normal.percentile(99) / 1000;
    const threshold = Math.max(2 * normalP99Ms, normalP99Ms + 5);
    const windows = merged.windows.map((w, i) => ({
      t: i * windowMs / 1000,
      sent: w.sent,
      received: w.received,
      p99Ms: Math.round(w.hist.percentile(99) / 10) / 100,
      deliveriesPerSec: (merged.receivedByWindow[i] ?? 0) * 1000 / windowMs,
    }));
    // Recovered: from this window on (by send time), every window is under
    // the threshold with all its messages delivered to the open clients.
    const dropIndex = overEnd / windowMs;
    const lastIndex = dropIndex + (after * 1000) / windowMs;
    let recoveredAt: number | null = null;
    for (let i = lastIndex - 1; i >= dropIndex; i--) {
      const w = windows[i];
      if (!w || w.p99Ms > threshold || w.received === 0) break;
      recoveredAt = i;
    }
    const closes = Object.values(merged.closes).reduce((s, n) => s + n, 0);
    const result: OverloadResult = {
      server: setup.kind,
      ceiling,
      phases,
      serverStayedUp: stayedUp,
      rssMaxMb: Math.round(rss.max / MB * 10) / 10,
      rssSamples: rss.samples.filter((_, i) => i % 4 === 0),
      overloadDeliveriesPerSec,
      ceilingDeliveriesPerSec: ceiling * recipients,
      overloadShareOfCeiling: Math.round(
        overloadDeliveriesPerSec / (ceiling * recipients) * 1000,
      ) / 1000,
      overloadSentPerSec: Math.round(overSent / options.overloadSeconds),
      normalP99Ms: Math.round(normalP99Ms * 100) / 100,
      recoveredThresholdMs: Math.round(threshold * 100) / 100,
      recoverySeconds: recoveredAt === null
        ? null
        : (recoveredAt - dropIndex) * windowMs / 1000,
      deliveredToAlivePct: merged.expectedAlive > 0
        ? Math.round(merged.receivedAlive / merged.expectedAlive * 10000) / 100
        : 0,
      clientsClosed: merged.closes,
      clientsAlive: merged.alive,
      errors: merged.errors,
      outOfOrder: merged.outOfOrder,
      duplicates: merged.duplicates,
      serverCpuPct: cpu.serverPct,
      generatorCpuPct: cpu.generatorPct,
      machineBusyPct: cpu.machineBusyPct,
      windows,
    };
    log(
      `  ${server.name} overload at ${
        ceiling * 2
      } msg/s: up=${stayedUp} rssMax=${result.rssMaxMb} MB delivered ${overloadDeliveriesPerSec}/s (${
        (result.overloadShareOfCeiling * 100).toFixed(0)
      }% of ceiling), closed ${closes}, out-of-order ${merged.outOfOrder}, normal p99 ${result.normalP99Ms} ms, recovery ${result.recoverySeconds} s`,
    );
    return result;
  });
}

/** Scale: many connections in one room, all receiving broadcasts. */
export interface ScaleResult {
  server: ServerKind;
  /** `chat-redis`: nodes the connections are spread over, evenly. */
  nodes?: number;
  connections: number;
  /** Connections per node, in node order (`chat-redis` only). */
  connectionsPerNode?: number[];
  users: number;
  generators: number;
  /** Source addresses the generators' clients come from, all together. */
  sourceAddresses: number;
  connectSeconds: number;
  /** Every server process together, with everyone in the room. */
  rssMb: number;
  /** Each node (`chat-redis` only). */
  nodeRssMb?: number[];
  /** Server CPU while the clients connected and entered, percent of one core per node. */
  connectCpuPct?: { nodes: number[]; redis: number };
  redisRssMb?: number;
  broadcasts: {
    /** Node of the sender (`chat-redis` only). */
    senderNode?: number;
    alive: number;
    received: number;
    p50Ms: number;
    p99Ms: number;
    maxMs: number;
    /** CPU milliseconds each node spent from the send to the last receipt (`chat-redis` only). */
    nodeCpuMs?: number[];
    redisCpuMs?: number;
  }[];
  allReceived: boolean;
}

/**
 * `n` clients in one room, then broadcasts from one of them. For a cluster,
 * client `i` of a generator goes to node `i % nodes`, so every generator has
 * clients on every node and the broadcasts' senders take the nodes in turn.
 */
async function scale(
  options: BenchOptions,
  setup: ServerSetup,
  tmp: string,
  n = options.scaleClients,
  broadcastCount = 5,
): Promise<ScaleResult> {
  const g = Math.max(options.generators, Math.ceil(n / 5000));
  const users = options.scaleUsers > 0 && options.scaleUsers < n
    ? options.scaleUsers
    : n;
  const auth = setup.kind !== "baseline" && users < n;
  const admin = "bench-admin-secret";
  const full: ServerSetup = auth
    ? { ...setup, extra: ["--auth", "--admin-token", admin] }
    : setup;
  const cluster = setup.kind === "chat-redis";
  return await session(options, full, g, tmp, async (servers, generators) => {
    const urls = nodeUrls(servers);
    const nodes = servers.nodes.length;
    // tokens[node][user]. Each node issues its own clients' tokens: a token
    // is good on every node once the cluster shares them, and on its own
    // node before.
    const tokens: string[][] = [];
    if (auth) {
      for (const node of servers.nodes) {
        const own: string[] = [];
        for (let u = 0; u < users; u++) {
          const response = await fetch(
            `http://127.0.0.1:${node.port}/api/tokens`,
            {
              method: "POST",
              headers: { authorization: `Bearer ${admin}` },
              body: JSON.stringify({ username: `s${u}`, ttl_seconds: 3600 }),
            },
          );
          const body = await response.json();
          if (response.status !== 201) {
            throw new Error(
              `token: ${response.status} ${JSON.stringify(body)}`,
            );
          }
          own.push(body.token);
        }
        tokens.push(own);
      }
    }
    // Client i belongs to user i % users: every user's first connection
    // comes early, so `Enter` goes to the room once per user.
    const specs: ClientSpec[][] = Array.from({ length: g }, () => []);
    const perNode = urls.map(() => 0);
    for (let i = 0; i < n; i++) {
      const node = Math.floor(i / g) % nodes;
      const spec: ClientSpec = {
        name: users < n ? `s${i % users}` : `s${i}`,
        room: "all",
      };
      if (auth) spec.token = tokens[node]![i % users]!;
      if (nodes > 1) spec.url = urls[node];
      perNode[node]!++;
      specs[i % g]!.push(spec);
    }
    const before = snapshot(servers, generators);
    const connect = await connectAll(servers, generators, specs, 100);
    const connectCpu = cpuBetween(before, snapshot(servers, generators));
    log(
      `  ${servers.name} scale: ${connect.connected} connections (${users} users${
        nodes > 1 ? `; ${perNode.join(" + ")} on the nodes` : ""
      }) in ${connect.seconds} s`,
    );
    await sleep(2000);
    const rssEach = servers.nodes.map((node) => rssBytes(node.pid) ?? 0);
    const rss = rssEach.reduce((x, y) => x + y, 0);
    const broadcasts: ScaleResult["broadcasts"] = [];
    for (let b = 0; b < broadcastCount; b++) {
      step++;
      const startAt = Date.now() + 300;
      const a = snapshot(servers, generators);
      const replies = await Promise.all(
        generators.map((gen, i) =>
          gen.call<RunReply>({
            cmd: "broadcast",
            step,
            sender: i === 0 ? b : -1,
            startAt,
            timeoutMs: cluster && options.quick ? 10_000 : 30_000,
            contentChars: options.contentChars,
          })
        ),
      );
      const z = snapshot(servers, generators);
      const merged = merge(replies);
      const lat = latency(merged.hist);
      const senderNode = b % nodes;
      broadcasts.push({
        ...(cluster ? { senderNode } : {}),
        alive: merged.expectedAlive,
        received: merged.receivedAlive,
        p50Ms: lat.p50Ms,
        p99Ms: lat.p99Ms,
        maxMs: lat.maxMs,
        ...(cluster
          ? {
            nodeCpuMs: z.nodes.map((c, i) =>
              Math.round((c - (a.nodes[i] ?? 0)) * 1000)
            ),
            redisCpuMs: Math.round((z.redis - a.redis) * 1000),
          }
          : {}),
      });
      log(
        `    broadcast ${b + 1}${
          cluster ? ` from node ${senderNode}` : ""
        }: ${merged.receivedAlive}/${merged.expectedAlive} received, p50 ${lat.p50Ms} ms, p99 ${lat.p99Ms} ms, last ${lat.maxMs} ms`,
      );
      await sleep(1000);
    }
    const mb = (bytes: number) => Math.round(bytes / MB * 10) / 10;
    return {
      server: full.kind,
      ...(cluster ? { nodes, connectionsPerNode: perNode } : {}),
      connections: connect.connected,
      users,
      generators: g,
      sourceAddresses: g * sourceAddresses(0).length,
      connectSeconds: connect.seconds,
      rssMb: mb(rss),
      ...(cluster
        ? {
          nodeRssMb: rssEach.map(mb),
          connectCpuPct: {
            nodes: connectCpu.nodePct,
            redis: connectCpu.redisPct,
          },
          redisRssMb: mb(
            servers.redisPid === null ? 0 : rssBytes(servers.redisPid) ?? 0,
          ),
        }
        : {}),
      broadcasts,
      allReceived: broadcasts.every((b) =>
        b.received === b.alive && b.alive === n
      ),
    };
  });
}

// ---------------------------------------------------------------------------
// Output

function log(line: string): void {
  console.log(line);
}

const ms = (v: number) => v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);

function printStep(name: string, mode: string, s: StepResult): void {
  log(
    `    ${name.padEnd(11)} ${mode.padEnd(7)} ${
      String(s.rate).padStart(7)
    } msg/s  ${String(s.deliveriesPerSec).padStart(8)} del/s  ${
      s.deliveredPct.toFixed(1).padStart(5)
    }%  p50 ${ms(s.latency.p50Ms).padStart(6)}  p99 ${
      ms(s.latency.p99Ms).padStart(6)
    }  max ${ms(s.latency.maxMs).padStart(6)} ms  srv ${
      String(s.serverCpuPct).padStart(5)
    }% ${String(s.serverRssMaxMb).padStart(6)} MB${
      s.nodeCpuPct
        ? ` (nodes ${s.nodeCpuPct.join(" + ")}%, ${
          s.nodeRssMaxMb?.join(" + ")
        } MB; redis ${s.redisCpuPct}%)`
        : ""
    }  gen ${
      s.generatorCpuPct.join("/")
    }%  box ${s.machineBusyPct}% (irq ${s.irqCpuPct}, others ${s.otherCpuPct})  ${
      s.pass ? "PASS" : "FAIL"
    } ${s.notes.join("; ")}`,
  );
}

/** Markdown table of the ladder steps. */
export function ladderTable(ladders: LadderResult[]): string {
  const rows = [
    "| server | scenario | msg/s | deliveries/s | delivered | p50 ms | p99 ms | max ms | server CPU | server RSS MB | generator CPU | machine busy | other CPU | pass |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const l of ladders) {
    const steps = [...l.steps].sort((a, b) => a.rate - b.rate);
    for (const s of steps) {
      rows.push(
        `| ${l.server} | ${
          l.mode === "group" ? "fan-out" : "direct"
        } | ${s.rate} | ${s.deliveriesPerSec} | ${
          s.deliveredPct.toFixed(1)
        }% | ${ms(s.latency.p50Ms)} | ${ms(s.latency.p99Ms)} | ${
          ms(s.latency.maxMs)
        } | ${s.serverCpuPct}% | ${s.serverRssMaxMb} | ${
          s.generatorCpuPct.join(" / ")
        }% | ${s.machineBusyPct}% | ${s.otherCpuPct}% | ${
          s.pass ? "yes" : `no: ${s.notes.join("; ")}`
        } |`,
      );
    }
  }
  return rows.join("\n");
}

/** Markdown table of the cluster ladders: every node's CPU and RSS, and Redis's. */
export function clusterTable(ladders: LadderResult[]): string {
  const rows = [
    "| nodes | msg/s | deliveries/s | delivered | p50 ms | p99 ms | max ms | node CPU | node RSS MB | redis CPU | redis RSS MB | generator CPU | machine busy | other CPU | pass |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const l of ladders) {
    const steps = [...l.steps].sort((a, b) => a.rate - b.rate);
    for (const s of steps) {
      rows.push(
        `| ${l.nodes ?? 1} | ${s.rate} | ${s.deliveriesPerSec} | ${
          s.deliveredPct.toFixed(1)
        }% | ${ms(s.latency.p50Ms)} | ${ms(s.latency.p99Ms)} | ${
          ms(s.latency.maxMs)
        } | ${(s.nodeCpuPct ?? [s.serverCpuPct]).join(" / ")}% | ${
          (s.nodeRssMaxMb ?? [s.serverRssMaxMb]).join(" / ")
        } | ${s.redisCpuPct ?? "-"}% | ${s.redisRssMaxMb ?? "-"} | ${
          s.generatorCpuPct.join(" / ")
        }% | ${s.machineBusyPct}% | ${s.otherCpuPct}% | ${
          s.pass ? "yes" : `no: ${s.notes.join("; ")}`
        } |`,
      );
    }
  }
  return rows.join("\n");
}

/** What the `cluster` scenario found. */
export interface ClusterResult {
  /** The fan-out ladder on one node, then on two, each with a fresh redis-server. */
  ladders: LadderResult[];
  /** Many clients in one room across two nodes. */
  scale: ScaleResult | null;
}

/** Everything one run found. */
export interface BenchResults {
  startedAt: string;
  finishedAt: string;
  machine: ReturnType<typeof machineInfo> & {
    loadAverageAtEnd: [number, number, number];
  };
  settings: BenchOptions;
  /** Which chat server ran: its directory and a hash of its sources. */
  serverSource: {
    dir: string;
    label: string;
    sha256: string;
    files: number;
  };
  ladders: LadderResult[];
  idle: IdleResult[];
  overload: OverloadResult[];
  scale: ScaleResult[];
  /** Absent in results written before the scenario existed. */
  cluster?: ClusterResult;
  summary: Record<string, unknown>;
  notes: string[];
}

function ratio(a: number | undefined, b: number | undefined): number | null {
  if (a === undefined || b === undefined || b === 0) return null;
  return Math.round(a / b * 100) / 100;
}

/**
 * The diagnostic next to a ceiling's chat / baseline ratio, when
 * `baseline-framed` ran: its ceiling and the ratio chat / baseline-framed.
 */
function framedDiagnostic(
  chat: LadderResult | undefined,
  framed: LadderResult | undefined,
): Record<string, unknown> {
  if (!framed) return {};
  return {
    baselineFramed: {
      note:
        "diagnostic: the baseline sending the same frames as the chat server",
      ceiling: framed.ceiling,
      deliveriesPerSec: framed.ceilingDeliveriesPerSec,
      ratio: ratio(chat?.ceiling, framed.ceiling),
    },
  };
}

function summarize(results: BenchResults): void {
  const find = (kind: ServerKind, mode: "group" | "private") =>
    results.ladders.find((l) => l.server === kind && l.mode === mode);
  const chatFan = find("chat", "group");
  const baseFan = find("baseline", "group");
  const sqlFan = find("chat-sqlite", "group");
  const chatDm = find("chat", "private");
  const baseDm = find("baseline", "private");
  const framedFan = find("baseline-framed", "group");
  const framedDm = find("baseline-framed", "private");
  const idleChat = results.idle.find((r) => r.server === "chat");
  const idleBase = results.idle.find((r) => r.server === "baseline");
  const summary: Record<string, unknown> = {
    fanoutCeiling: {
      chat: chatFan?.ceiling,
      baseline: baseFan?.ceiling,
      unit: "messages/s into rooms of " + options().roomSize,
      chatDeliveriesPerSec: chatFan?.ceilingDeliveriesPerSec,
      baselineDeliveriesPerSec: baseFan?.ceilingDeliveriesPerSec,
      ratio: ratio(chatFan?.ceiling, baseFan?.ceiling),
      target: ">= 1.0",
      ...framedDiagnostic(chatFan, framedFan),
    },
    directCeiling: {
      chat: chatDm?.ceiling,
      baseline: baseDm?.ceiling,
      unit: "messages/s",
      ratio: ratio(chatDm?.ceiling, baseDm?.ceiling),
      target: ">= 1.0",
      ...framedDiagnostic(chatDm, framedDm),
    },
    idleBytesPerConnection: {
      chat: idleChat?.bytesPerConnection,
      baseline: idleBase?.bytesPerConnection,
      connections: idleChat?.connections ?? idleBase?.connections,
      ratio: ratio(idleChat?.bytesPerConnection, idleBase?.bytesPerConnection),
      target: "<= 1.3",
    },
    persistence: {
      memoryCeiling: chatFan?.ceiling,
      sqliteCeiling: sqlFan?.ceiling,
      sqliteOverMemory: ratio(sqlFan?.ceiling, chatFan?.ceiling),
    },
  };
  const over = results.overload.find((o) => o.server === "chat");
  if (over) {
    summary.overload = {
      stayedUp: over.serverStayedUp,
      rssMaxMb: over.rssMaxMb,
      rssUnder1GiB: over.rssMaxMb < 1024,
      shareOfCeilingDelivered: over.overloadShareOfCeiling,
      atLeast80Pct: over.overloadShareOfCeiling >= 0.8,
      inOrder: over.outOfOrder === 0 && over.duplicates === 0,
      recoverySeconds: over.recoverySeconds,
      recoveredWithin5s: over.recoverySeconds !== null &&
        over.recoverySeconds <= 5,
    };
  }
  const sc = results.scale.find((s) => s.server !== "baseline");
  if (sc) {
    summary.scale = {
      connections: sc.connections,
      allReceived: sc.allReceived,
      worstLastDeliveryMs: Math.max(...sc.broadcasts.map((b) => b.maxMs)),
      rssMb: sc.rssMb,
    };
  }
  const cluster = results.cluster;
  if (cluster && (cluster.ladders.length > 0 || cluster.scale)) {
    const one = cluster.ladders.find((l) => (l.nodes ?? 1) === 1);
    const two = cluster.ladders.find((l) => l.nodes === 2);
    const cs = cluster.scale;
    summary.cluster = {
      fanoutCeiling: {
        oneNode: one?.ceiling,
        twoNodes: two?.ceiling,
        unit: "messages/s into rooms of " + options().roomSize +
          ", members spread over the nodes",
        oneNodeDeliveriesPerSec: one?.ceilingDeliveriesPerSec,
        twoNodesDeliveriesPerSec: two?.ceilingDeliveriesPerSec,
        twoOverOne: ratio(two?.ceiling, one?.ceiling),
        standaloneChat: chatFan?.ceiling,
        oneNodeOverStandalone: ratio(one?.ceiling, chatFan?.ceiling),
      },
      ...(cs
        ? {
          scale: {
            connections: cs.connections,
            connectionsPerNode: cs.connectionsPerNode,
            received: cs.broadcasts.map((b) => b.received),
            allReceived: cs.allReceived,
            worstLastDeliveryMs: Math.max(...cs.broadcasts.map((b) => b.maxMs)),
            nodeRssMb: cs.nodeRssMb,
            redisRssMb: cs.redisRssMb,
          },
        }
        : {}),
    };
  }
  results.summary = summary;
}

let currentOptions: BenchOptions;
function options(): BenchOptions {
  return currentOptions;
}

function printSummary(results: BenchResults): void {
  const m = results.machine;
  log(
    `\n${m.cpuModel}, ${m.cores} cores, ${
      Math.round(m.memTotalBytes / 1024 ** 3)
    } GiB, Linux ${m.kernel}, deno ${m.deno} (V8 ${m.v8}); load average ${
      m.loadAverageAtStart.join(" ")
    } at the start, ${
      m.loadAverageAtEnd.join(" ")
    } at the end; chat server ${results.serverSource.label} (sources sha256 ${
      results.serverSource.sha256.slice(0, 12)
    }).`,
  );
  if (results.ladders.length > 0) {
    log("\n## Steps\n");
    log(ladderTable(results.ladders));
  }
  const s = results.summary as Record<string, Record<string, unknown>>;
  if (results.ladders.length > 0 || results.idle.length > 0) {
    log("\n## Against the baseline\n");
    log("| figure | chat | baseline | ratio | target |");
    log("| --- | ---: | ---: | ---: | --- |");
  }
  // When baseline-framed ran: chat against it, a diagnostic with no target.
  const framedRow = (
    figure: string,
    ceiling: Record<string, unknown> | undefined,
    withDeliveries: boolean,
  ) => {
    const framed = ceiling?.baselineFramed as
      | Record<string, unknown>
      | undefined;
    if (!ceiling || !framed) return;
    const cell = (messages: unknown, deliveries: unknown) =>
      `${messages ?? "-"}${withDeliveries ? ` (${deliveries ?? "-"})` : ""}`;
    log(
      `| ${figure} against baseline-framed (diagnostic: same frames as the chat server) | ${
        cell(ceiling.chat, ceiling.chatDeliveriesPerSec)
      } | ${cell(framed.ceiling, framed.deliveriesPerSec)} | ${
        framed.ratio ?? "-"
      } | - |`,
    );
  };
  if (
    s.fanoutCeiling?.chat !== undefined ||
    s.fanoutCeiling?.baseline !== undefined
  ) {
    log(
      `| fan-out ceiling, msg/s (deliveries/s) | ${
        s.fanoutCeiling.chat ?? "-"
      } (${s.fanoutCeiling.chatDeliveriesPerSec ?? "-"}) | ${
        s.fanoutCeiling.baseline ?? "-"
      } (${s.fanoutCeiling.baselineDeliveriesPerSec ?? "-"}) | ${
        s.fanoutCeiling.ratio ?? "-"
      } | >= 1.0 |`,
    );
  }
  framedRow("fan-out ceiling, msg/s (deliveries/s)", s.fanoutCeiling, true);
  if (
    s.directCeiling?.chat !== undefined ||
    s.directCeiling?.baseline !== undefined
  ) {
    log(
      `| direct-message ceiling, msg/s | ${s.directCeiling.chat ?? "-"} | ${
        s.directCeiling.baseline ?? "-"
      } | ${s.directCeiling.ratio ?? "-"} | >= 1.0 |`,
    );
  }
  framedRow("direct-message ceiling, msg/s", s.directCeiling, false);
  if (
    s.idleBytesPerConnection?.chat !== undefined ||
    s.idleBytesPerConnection?.baseline !== undefined
  ) {
    log(
      `| idle RSS per connection, bytes (${s.idleBytesPerConnection.connections} connections) | ${
        s.idleBytesPerConnection.chat ?? "-"
      } | ${s.idleBytesPerConnection.baseline ?? "-"} | ${
        s.idleBytesPerConnection.ratio ?? "-"
      } | <= 1.3 |`,
    );
  }
  if (s.persistence?.sqliteCeiling !== undefined) {
    log(
      `\nPersistence: fan-out ceiling ${
        s.persistence.memoryCeiling ?? "-"
      } msg/s with :memory:, ${s.persistence.sqliteCeiling} msg/s with a SQLite file (ratio ${
        s.persistence.sqliteOverMemory ?? "-"
      }).`,
    );
  }
  for (const o of results.overload) {
    log(
      `\nOverload (${o.server}): ${o.ceiling * 2} msg/s for ${
        o.phases[1]!.seconds
      } s, then ${
        o.ceiling / 2
      }: up ${o.serverStayedUp}, RSS max ${o.rssMaxMb} MB, delivered ${o.overloadDeliveriesPerSec}/s = ${
        (o.overloadShareOfCeiling * 100).toFixed(0)
      }% of the ceiling's ${o.ceilingDeliveriesPerSec}/s, generators sent ${o.overloadSentPerSec} msg/s, closed ${
        JSON.stringify(o.clientsClosed)
      }, out of order ${o.outOfOrder}, normal p99 ${o.normalP99Ms} ms, back under ${o.recoveredThresholdMs} ms after ${
        o.recoverySeconds ?? "never"
      } s.`,
    );
  }
  for (const sc of results.scale) {
    log(
      `\nScale (${sc.server}): ${sc.connections} connections (${sc.users} users) in one room over ${sc.generators} generators, RSS ${sc.rssMb} MB; ${
        sc.broadcasts.map((b) =>
          `${b.received}/${b.alive} in ${ms(b.maxMs)} ms`
        )
          .join(", ")
      }.`,
    );
  }
  const cluster = results.cluster;
  if (cluster && cluster.ladders.length > 0) {
    const c = (s.cluster?.fanoutCeiling ?? {}) as Record<string, unknown>;
    log("\n## Cluster (nodes sharing one local redis-server)\n");
    log(clusterTable(cluster.ladders));
    log(
      `\nCluster fan-out ceiling: ${c.oneNode ?? "-"} msg/s (${
        c.oneNodeDeliveriesPerSec ?? "-"
      } deliveries/s) on one node, ${c.twoNodes ?? "-"} msg/s (${
        c.twoNodesDeliveriesPerSec ?? "-"
      } deliveries/s) on two (ratio ${c.twoOverOne ?? "-"}); standalone chat ${
        c.standaloneChat ?? "-"
      } msg/s.`,
    );
  }
  const cs = cluster?.scale;
  if (cs) {
    log(
      `\nCluster scale: ${cs.connections} connections (${
        cs.connectionsPerNode?.join(" + ") ?? "-"
      } on ${
        cs.nodes ?? 1
      } nodes, ${cs.users} users) in one room over ${cs.generators} generators and ${cs.sourceAddresses} source addresses, connected in ${cs.connectSeconds} s (node CPU ${
        cs.connectCpuPct?.nodes.join(" / ") ?? "-"
      }%, redis ${cs.connectCpuPct?.redis ?? "-"}%); RSS ${
        cs.nodeRssMb?.join(" / ") ?? cs.rssMb
      } MB, redis ${cs.redisRssMb ?? "-"} MB.`,
    );
    log(
      "\n| broadcast | sender node | received | p50 ms | p99 ms | last ms | node CPU ms | redis CPU ms |",
    );
    log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    cs.broadcasts.forEach((b, i) => {
      log(
        `| ${i + 1} | ${b.senderNode ?? "-"} | ${b.received}/${b.alive} | ${
          ms(b.p50Ms)
        } | ${ms(b.p99Ms)} | ${ms(b.maxMs)} | ${
          b.nodeCpuMs?.join(" / ") ?? "-"
        } | ${b.redisCpuMs ?? "-"} |`,
      );
    });
  }
  if (results.notes.length > 0) {
    log("\nNotes:\n- " + results.notes.join("\n- "));
  }
}

// ---------------------------------------------------------------------------

/** `git describe` of a checkout, with `+changes` when it is dirty. */
async function gitLabel(dir: string): Promise<string> {
  try {
    const git = (...args: string[]) =>
      new Deno.Command("git", { args: ["-C", dir, ...args], stderr: "null" })
        .output();
    const head = await git("rev-parse", "--short", "HEAD");
    if (!head.success) return "unknown";
    const status = await git("status", "--porcelain", "--", "main.ts", "src");
    const dirty = new TextDecoder().decode(status.stdout).trim() !== "";
    return new TextDecoder().decode(head.stdout).trim() +
      (dirty ? "+changes" : "");
  } catch {
    return "unknown";
  }
}

/** SHA-256 over `main.ts`, `deno.json` and every file under `src/`, sorted by path. */
async function sourceFingerprint(
  dir: string,
): Promise<{ dir: string; sha256: string; files: number }> {
  const paths: string[] = ["main.ts", "deno.json"];
  const walk = async (sub: string) => {
    for await (const entry of Deno.readDir(`${dir}${sub}`)) {
      const path = `${sub}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile) paths.push(path);
    }
  };
  await walk("src");
  paths.sort();
  const parts: Uint8Array[] = [];
  const encoder = new TextEncoder();
  for (const path of paths) {
    parts.push(encoder.encode(`${path}\0`));
    parts.push(await Deno.readFile(`${dir}${path}`));
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const all = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    all.set(part, offset);
    offset += part.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  const sha256 = [...digest].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
  return { dir, sha256, files: paths.length };
}

async function main(): Promise<number> {
  if (Deno.args[0] === "--report") {
    // Prints the tables of a results file again.
    const results = JSON.parse(
      await Deno.readTextFile(Deno.args[1] ?? ""),
    ) as BenchResults;
    currentOptions = results.settings;
    printSummary(results);
    return 0;
  }
  let opts: BenchOptions;
  try {
    opts = parseOptions(Deno.args);
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 2;
  }
  currentOptions = opts;
  const tmp = await Deno.makeTempDir({ prefix: "chat-bench-" });
  const machine = machineInfo();
  const started = new Date();
  log(
    `bench: ${machine.cpuModel}, ${machine.cores} cores, deno ${machine.deno}, load ${
      machine.loadAverageAtStart.join(" ")
    }; scenarios ${opts.scenarios.join(", ")}${opts.quick ? " (quick)" : ""}`,
  );
  const results: BenchResults = {
    startedAt: started.toISOString(),
    finishedAt: "",
    machine: { ...machine, loadAverageAtEnd: [0, 0, 0] },
    settings: opts,
    serverSource: {
      ...await sourceFingerprint(opts.serverDir),
      label: opts.serverLabel ?? await gitLabel(opts.serverDir),
    },
    ladders: [],
    idle: [],
    overload: [],
    scale: [],
    cluster: { ladders: [], scale: null },
    summary: {},
    notes: [],
  };
  const servers = opts.servers;
  // baseline-framed is a diagnostic of the two ceilings: fanout and dm only.
  const unframed = servers.filter((kind) => kind !== "baseline-framed");
  const run = async (what: string, fn: () => Promise<void>) => {
    log(`\n# ${what}`);
    try {
      await fn();
    } catch (error) {
      const message = `${what} failed: ${(error as Error).message}`;
      log(`  ${message}`);
      results.notes.push(message);
    }
  };
  try {
    for (const scenario of opts.scenarios) {
      switch (scenario) {
        case "fanout":
        case "dm": {
          const mode = scenario === "fanout" ? "group" : "private";
          const title = scenario === "fanout" ? "fan-out" : "direct messages";
          if (opts.sequential || servers.length === 1) {
            for (const kind of servers) {
              await run(`${title}, ${kind}`, async () => {
                results.ladders.push(await ladder(opts, { kind }, mode, tmp));
              });
            }
          } else {
            await run(
              `${title}, ${servers.join(" and ")} in turn`,
              async () => {
                results.ladders.push(
                  ...await pairedLadders(
                    opts,
                    servers.map((kind) => ({ kind })),
                    mode,
                    tmp,
                  ),
                );
              },
            );
          }
          break;
        }
        case "sqlite":
          if (!servers.includes("chat")) break;
          await run("fan-out, chat with a SQLite file", async () => {
            results.ladders.push(
              await ladder(opts, { kind: "chat-sqlite" }, "group", tmp),
            );
          });
          break;
        case "idle":
          for (const kind of unframed) {
            await run(`idle memory, ${kind}`, async () => {
              results.idle.push(await idle(opts, { kind }, tmp));
            });
          }
          break;
        case "overload":
          for (const kind of unframed) {
            await run(`overload, ${kind}`, async () => {
              const own = results.ladders.find((l) =>
                l.server === kind && l.mode === "group"
              )?.ceiling;
              const ceiling = opts.ceiling ?? own;
              if (!ceiling) {
                throw new Error(
                  "no fan-out ceiling: run fanout first or pass --ceiling",
                );
              }
              results.overload.push(
                await overload(opts, { kind }, ceiling, tmp),
              );
            });
          }
          break;
        case "scale":
          for (const kind of unframed) {
            await run(`scale, ${kind}`, async () => {
              results.scale.push(await scale(opts, { kind }, tmp));
            });
          }
          break;
        case "cluster": {
          if (!servers.includes("chat")) break;
          const cluster = results.cluster!;
          for (const nodes of [1, 2]) {
            await run(`fan-out, chat on ${nodes} cluster node(s)`, async () => {
              cluster.ladders.push(
                await ladder(opts, { kind: "chat-redis", nodes }, "group", tmp),
              );
            });
          }
          await run(
            `scale, ${opts.clusterClients} clients on 2 cluster nodes`,
            async () => {
              cluster.scale = await scale(
                opts,
                { kind: "chat-redis", nodes: 2 },
                tmp,
                opts.clusterClients,
                opts.quick ? 2 : 5,
              );
            },
          );
          break;
        }
      }
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  results.finishedAt = new Date().toISOString();
  results.machine.loadAverageAtEnd = loadAverage();
  summarize(results);
  printSummary(results);
  await Deno.mkdir(opts.out, { recursive: true });
  const file = `${opts.out}/${
    started.toISOString().replace(/[:.]/g, "-")
  }.json`;
  await Deno.writeTextFile(file, JSON.stringify(results, null, 2) + "\n");
  log(`\nresults: ${file}`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
