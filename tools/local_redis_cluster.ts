/**
 * A local Redis Cluster of child `redis-server` processes, for the tests
 * and for `deno task cluster --redis-cluster N`: `N` masters and one replica
 * each, on free ports of 127.0.0.1 (each with its own cluster bus port,
 * `cluster-port`), a short `cluster-node-timeout` so that a killed master's
 * replica is promoted within a few seconds, append-only files, and every
 * node's data in one temporary directory.
 *
 * `cluster-require-full-coverage no`: while some slots have no master, the
 * others still answer (the rooms of a dead master are unavailable, not the
 * whole cluster). After the start, {@linkcode LocalRedisCluster.addMaster}
 * adds an empty master and {@linkcode LocalRedisCluster.moveSlot} moves one
 * slot with its keys to another master (a resharding, step by step as
 * `redis-cli --cluster reshard` does it). It does not start nodes in other
 * places, nor remove nodes.
 *
 * @module
 */
import { join } from "node:path";
import { freePort, type LocalRedis, startLocalRedis } from "./local_redis.ts";

/** How long {@linkcode startLocalRedisCluster} waits for `cluster_state:ok`. */
const READY_TIMEOUT_MS = 30_000;

/** Options of {@linkcode startLocalRedisCluster}. */
export interface LocalRedisClusterOptions {
  /** How many masters (at least 3, which Redis requires); 3 unless told. */
  masters?: number;
  /** `cluster-node-timeout` in ms: 1000 unless told. */
  nodeTimeoutMs?: number;
  /** Where the nodes keep their data (a subdirectory each); a temporary directory when absent. */
  dir?: string;
}

/** What `CLUSTER NODES` says of one node. */
export interface ClusterNodeInfo {
  /** Its port on 127.0.0.1. */
  port: number;
  /** Whether it is a master now (replicas are promoted on failover). */
  master: boolean;
  /** Whether the cluster counts it as failed. */
  failed: boolean;
  /** The slot ranges it serves, `[first, last]`, when a master. */
  slots: [number, number][];
}

/** A running local Redis Cluster; disposing it stops every node. */
export class LocalRedisCluster implements AsyncDisposable {
  /** Its nodes, masters first as created (a failover swaps the roles). */
  readonly nodes: readonly LocalRedis[];
  /** The directory holding every node's data. */
  readonly dir: string;
  #ownsDir: boolean;
  #stopped = false;

  #nodes: LocalRedis[];
  #nodeTimeoutMs: number;

  /** Use {@linkcode startLocalRedisCluster}. */
  constructor(
    nodes: LocalRedis[],
    dir: string,
    ownsDir: boolean,
    nodeTimeoutMs = 1000,
  ) {
    this.nodes = this.#nodes = nodes;
    this.dir = dir;
    this.#ownsDir = ownsDir;
    this.#nodeTimeoutMs = nodeTimeoutMs;
  }

  /** Starts one more `redis-server` of this cluster's settings (not yet part of it). */
  async startNode(): Promise<LocalRedis> {
    const node = await startLocalRedis({
      dir: join(this.dir, `node${this.#nodes.length}`),
      args: () => clusterNodeArgs(this.#nodeTimeoutMs),
    });
    this.#nodes.push(node);
    return node;
  }

  /**
   * Adds an empty master (`redis-cli --cluster add-node`, no replica, no
   * slots) and waits until every node knows it and it says
   * `cluster_state:ok` (it has learnt where every slot is).
   */
  async addMaster(): Promise<LocalRedis> {
    const node = await this.startNode();
    const seed = this.#nodes.find((other) => other !== node && other.running);
    if (!seed) throw new Error("no running node to join");
    await redisCliTool(
      "add-node",
      `127.0.0.1:${node.port}`,
      `127.0.0.1:${seed.port}`,
    );
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (true) {
      const known = await Promise.all(
        this.#nodes.filter((other) => other.running).map(async (other) =>
          parseClusterNodes(await redisCli(other.port, "CLUSTER", "NODES"))
            .some((info) => info.port === node.port && info.master)
        ),
      ).catch(() => [false]);
      const state = await redisCli(node.port, "CLUSTER", "INFO").catch(() =>
        ""
      );
      if (known.every(Boolean) && state.includes("cluster_state:ok")) {
        return node;
      }
      if (Date.now() >= deadline) {
        throw new Error(`port ${node.port} did not join the cluster`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /**
   * Moves `slot` and its keys from its master now to the master `to`:
   * `CLUSTER SETSLOT … IMPORTING`/`MIGRATING`, `MIGRATE` of its keys in
   * batches, then `CLUSTER SETSLOT … NODE` on both and on every other
   * master. Commands on the slot's keys meanwhile get `ASK` or `TRYAGAIN`,
   * as during any resharding.
   */
  async moveSlot(slot: number, to: LocalRedis): Promise<void> {
    const from = await this.masterOf(slot);
    if (from.port === to.port) return;
    const id = async (node: LocalRedis) =>
      (await redisCli(node.port, "CLUSTER", "MYID")).trim();
    const [fromId, toId] = [await id(from), await id(to)];
    const setSlot = (node: LocalRedis, ...how: string[]) =>
      redisCli(node.port, "CLUSTER", "SETSLOT", String(slot), ...how);
    await setSlot(to, "IMPORTING", fromId);
    await setSlot(from, "MIGRATING", toId);
    while (true) {
      const keys = (await redisCli(
        from.port,
        "CLUSTER",
        "GETKEYSINSLOT",
        String(slot),
        "100",
      )).split("\n").map((key) => key.trim()).filter((key) => key !== "");
      if (keys.length === 0) break;
      const reply = await redisCli(
        from.port,
        "MIGRATE",
        "127.0.0.1",
        String(to.port),
        "",
        "0",
        "5000",
        "KEYS",
        ...keys,
      );
      if (!/^(OK|NOKEY)/.test(reply.trim())) {
        throw new Error(`MIGRATE of slot ${slot} failed: ${reply.trim()}`);
      }
    }
    await setSlot(to, "NODE", toId);
    await setSlot(from, "NODE", toId);
    for (const info of await this.topology()) {
      if (!info.master || info.failed) continue;
      if (info.port === from.port || info.port === to.port) continue;
      await setSlot(this.node(info.port), "NODE", toId);
    }
  }

  /** Every node as a seed, `redis://127.0.0.1:p1,redis://127.0.0.1:p2,...` (`REDIS_URL`). */
  get url(): string {
    return this.nodes.map((node) => node.url).join(",");
  }

  /** The node on `port`. */
  node(port: number): LocalRedis {
    const node = this.nodes.find((node) => node.port === port);
    if (!node) throw new Error(`no node of this cluster on port ${port}`);
    return node;
  }

  /** What a running node says of every node (`CLUSTER NODES`). */
  async topology(): Promise<ClusterNodeInfo[]> {
    for (const node of this.nodes) {
      if (!node.running) continue;
      try {
        return parseClusterNodes(await redisCli(node.port, "CLUSTER", "NODES"));
      } catch {
        // That one did not answer: ask the next.
      }
    }
    throw new Error("no node of the Redis Cluster answers");
  }

  /** The node that is the master of `slot` now, as a running node sees it. */
  async masterOf(slot: number): Promise<LocalRedis> {
    const info = (await this.topology()).find((node) =>
      node.master && !node.failed &&
      node.slots.some(([first, last]) => first <= slot && slot <= last)
    );
    if (!info) throw new Error(`slot ${slot} has no master now`);
    return this.node(info.port);
  }

  /** A replica of `master` (`INFO replication` on it names its replicas). */
  async replicaOf(master: LocalRedis): Promise<LocalRedis> {
    const info = await redisCli(master.port, "INFO", "replication");
    const match = /slave0:[^\r\n]*port=(\d+)/.exec(info);
    if (!match) {
      throw new Error(`the master on port ${master.port} has no replica`);
    }
    return this.node(Number(match[1]));
  }

  /**
   * Waits until every running node says `cluster_state:ok`, every slot has
   * a master that runs, and (when `replicas`) every master has a replica in
   * sync: after a start, or after a failover.
   */
  async waitUntilOk(
    timeoutMs = READY_TIMEOUT_MS,
    replicas = true,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (true) {
      try {
        last = await this.#problem(replicas);
        if (last === "") return;
      } catch (error) {
        last = String(error);
      }
      if (Date.now() >= deadline) {
        throw new Error(
          `the Redis Cluster is not ok after ${timeoutMs} ms: ${last}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** What is not ok yet, or "". */
  async #problem(replicas: boolean): Promise<string> {
    for (const node of this.nodes) {
      if (!node.running) continue;
      const info = await redisCli(node.port, "CLUSTER", "INFO");
      if (!info.includes("cluster_state:ok")) {
        return `port ${node.port}: not cluster_state:ok`;
      }
    }
    const topology = await this.topology();
    let covered = 0;
    for (const info of topology) {
      if (!info.master || info.failed || info.slots.length === 0) continue;
      if (!this.node(info.port).running) {
        return `port ${info.port} serves slots but is dead`;
      }
      for (const [first, last] of info.slots) covered += last - first + 1;
      if (!replicas) continue;
      const replication = await redisCli(info.port, "INFO", "replication");
      const match = /connected_slaves:(\d+)/.exec(replication);
      if (!match || Number(match[1]) < 1) {
        return `master on port ${info.port} has no replica`;
      }
      if (!/slave0:[^\r\n]*state=online/.test(replication)) {
        return `the replica of port ${info.port} is not in sync`;
      }
    }
    if (covered !== 16384) return `${covered} of 16384 slots served`;
    return "";
  }

  /**
   * Stops every node (`SIGTERM`) and removes the data directory if it was
   * made here. Safe to call more than once.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const node of this.nodes) await node.stop();
    if (this.#ownsDir) await Deno.remove(this.dir, { recursive: true });
  }

  /** Same as {@linkcode LocalRedisCluster.stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** Parses `CLUSTER NODES`. */
export function parseClusterNodes(text: string): ClusterNodeInfo[] {
  return text.trim().split("\n").filter((line) => line.trim() !== "").map(
    (line) => {
      const fields = line.trim().split(" ");
      // "127.0.0.1:7000@17000,hostname"
      const address = fields[1] ?? "";
      const port = Number(address.split("@")[0]!.split(":").at(-1));
      const flags = (fields[2] ?? "").split(",");
      const slots = fields.slice(8).filter((field) => !field.startsWith("["))
        .map((field): [number, number] => {
          const [first, last] = field.split("-");
          return [Number(first), Number(last ?? first)];
        });
      return {
        port,
        master: flags.includes("master"),
        failed: flags.includes("fail") || flags.includes("fail?"),
        slots,
      };
    },
  );
}

/** The flags of every `redis-server` of a local cluster. */
function clusterNodeArgs(nodeTimeoutMs: number): string[] {
  return [
    "--cluster-enabled",
    "yes",
    "--cluster-port",
    String(freePort()),
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    String(nodeTimeoutMs),
    "--cluster-require-full-coverage",
    "no",
    // A replica takes over however long its master was away.
    "--cluster-replica-validity-factor",
    "0",
  ];
}

/** Runs `redis-cli --cluster <args...>`; throws with its output on failure. */
async function redisCliTool(...args: string[]): Promise<void> {
  const run = await new Deno.Command("redis-cli", {
    args: ["--cluster", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!run.success) {
    throw new Error(
      `redis-cli --cluster ${args[0]} failed: ${
        new TextDecoder().decode(run.stdout)
      }${new TextDecoder().decode(run.stderr)}`,
    );
  }
}

/** Runs `redis-cli -p port args...` and returns its output; throws on failure. */
export async function redisCli(
  port: number,
  ...args: string[]
): Promise<string> {
  const output = await new Deno.Command("redis-cli", {
    args: ["-h", "127.0.0.1", "-p", String(port), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(
      `redis-cli ${args.join(" ")} failed: ${
        new TextDecoder().decode(output.stderr)
      }${text}`,
    );
  }
  // redis-cli exits 0 on an error reply, which it prints as "ERR ...".
  if (/^(ERR|CLUSTERDOWN|LOADING) /.test(text)) {
    throw new Error(`redis-cli ${args.join(" ")}: ${text.trim()}`);
  }
  return text;
}

/**
 * Starts `masters` masters and a replica each (`redis-cli --cluster create
 * --cluster-replicas 1`) and waits (at most 30 s) until the cluster is ok
 * with every replica in sync. Throws when `redis-server` or `redis-cli` is
 * not installed.
 */
export async function startLocalRedisCluster(
  options: LocalRedisClusterOptions = {},
): Promise<LocalRedisCluster> {
  const masters = options.masters ?? 3;
  if (!Number.isSafeInteger(masters) || masters < 3) {
    throw new RangeError(`a Redis Cluster needs 3 masters or more: ${masters}`);
  }
  const timeout = options.nodeTimeoutMs ?? 1000;
  const ownsDir = options.dir === undefined;
  const dir = options.dir ??
    await Deno.makeTempDir({ prefix: "chat_redis_cluster_" });
  const nodes: LocalRedis[] = [];
  const cluster = new LocalRedisCluster(nodes, dir, ownsDir, timeout);
  try {
    for (let i = 0; i < masters * 2; i++) await cluster.startNode();
    await redisCliTool(
      "create",
      ...nodes.map((node) => `127.0.0.1:${node.port}`),
      "--cluster-replicas",
      "1",
      "--cluster-yes",
    );
    await cluster.waitUntilOk();
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}
