/**
 * The `scale` scenario (and the cluster scenario's second half): many
 * connections, several per user, in one room, then a few broadcasts that
 * every one of them must receive. It reads connect time, RSS, and each
 * broadcast's latency to the last receiver; on a cluster, each node's and
 * Redis's CPU too.
 *
 * @module
 */
import type { ClientSpec, RunReply } from "../control.ts";
import type { BenchResults } from "../report.ts";
import { type LoadContext, type Section, unframed } from "../context.ts";
import { cpuBetween, latency, MB, merge, sleep, snapshot } from "../measure.ts";
import {
  connectAll,
  nodeUrls,
  onRedis,
  type ServerKind,
  type ServerSetup,
  session,
  sourceAddresses,
} from "../processes.ts";
import { rssBytes } from "../proc.ts";
import { log } from "../report.ts";

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
export async function scale(
  context: LoadContext,
  setup: ServerSetup,
  n: number = context.options.scaleClients,
  broadcastCount = 5,
): Promise<ScaleResult> {
  const { options } = context;
  const g = Math.max(options.generators, Math.ceil(n / 5000));
  const users = options.scaleUsers > 0 && options.scaleUsers < n
    ? options.scaleUsers
    : n;
  const auth = setup.kind !== "baseline" && users < n;
  const admin = "bench-admin-secret";
  const full: ServerSetup = auth
    // The admin token goes in the environment: the server refuses secrets
    // on its command line.
    ? { ...setup, extra: ["--auth"], env: { ADMIN_TOKEN: admin } }
    : setup;
  const cluster = onRedis(setup.kind);
  return await session(context, full, g, async (servers, generators) => {
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
              headers: {
                authorization: `Bearer ${admin}`,
                "content-type": "application/json",
              },
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
      const step = context.steps.next();
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
            servers.redisPids.reduce(
              (sum, pid) => sum + (rssBytes(pid) ?? 0),
              0,
            ),
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

/** The `scale` scenario on every server of the run but `baseline-framed`. */
export async function runScale(
  context: LoadContext,
  results: BenchResults,
  section: Section,
): Promise<void> {
  for (const kind of unframed(context.options)) {
    await section(`scale, ${kind}`, async () => {
      results.scale.push(await scale(context, { kind }));
    });
  }
}
