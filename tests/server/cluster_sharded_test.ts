/**
 * Sharded pub/sub: a node follows a room's channel only while it has
 * members there and a user's channel only while it holds the user (on
 * standalone Redis and on a Redis Cluster), and its subscriptions follow a
 * replica promoted by `CLUSTER FAILOVER` while a history read is in flight.
 * Counts come from Redis itself (`PUBSUB SHARDNUMSUB` on the master of the
 * channel's slot).
 *
 * @module
 */
import assert from "node:assert/strict";
import { KEYS } from "../../src/redis/keys.ts";
import { keySlot } from "../../src/redis/slot.ts";
import { redisCli } from "../../tools/local_redis_cluster.ts";
import { envelope, TestClient, waitFor } from "../support/helpers.ts";
import {
  answerOf,
  answerTo,
  BACKENDS,
  startCluster,
  subscribers,
  waitForSubscribers,
} from "../support/cluster_helpers.ts";

for (const backend of BACKENDS) {
  Deno.test(`cluster, sharded: a node follows a room's channel while it has members there, and a user's while it holds the user (${backend})`, async () => {
    await using cluster = await startCluster(2, {}, backend);
    const [a, b] = cluster.nodes;
    const room = KEYS.roomChannel("r");
    const bobs = KEYS.userChannel("bob");
    await using alice = await TestClient.connect(a!.wsUrl);
    await alice.enter("alice", "r");
    await waitForSubscribers(cluster, room, 1);
    assert.ok(a!.server.bus!.channels.includes(room));
    assert.ok(!b!.server.bus!.channels.includes(room));

    const bob = await TestClient.connect(b!.wsUrl);
    try {
      await bob.enter("bob", "r");
      // Subscribed before the join ran, so at once.
      assert.equal(await subscribers(cluster, room), 2);
      assert.equal(await subscribers(cluster, bobs), 1);
      assert.equal((await alice.expect("Enter")).sender_username, "bob");

      // Traffic flows both ways on the one channel.
      const sent = await answerTo(
        alice,
        "GroupChat",
        { sender_username: "alice", room: "r", content: "hi" },
        "g1",
        5000,
      );
      assert.equal(sent.answer.message_type, "Ack");
      assert.equal((await bob.expect("GroupChat")).content, "hi");

      bob.send(envelope("Leave", { sender_username: "bob", room: "r" }, "l1"));
      assert.equal((await bob.expect("Ack")).ref, "l1");
      assert.equal((await alice.expect("Leave")).sender_username, "bob");
      // B's last member left: B unsubscribes; bob is still held.
      await waitForSubscribers(cluster, room, 1);
      assert.ok(!b!.server.bus!.channels.includes(room));
      assert.equal(await subscribers(cluster, bobs), 1);
    } finally {
      await bob.close();
    }
    // Bob's last connection closed: B no longer follows bob.
    await waitForSubscribers(cluster, bobs, 0);
    await alice.silent(0);
  });
}

Deno.test("cluster failover: a replica promoted (CLUSTER FAILOVER) while a history read is in flight; the read is answered, subscriptions move, no reconnect", async () => {
  await using cluster = await startCluster(2, {}, "redis-cluster");
  const redis = cluster.redisCluster!;
  const [a, b] = cluster.nodes;
  const channel = KEYS.roomChannel("r");
  const master = await redis.masterOf(keySlot(channel));
  const replica = (await redis.replicaOf(master)).port;
  await using alice = await TestClient.connect(a!.wsUrl);
  await using bob = await TestClient.connect(b!.wsUrl);
  await alice.enter("alice", "r");
  await bob.enter("bob", "r");
  await alice.expect("Enter");
  for (let i = 1; i <= 5; i++) {
    const sent = await answerTo(
      alice,
      "GroupChat",
      { sender_username: "alice", room: "r", content: `m${i}` },
      `g${i}`,
      5000,
    );
    assert.equal(sent.answer.message_type, "Ack");
    assert.equal((await bob.expect("GroupChat")).seq, i);
  }
  await redisCli(master.port, "WAIT", "1", "2000");

  // The read and the promotion at once.
  const promoted = Date.now();
  bob.send(envelope("History", { room: "r", limit: 10 }, "h0"));
  await redisCli(replica, "CLUSTER", "FAILOVER");
  let history;
  for (let attempt = 0; !history; attempt++) {
    // The first answer is to the read sent before the promotion.
    const { answer, before } = attempt === 0
      ? await answerOf(bob, "h0", 10_000)
      : await answerTo(
        bob,
        "History",
        { room: "r", limit: 10 },
        `h${attempt}`,
        10_000,
      );
    const page = before.find((f) => f.message_type === "History");
    if (page) {
      history = page.message_body;
    } else {
      assert.equal(answer.message_type, "Error", JSON.stringify(answer));
      assert.equal(answer.message_body.code, "unavailable");
      assert.ok(Date.now() - promoted < 10_000, "answered within 10 s");
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  assert.deepEqual(
    history.messages.map((m: { seq: number }) => m.seq),
    [1, 2, 3, 4, 5],
    JSON.stringify(history),
  );

  // The replica is the master now, and both nodes listen there.
  await waitFor(
    async () =>
      (await redis.masterOf(keySlot(channel)).catch(() => null))?.port ===
        replica,
    "promotion",
    10_000,
  );
  await waitForSubscribers(cluster, channel, 2, 10_000);
  assert.ok(Date.now() - promoted < 10_000, "subscriptions moved in 10 s");

  // Live again, seq neither repeated nor reordered, on the same sockets.
  let acked;
  for (let i = 0; !acked; i++) {
    const sent = await answerTo(
      alice,
      "GroupChat",
      { sender_username: "alice", room: "r", content: `after${i}` },
      `a${i}`,
      8000,
    );
    if (sent.answer.message_type === "Ack") acked = sent.answer.message_body;
    else {
      assert.equal(sent.answer.message_body.code, "unavailable");
      assert.ok(Date.now() - promoted < 10_000, "carried on within 10 s");
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  assert.equal(acked.seq, 6);
  const live = await bob.expect("GroupChat");
  assert.equal(live.seq, 6);
  await bob.silent(300);
});
