/**
 * `deno task bench:wait`: what `REDIS_WAIT_REPLICAS=1` costs a chat message
 * stored in a Redis Cluster. It starts a local Redis Cluster (3 masters, a
 * replica each, `appendfsync always` as every local redis-server here),
 * opens the chat server's own {@linkcode RedisStorage} on it twice (without
 * and with `waitReplicas: 1`), and measures each in turn, three rounds:
 *
 * - **latency**: `GroupChat` writes one at a time over 100 rooms (so over
 *   every shard), the time from `write` to its result, p50 / p99;
 * - **throughput**: 64 writes in flight for `--seconds` (3), writes/s.
 *
 * It measures the storage step only (the part `WAIT` adds to), not a whole
 * server; `deno task bench --scenario cluster` measures the server. Prints a
 * Markdown table with the median of the rounds and their spread.
 *
 * ```sh
 * deno task bench:wait
 * deno task bench:wait --seconds 5 --writes 3000
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Logger } from "../../src/runtime/log.ts";
import type { RedisConnection } from "../../src/redis/connection.ts";
import { openRedis } from "../../src/redis/open_redis.ts";
import { RedisStorage } from "../../src/redis/storage.ts";
import type { StoredGroupChat } from "../../src/wire/protocol.ts";
import { startLocalRedisCluster } from "../../tools/local_redis_cluster.ts";

/** Rooms written to, spread over the shards by their hash slots. */
const ROOMS = 100;
/** Writes in flight in the throughput measure. */
const IN_FLIGHT = 64;
/** Rounds; each measures both settings in turn. */
const ROUNDS = 3;

/** One round's figures for one setting. */
interface Sample {
  p50Ms: number;
  p99Ms: number;
  perSecond: number;
  failed: number;
}

const quiet: Logger = () => {};
let counter = 0;

/** A `GroupChat` as the reducer hands it to storage (`seq` 0: Redis gives it). */
function message(room: string): StoredGroupChat {
  const n = ++counter;
  return {
    id: `m-${n}`,
    seq: 0,
    room,
    sender_username: "alice",
    content: "x".repeat(64),
    timestamp: Date.now(),
  };
}

/** The value at percentile `p` of sorted `values`. */
function at(values: number[], p: number): number {
  const index = Math.min(
    values.length - 1,
    Math.ceil(p / 100 * values.length) - 1,
  );
  return Math.round(values[Math.max(0, index)]! * 100) / 100;
}

/** The median of `values` and their spread, as text. */
function median(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  return `${sorted[Math.floor(sorted.length / 2)]} (${sorted[0]}–${
    sorted.at(-1)
  })`;
}

/** Latency of `writes` writes one at a time, then throughput for `seconds`. */
async function measure(
  storage: RedisStorage,
  writes: number,
  seconds: number,
): Promise<Sample> {
  const latencies: number[] = [];
  let failed = 0;
  for (let i = 0; i < writes; i++) {
    const started = performance.now();
    const [result] = await storage.write([
      { kind: "group", message: message(`room${i % ROOMS}`) },
    ]);
    latencies.push(performance.now() - started);
    if (!result?.ok) failed++;
  }
  latencies.sort((a, b) => a - b);
  let done = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async (_, lane) => {
      for (let i = lane; performance.now() < deadline; i += IN_FLIGHT) {
        const [result] = await storage.write([
          { kind: "group", message: message(`room${i % ROOMS}`) },
        ]);
        if (result?.ok) done++;
        else failed++;
      }
    }),
  );
  return {
    p50Ms: at(latencies, 50),
    p99Ms: at(latencies, 99),
    perSecond: Math.round(done / ((performance.now() - started) / 1000)),
    failed,
  };
}

/** Waits until `connection` is up. */
async function up(connection: RedisConnection): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!connection.up) {
    if (Date.now() > deadline) throw new Error("redis did not come up");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Runs the benchmark; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      seconds: { type: "string", default: "3" },
      writes: { type: "string", default: "2000" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "deno task bench:wait [--seconds S (3)] [--writes N (2000)]",
    );
    return 0;
  }
  const seconds = Number(values.seconds);
  const writes = Number(values.writes);
  if (!(seconds > 0) || !Number.isSafeInteger(writes) || writes < 1) {
    console.error("error: --seconds and --writes must be positive numbers");
    return 2;
  }
  await using cluster = await startLocalRedisCluster();
  const settings = [0, 1] as const;
  const connections = settings.map(() =>
    openRedis(cluster.url, { name: "bench", log: quiet })
  );
  try {
    await Promise.all(connections.map(up));
    const storages = settings.map((waitReplicas, i) =>
      new RedisStorage(connections[i]!, {
        nodeId: "bench",
        historySize: 100,
        authEnabled: false,
        waitReplicas,
      })
    );
    const samples: Sample[][] = settings.map(() => []);
    // Warm-up: scripts loaded on every master, connections open.
    for (const storage of storages) await measure(storage, 200, 0.5);
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [i, storage] of storages.entries()) {
        const sample = await measure(storage, writes, seconds);
        samples[i]!.push(sample);
        console.log(
          `round ${round}, REDIS_WAIT_REPLICAS=${
            settings[i]
          }: p50 ${sample.p50Ms} ms, p99 ${sample.p99Ms} ms, ${sample.perSecond} writes/s, ${sample.failed} failed`,
        );
      }
    }
    console.log(
      `\n| REDIS_WAIT_REPLICAS | write p50 ms | write p99 ms | writes/s (${IN_FLIGHT} in flight) | failed |`,
    );
    console.log("| --- | --- | --- | --- | --- |");
    for (const [i, setting] of settings.entries()) {
      const mine = samples[i]!;
      console.log(
        `| ${setting} | ${median(mine.map((s) => s.p50Ms))} | ${
          median(mine.map((s) => s.p99Ms))
        } | ${median(mine.map((s) => s.perSecond))} | ${
          mine.reduce((sum, s) => sum + s.failed, 0)
        } |`,
      );
    }
    console.log(
      `\nmedian (spread) of ${ROUNDS} rounds; each round measures both in turn`,
    );
    return 0;
  } finally {
    await Promise.all(connections.map((c) => c.close()));
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
