/**
 * `ShardedSubscriber` on a real local Redis Cluster, with a topology it is
 * told by the test: a promotion (`CLUSTER FAILOVER`) that the topology does
 * not show yet puts the channel back on the demoted master (a replica
 * accepts `SSUBSCRIBE` for its master's slots), and once the topology shows
 * the new master the subscriber moves it there, reported as a loss and a
 * return so that the bus reads back what the move may have dropped.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Logger } from "../../src/runtime/log.ts";
import { KEYS } from "../../src/redis/keys.ts";
import { keySlot } from "../../src/redis/slot.ts";
import {
  ShardedSubscriber,
  type ShardLocator,
} from "../../src/redis/sharded_subscriber.ts";
import {
  redisCli,
  startLocalRedisCluster,
} from "../../tools/local_redis_cluster.ts";

const quiet: Logger = () => {};

/** A topology the test sets: `url` for every channel. */
class ToldLocator implements ShardLocator {
  url: string;
  refreshes = 0;
  constructor(url: string) {
    this.url = url;
  }
  shardUrl(): string {
    return this.url;
  }
  refreshTopology(): Promise<void> {
    this.refreshes++;
    return Promise.resolve();
  }
}

async function until(
  done: () => boolean | Promise<boolean>,
  what: string,
) {
  const deadline = Date.now() + 10_000;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function count(port: number, channel: string): Promise<number> {
  const reply = await redisCli(port, "PUBSUB", "SHARDNUMSUB", channel);
  return Number(reply.trim().split("\n").at(-1));
}

Deno.test("sharded subscriber: a channel put back on a demoted master by a topology that lags is moved to the new master once it shows, as a loss and a return", async () => {
  await using cluster = await startLocalRedisCluster();
  const channel = KEYS.roomChannel("r");
  const master = await cluster.masterOf(keySlot(channel));
  const replica = await cluster.replicaOf(master);
  const locator = new ToldLocator(master.url);
  const events: string[] = [];
  const subscriber = new ShardedSubscriber(locator, {
    name: "subscriber",
    log: quiet,
    onDown: () => events.push("down"),
    onReady: () => events.push("ready"),
  });
  try {
    const heard: string[] = [];
    assert.equal(
      await subscriber.subscribe(channel, (payload) => heard.push(payload)),
      true,
    );
    assert.equal(await count(master.port, channel), 1);

    // The promotion; the topology still names the old master.
    await redisCli(replica.port, "CLUSTER", "FAILOVER");
    await until(
      async () => (await cluster.masterOf(keySlot(channel))) === replica,
      "promotion",
    );
    // The demoted master dropped the subscription, and the subscriber
    // placed it there again, where the topology it has says.
    await until(() => events.includes("down"), "loss reported");
    await until(
      async () =>
        events.at(-1) === "ready" && await count(master.port, channel) === 1,
      "back on the demoted master",
    );
    assert.equal(await count(replica.port, channel), 0);
    assert.deepEqual(subscriber.channels, [channel]);

    // The topology catches up: the channel moves, a loss and a return.
    const before = events.length;
    locator.url = replica.url;
    await until(
      async () =>
        await count(replica.port, channel) === 1 &&
        await count(master.port, channel) === 0,
      "moved to the new master",
    );
    await until(() => events.at(-1) === "ready", "return reported");
    assert.deepEqual(events.slice(before), ["down", "ready"]);

    // Live on the new master.
    await redisCli(replica.port, "SPUBLISH", channel, "hello");
    await until(() => heard.includes("hello"), "published heard");
  } finally {
    await subscriber.close();
  }
});

Deno.test("sharded subscriber: with nothing lost, the topology is not read again", async () => {
  await using cluster = await startLocalRedisCluster();
  const channel = KEYS.roomChannel("r");
  const master = await cluster.masterOf(keySlot(channel));
  const locator = new ToldLocator(master.url);
  const subscriber = new ShardedSubscriber(locator, {
    name: "subscriber",
    log: quiet,
  });
  try {
    await subscriber.subscribe(channel, () => {});
    const refreshes = locator.refreshes;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(locator.refreshes, refreshes);
  } finally {
    await subscriber.close();
  }
});
