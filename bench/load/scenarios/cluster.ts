/**
 * The `cluster` scenario: the fan-out ladder on one and on two chat nodes
 * sharing a fresh local redis-server (room members spread over the nodes),
 * then `--cluster-clients` connections in one room across two nodes
 * (`scale.ts`). It needs `redis-server` on the PATH; it does not test
 * failover (the cluster tests do).
 *
 * @module
 */
import type { LoadContext, Section } from "../context.ts";
import type { BenchResults } from "../report.ts";
import { ladder } from "./ladder.ts";
import { scale } from "./scale.ts";

/** Both halves of the scenario, into `results.cluster`. */
export async function runCluster(
  context: LoadContext,
  results: BenchResults,
  section: Section,
): Promise<void> {
  const { options } = context;
  if (!options.servers.includes("chat")) return;
  const cluster = results.cluster!;
  for (const nodes of [1, 2]) {
    await section(`fan-out, chat on ${nodes} cluster node(s)`, async () => {
      cluster.ladders.push(
        await ladder(context, { kind: "chat-redis", nodes }, "group"),
      );
    });
  }
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
