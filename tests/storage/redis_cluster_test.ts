/**
 * The storage on a real local Redis Cluster (3 masters, 3 replicas):
 * `openRedis` picks the cluster client from several seeds and from one
 * node's URL, rooms spread over the shards with every script in one slot,
 * and `REDIS_WAIT_REPLICAS` (`waitReplicas`) acknowledges only what a
 * replica has.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Logger } from "../../src/runtime/log.ts";
import type { StoredGroupChat } from "../../src/wire/protocol.ts";
import type { RedisConnection } from "../../src/redis/connection.ts";
import { openRedis } from "../../src/redis/open_redis.ts";
import { RedisStorage } from "../../src/redis/storage.ts";
import { KEYS } from "../../src/redis/keys.ts";
import { startLocalRedis } from "../../tools/local_redis.ts";
import {
  redisCli,
  startLocalRedisCluster,
} from "../../tools/local_redis_cluster.ts";

const quiet: Logger = () => {};

async function until(done: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function group(room: string, n: number): StoredGroupChat {
  return {
    id: `${room}-${n}`,
    seq: 0,
    room,
    sender_username: "alice",
    content: `message ${n}`,
    timestamp: 1_700_000_000_000 + n,
  };
}

/** Writes one message to each of `rooms` and checks the seqs and history. */
async function roundTrip(connection: RedisConnection, rooms: string[]) {
  const storage = new RedisStorage(connection, {
    nodeId: "n",
    historySize: 10,
    authEnabled: false,
  });
  for (const n of [1, 2]) {
    const results = await storage.write(
      rooms.map((room) => ({ kind: "group", message: group(room, n) })),
    );
    assert.deepEqual(results, rooms.map(() => ({ ok: true, seq: n })));
  }
  for (const room of rooms) {
    const page = await storage.history(room, {
      kind: "last",
      count: 10,
      upTo: Number.MAX_SAFE_INTEGER,
    });
    assert.deepEqual(page.messages.map((m) => m.seq), [1, 2]);
  }
}

Deno.test("redis cluster: openRedis uses the cluster client for several seeds and for one node's URL; rooms spread over every shard", async (t) => {
  await using cluster = await startLocalRedisCluster();
  const rooms = Array.from({ length: 12 }, (_, i) => `room${i}`);
  // The rooms land on more than one master.
  const masters = new Set<number>();
  for (const room of rooms) {
    const slot = Number(
      (await redisCli(
        cluster.nodes[0]!.port,
        "CLUSTER",
        "KEYSLOT",
        KEYS.seq(room),
      ))
        .trim(),
    );
    masters.add((await cluster.masterOf(slot)).port);
  }
  assert.equal(masters.size, 3);
  for (
    const [name, url] of [
      ["several seeds", cluster.url],
      ["one node", cluster.nodes[1]!.url],
    ] as const
  ) {
    await t.step(name, async () => {
      const connection = openRedis(url, { name: "test", log: quiet });
      try {
        await until(() => connection.up);
        await roundTrip(connection, rooms.map((room) => `${room}-${name}`));
      } finally {
        await connection.close();
      }
    });
  }
});

Deno.test("redis cluster: waitReplicas acknowledges what a replica has; without a replica the outcome is unknown", async () => {
  await using cluster = await startLocalRedisCluster();
  const replicated = openRedis(cluster.url, { name: "test", log: quiet });
  await using redis = await startLocalRedis();
  const alone = openRedis(redis.url, { name: "test", log: quiet });
  try {
    await until(() => replicated.up && alone.up);
    const options = {
      nodeId: "n",
      historySize: 10,
      authEnabled: false,
      waitReplicas: 1,
    };
    const onCluster = new RedisStorage(replicated, options);
    assert.deepEqual(
      await onCluster.write([{ kind: "group", message: group("r", 1) }]),
      [{ ok: true, seq: 1 }],
    );
    const standalone = new RedisStorage(alone, options);
    const [result] = await standalone.write([
      { kind: "group", message: group("r", 1) },
    ]);
    assert.equal(result?.ok, false);
    assert.equal(!result?.ok && result?.reason, "unknown");
  } finally {
    await replicated.close();
    await alone.close();
  }
});
