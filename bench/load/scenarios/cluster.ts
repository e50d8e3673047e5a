/**
 * The `cluster` scenario: the fan-out and the direct-message ceilings of two
 * chat nodes on a fresh standalone redis-server and on a fresh local Redis
 * Cluster of 3 masters and 3 replicas, climbed in turn in the same run
 * (`pairedLadders`), with the CPU each redis-server spent per message; the
 * time from a master's death to the first message delivered again for its
 * rooms (`failover.ts`); then `--cluster-clients` connections in one room
 * across two nodes on the standalone redis-server (`scale.ts`; skipped with
 * `--cluster-clients 0`). It needs `redis-server` and `redis-cli` on the
 * PATH.
 *
 * @module
 */
import type { LoadContext, Section } from "../context.ts";
import type { BenchResults } from "../report.ts";
import type { ServerSetup } from "../processes.ts";
import { pairedLadders } from "./ladder.ts";
import { runFailover } from "./failover.ts";
import { scale } from "./scale.ts";

/** The two deployments compared: two nodes each. */
const SETUPS: ServerSetup[] = [
  { kind: "chat-redis", nodes: 2 },
  { kind: "chat-redis-cluster", nodes: 2 },
];

/** Every part of the scenario, into `results.cluster`. */
export async function runCluster(
  context: LoadContext,
  results: BenchResults,
  section: Section,
): Promise<void> {
  const { options } = context;
  if (!options.servers.includes("chat")) return;
  const cluster = results.cluster!;
  for (const mode of ["group", "private"] as const) {
    const title = mode === "group" ? "fan-out" : "direct messages";
    await section(
      `${title}, 2 nodes on a redis-server and on a 3-master Redis Cluster, in turn`,
      async () => {
        cluster.ladders.push(...await pairedLadders(context, SETUPS, mode));
      },
    );
  }
  cluster.failover ??= [];
  await runFailover(context, cluster.failover, section, options.quick ? 1 : 3);
  if (options.clusterClients <= 0) return;
  await section(
    `scale, ${options.clusterClients} clients on 2 cluster nodes`,
    async () => {
      cluster.scale = await scale(
        context,
        { kind: "chat-redis", nodes: 2 },
        options.clusterClients,
        options.quick ? 2 : 5,
      );
    },
  );
}
