/**
 * What `deno task bench` prints and writes: the line of each measured step,
 * the Markdown tables of the ladders and of the cluster, the summary
 * against the baseline and the targets ({@linkcode summarize}), and the
 * shape of the results file ({@linkcode BenchResults}). It measures nothing
 * and starts no process; `--report FILE` prints a results file again
 * through {@linkcode printSummary}.
 *
 * @module
 */
import type { BenchOptions } from "./context.ts";
import type { ServerKind } from "./processes.ts";
import type { machineInfo } from "./proc.ts";
import type { IdleResult } from "./scenarios/idle.ts";
import type { LadderResult, StepResult } from "./scenarios/ladder.ts";
import type { OverloadResult } from "./scenarios/overload.ts";
import type { ScaleResult } from "./scenarios/scale.ts";
import type { HotRoomResult } from "./scenarios/hot_room.ts";
import type { RoomFillResult } from "./scenarios/room_fill.ts";
import { bigRoomTables } from "./big_room_report.ts";
import type { FailoverResult } from "./scenarios/failover.ts";

/** Prints one line of the run's output. */
export function log(line: string): void {
  console.log(line);
}

const ms = (v: number) => v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);

/** Prints the line of one measured rate. */
export function printStep(name: string, mode: string, s: StepResult): void {
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

/**
 * Markdown table of the cluster ladders: every node's CPU and RSS, and
 * Redis's (all redis-servers together, and each shard's master per message).
 */
export function clusterTable(ladders: LadderResult[]): string {
  const rows = [
    "| redis | mode | nodes | msg/s | deliveries/s | delivered | p50 ms | p99 ms | max ms | node CPU | node RSS MB | redis CPU | redis µs/msg per shard | redis RSS MB | generator CPU | machine busy | other CPU | pass |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const l of ladders) {
    const steps = [...l.steps].sort((a, b) => a.rate - b.rate);
    const redis = l.server === "chat-redis-cluster" ? "cluster" : "standalone";
    for (const s of steps) {
      rows.push(
        `| ${redis} | ${l.mode} | ${
          l.nodes ?? 1
        } | ${s.rate} | ${s.deliveriesPerSec} | ${
          s.deliveredPct.toFixed(1)
        }% | ${ms(s.latency.p50Ms)} | ${ms(s.latency.p99Ms)} | ${
          ms(s.latency.maxMs)
        } | ${(s.nodeCpuPct ?? [s.serverCpuPct]).join(" / ")}% | ${
          (s.nodeRssMaxMb ?? [s.serverRssMaxMb]).join(" / ")
        } | ${s.redisCpuPct ?? "-"}% | ${
          s.redisShardCpuUsPerMsg?.join(" / ") ?? "-"
        } | ${s.redisRssMaxMb ?? "-"} | ${
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
  /** Each master killed on a Redis Cluster (absent before it was measured). */
  failover?: FailoverResult[];
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
  /** The `hot-room` scenario: one climb per server. */
  hotRoom?: HotRoomResult[];
  /** The `room-fill` scenario: one fill per server. */
  roomFill?: RoomFillResult[];
  summary: Record<string, unknown>;
  notes: string[];
}

/** `a / b` to two decimals, `null` without both. */
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

/** Fills `results.summary`: the ceilings and their ratios to the baseline, the targets. */
export function summarize(results: BenchResults): void {
  const roomSize = results.settings.roomSize;
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
      unit: "messages/s into rooms of " + roomSize,
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
    const ceilings = cluster.ladders.map((l) => ({
      redis: l.server === "chat-redis-cluster" ? "cluster" : "standalone",
      mode: l.mode,
      nodes: l.nodes ?? 1,
      ceiling: l.ceiling,
      ceilingReached: l.ceilingReached,
      deliveriesPerSec: l.ceilingDeliveriesPerSec,
      redisCpuUsPerMsgPerShard: l.atCeiling?.redisShardCpuUsPerMsg,
    }));
    summary.cluster = {
      ceilings,
      failoverRecoveryMs: cluster.failover?.map((f) => f.recoveryMs),
      fanoutCeiling: {
        oneNode: one?.ceiling,
        twoNodes: two?.ceiling,
        unit: "messages/s into rooms of " + roomSize +
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

/** Prints the tables and the summary of `results`. */
export function printSummary(results: BenchResults): void {
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
    log("\n## Cluster (nodes sharing a redis-server or a Redis Cluster)\n");
    log(clusterTable(cluster.ladders));
    for (const l of cluster.ladders) {
      log(
        `\n${l.server} ×${l.nodes ?? 1}, ${l.mode}: ceiling ${l.ceiling} msg/s${
          l.ceilingReached ? "" : " (not reached)"
        } (${l.ceilingDeliveriesPerSec} deliveries/s); redis µs/msg per shard at it: ${
          l.atCeiling?.redisShardCpuUsPerMsg?.join(" / ") ?? "-"
        }.`,
      );
    }
  }
  for (const f of cluster?.failover ?? []) {
    log(
      `\nMaster killed: the room delivered again after ${
        f.recoveryMs ?? "never"
      } ms (${f.unavailable} sends unavailable meanwhile; ${f.received} received, ${
        f.inOrder ? "seq in order" : "seq NOT in order"
      }).`,
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
  for (const line of bigRoomTables(results)) log(line);
  if (results.notes.length > 0) {
    log("\nNotes:\n- " + results.notes.join("\n- "));
  }
}
