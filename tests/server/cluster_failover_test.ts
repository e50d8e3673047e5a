/**
 * Failover on a Redis Cluster: a master killed with `kill -9` while nodes
 * chat, and while a node is joining a room (the replica promoted while a
 * history read is in flight is in `cluster_sharded_test.ts`). Its rooms
 * answer `unavailable` while their slots have no master,
 * the other rooms carry on, and once the replica is promoted the nodes
 * carry on by themselves (no client reconnects), with `seq` neither
 * repeated nor reordered.
 *
 * @module
 */
import assert from "node:assert/strict";
import { KEYS } from "../../src/redis/keys.ts";
import { redisCli } from "../../tools/local_redis_cluster.ts";
import type { LocalRedisCluster } from "../../tools/local_redis_cluster.ts";
import {
  envelope,
  type Frame,
  serve,
  TestClient,
  waitFor,
} from "../support/helpers.ts";
import {
  answerOf,
  answerTo,
  startCluster,
  waitForSubscribers,
} from "../support/cluster_helpers.ts";

/** The slot of a room's keys. */
async function slotOf(cluster: LocalRedisCluster, room: string) {
  return Number(
    (await redisCli(
      cluster.nodes[0]!.port,
      "CLUSTER",
      "KEYSLOT",
      KEYS.seq(room),
    )).trim(),
  );
}

/** Two rooms whose slots have different masters now. */
async function twoRooms(cluster: LocalRedisCluster) {
  const first = "room0";
  const master = await cluster.masterOf(await slotOf(cluster, first));
  for (let i = 1;; i++) {
    const room = `room${i}`;
    const other = await cluster.masterOf(await slotOf(cluster, room));
    if (other.port !== master.port) {
      return { doomed: first, master, safe: room };
    }
  }
}

Deno.test("cluster failover: a master killed during traffic; its rooms are unavailable, then carry on within 10 s without reconnecting; other rooms carry on", async () => {
  await using cluster = await startCluster(2, {}, "redis-cluster");
  const redis = cluster.redisCluster!;
  const { doomed, master, safe } = await twoRooms(redis);
  const [a, b] = cluster.nodes as [
    typeof cluster.nodes[0],
    typeof cluster.nodes[0],
  ];
  await using alice = await TestClient.connect(a!.wsUrl);
  await using bob = await TestClient.connect(b!.wsUrl);
  for (const room of [doomed, safe]) {
    await alice.enter("alice", room);
    await bob.enter("bob", room);
    await alice.expect("Enter");
  }
  const send = (room: string, ref: string, ms = 5000) =>
    answerTo(
      alice,
      "GroupChat",
      {
        sender_username: "alice",
        room,
        content: ref,
      },
      ref,
      ms,
    );
  const first = await send(doomed, "d1");
  assert.equal(first.answer.message_type, "Ack", JSON.stringify(first));
  const got = await bob.expect("GroupChat");
  assert.equal(got.seq, 1);
  // The replica has seq 1 before the master dies (asynchronous replication
  // may lose the last writes otherwise: see REDIS_WAIT_REPLICAS).
  await redisCli(master.port, "WAIT", "1", "2000");

  await master.kill();
  const killed = Date.now();
  // Another master's rooms carry on.
  const other = await send(safe, "s1");
  assert.equal(other.answer.message_type, "Ack", JSON.stringify(other));
  assert.equal((await bob.expect("GroupChat")).content, "s1");

  // The doomed room: unavailable until the promotion, then Ack.
  let answers = 0;
  let acked: { seq: number } | undefined;
  while (Date.now() - killed < 15_000) {
    const ref = `d-${++answers}`;
    const reply = await send(doomed, ref, 8000);
    const frame = reply.answer;
    if (frame.message_type === "Ack") {
      acked = { seq: Number(frame.message_body.seq) };
      break;
    }
    assert.equal(frame.message_body.code, "unavailable", JSON.stringify(frame));
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const recovered = Date.now() - killed;
  assert.ok(acked, "the room carries on after the promotion");
  assert.ok(recovered < 10_000, `carried on after ${recovered} ms`);
  assert.equal(acked.seq, 2, "seq neither repeated nor skipped");
  // Bob, on the other node, gets it without reconnecting.
  let message;
  do {
    message = await bob.expect("GroupChat");
  } while (message.room !== doomed);
  assert.equal(message.seq, 2);
  assert.equal(message.content, `d-${answers}`);
  // Both nodes listen on the room's channel at its new master (node-redis
  // alone would have dropped the subscriptions of the dead master).
  await waitForSubscribers(cluster, KEYS.roomChannel(doomed), 2, 10_000);
});

Deno.test("cluster failover: a master killed while a node is joining a room; the Enter is unavailable or done, then the room carries on within 10 s without reconnecting", async () => {
  await using cluster = await startCluster(2, {}, "redis-cluster");
  const redis = cluster.redisCluster!;
  const { doomed, master } = await twoRooms(redis);
  const [a, b] = cluster.nodes as [
    typeof cluster.nodes[0],
    typeof cluster.nodes[0],
  ];
  await using alice = await TestClient.connect(a!.wsUrl);
  await using bob = await TestClient.connect(b!.wsUrl);
  await alice.enter("alice", doomed);
  const first = await answerTo(
    alice,
    "GroupChat",
    { sender_username: "alice", room: doomed, content: "d1" },
    "d1",
    5000,
  );
  assert.equal(first.answer.message_type, "Ack", JSON.stringify(first));
  await redisCli(master.port, "WAIT", "1", "2000");

  // Bob's Enter is on its way (subscribe, claim, join) when the master dies.
  bob.send(envelope("Enter", { sender_username: "bob", room: doomed }, "e0"));
  await master.kill();
  const killed = Date.now();
  let entered = false;
  for (let attempt = 0; !entered; attempt++) {
    // The first answer is to the Enter sent before the kill.
    const { answer, before } = attempt === 0
      ? await answerOf(bob, "e0", 10_000)
      : await answerTo(
        bob,
        "Enter",
        { sender_username: "bob", room: doomed },
        `e${attempt}`,
        10_000,
      );
    const presence = before.find((f) => f.message_type === "Presence");
    if (presence) {
      assert.deepEqual(presence.message_body.members, ["alice", "bob"]);
      entered = true;
    } else {
      assert.equal(answer.message_type, "Error", JSON.stringify(answer));
      assert.equal(answer.message_body.code, "unavailable");
      assert.ok(Date.now() - killed < 10_000, "entered within 10 s");
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  // Bob's Enter reaches alice, unless it was published while alice's
  // node's channel was still moving to the promoted replica: presence has
  // no history to read back (a known limit, docs/design.md "Subscriptions
  // follow the slots"); seen under the full suite's load. So alice gets it
  // at most once, before her next answers or not at all.
  const aliceGot: Frame[] = [];

  // The room carries on: seq 2 next, to both, once.
  let acked;
  for (let i = 0; !acked; i++) {
    const sent = await answerTo(
      alice,
      "GroupChat",
      { sender_username: "alice", room: doomed, content: `d${i}` },
      `a${i}`,
      8000,
    );
    aliceGot.push(...sent.before);
    if (sent.answer.message_type === "Ack") acked = sent.answer.message_body;
    else {
      assert.equal(sent.answer.message_body.code, "unavailable");
      assert.ok(Date.now() - killed < 10_000, "carried on within 10 s");
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  assert.ok(Date.now() - killed < 10_000, "carried on within 10 s");
  assert.equal(acked.seq, 2, "seq neither repeated nor skipped");
  const got = await bob.expect("GroupChat");
  assert.equal(got.seq, 2);
  await waitForSubscribers(cluster, KEYS.roomChannel(doomed), 2, 10_000);
  await bob.silent(300);
  const enters = aliceGot.filter((f) => f.message_type === "Enter");
  assert.ok(enters.length <= 1, JSON.stringify(aliceGot));
  for (const enter of enters) {
    assert.equal(enter.message_body.sender_username, "bob");
  }
  await alice.silent(0);
});

Deno.test("cluster on a REDIS_URL naming one node of a Redis Cluster: nodes find the cluster and chat across nodes", async () => {
  await using cluster = await startCluster(0, {}, "redis-cluster");
  const one = cluster.redisCluster!.nodes[3]!.url;
  await using a = await serve({ redisUrl: one });
  await using b = await serve({ redisUrl: one });
  for (const node of [a, b]) {
    await waitFor(() => node.server.bus?.up === true, "in sync", 10_000);
  }
  await using alice = await TestClient.connect(a.wsUrl);
  await using bob = await TestClient.connect(b.wsUrl);
  assert.deepEqual(await alice.enter("alice", "r"), ["alice"]);
  assert.deepEqual(await bob.enter("bob", "r"), ["alice", "bob"]);
  assert.equal((await alice.expect("Enter")).sender_username, "bob");
  const sent = await answerTo(
    alice,
    "GroupChat",
    {
      sender_username: "alice",
      room: "r",
      content: "hi",
    },
    "g1",
    5000,
  );
  assert.equal(sent.answer.message_type, "Ack");
  assert.equal((await bob.expect("GroupChat")).content, "hi");
});
