/**
 * Cluster presence across a Redis that comes back empty (issue 11, finding
 * 6): the nodes put their records back, and nobody is announced as entering
 * or leaving who stayed all along. Two nodes on a real `redis-server`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { NODE_TTL_MS, RedisBus } from "../../src/redis/bus.ts";
import { startLocalRedis } from "../../tools/local_redis.ts";
import { connectRedis } from "../../src/redis/connection.ts";
import { KEYS } from "../../src/redis/keys.ts";
import { TestClient, waitFor } from "../support/helpers.ts";
import {
  collect,
  redisCommand,
  startCluster,
  waitForHealth,
} from "../support/cluster_helpers.ts";

Deno.test("cluster: a Redis that comes back empty brings no Enter or Leave for users who stayed; presence is rebuilt", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.nodes;
  assert.ok(a && b);
  await using alice = await TestClient.connect(a.wsUrl);
  await using carol = await TestClient.connect(a.wsUrl);
  await using bob = await TestClient.connect(b.wsUrl);
  await alice.enter("alice", "r");
  await carol.enter("carol", "r");
  await bob.enter("bob", "r");
  await collect(alice, { Enter: 2 });
  await collect(carol, { Enter: 1 });

  // Everything is gone: the append-only file replays the FLUSHALL.
  assert.equal(await redisCommand(cluster.redis.port, "FLUSHALL"), "+OK");
  await cluster.redis.restart();
  for (const node of cluster.nodes) {
    await waitForHealth(node.httpUrl, "ok", 10_000);
  }
  // Whichever node synced first, the other's users were never away.
  await alice.silent(1500);
  await carol.silent(0);
  await bob.silent(0);

  // Redis holds the presence again, and the rooms work across nodes.
  const port = cluster.redis.port;
  assert.equal(await redisCommand(port, "HLEN", KEYS.presence("r")), ":3");
  for (const user of ["alice", "bob", "carol"]) {
    assert.equal(
      await redisCommand(port, "HGET", KEYS.presence("r"), user),
      "$1",
      user,
    );
  }
  await using dave = await TestClient.connect(b.wsUrl);
  assert.deepEqual(
    (await dave.enter("dave", "r")).toSorted(),
    ["alice", "bob", "carol", "dave"],
  );
  for (const client of [alice, carol, bob]) {
    const enter = await client.expect("Enter");
    assert.equal(enter.sender_username, "dave");
    await client.silent(0);
  }
});

Deno.test("cluster: a node reaped as dead that comes back announces its users again", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.nodes;
  assert.ok(a && b);
  await using alice = await TestClient.connect(a.wsUrl);
  await using bob = await TestClient.connect(b.wsUrl);
  await alice.enter("alice", "r");
  await bob.enter("bob", "r");
  assert.equal((await alice.expect("Enter")).sender_username, "bob");
  // B looks dead to A (its heartbeat key keeps vanishing) until A reaps it;
  // A reaps only after NODE_TTL_MS in sync (a loaded machine may take a
  // heartbeat or two more: the bound is generous, only the order is tested).
  const port = cluster.redis.port;
  const bAlive = KEYS.alive(b.server.bus!.nodeId);
  const deadline = Date.now() + NODE_TTL_MS + 15_000;
  while (alice.frames.length === 0 && Date.now() < deadline) {
    await redisCommand(port, "DEL", bAlive);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const leave = await alice.expect("Leave");
  assert.equal(leave.sender_username, "bob");
  assert.equal(leave.reason, "disconnected");
  // B's link drops and it syncs again: bob, who A was told left, enters.
  assert.match(
    await redisCommand(port, "CLIENT", "KILL", "TYPE", "pubsub"),
    /^:[1-9]/,
  );
  const enter = await alice.next(10_000);
  assert.equal(enter.message_type, "Enter", JSON.stringify(enter));
  assert.equal(enter.message_body.sender_username, "bob");
  await alice.silent(500);
  await bob.silent(0);
});

Deno.test("cluster bus: a join of a user the node already holds in the room announces nobody, even when Redis lost the record", async () => {
  await using redis = await startLocalRedis();
  const commands = connectRedis(redis.url, { name: "n1", log: () => {} });
  const listener = connectRedis(redis.url, { name: "n2", log: () => {} });
  const bus = new RedisBus(commands, {
    message: () => {},
    synced: () => {},
    snapshot: () => ({ users: [], presence: [], seqs: [] }),
  }, { nodeId: "n1", log: () => {} });
  try {
    await bus.start();
    // In sync first: the first sync (with this test's empty snapshot) would
    // otherwise race the joins below and take their records back out.
    await waitFor(() => commands.up && listener.up && bus.up, "redis", 5000);
    const heard: string[] = [];
    await listener.client.sSubscribe(
      KEYS.roomChannel("r"),
      (payload) => heard.push(payload),
    );
    // n2 has members in the room; Redis holds no record of alice (empty).
    await commands.command(["SADD", KEYS.roomNodes("r"), "n2"]);
    const request = {
      conn: 1,
      room: "r",
      username: "alice",
      claim: "none" as const,
      timestamp: 1,
    };
    const quiet = await bus.join({ ...request, held: true });
    assert.equal(quiet.kind === "joined" && quiet.isNew, true);
    // The record is back either way.
    assert.equal(
      await commands.command(["HGET", KEYS.presence("r"), "alice"]),
      "1",
    );
    await commands.command(["SPUBLISH", KEYS.roomChannel("r"), "END"]);
    await waitFor(() => heard.includes("END"), "marker", 5000);
    assert.deepEqual(heard, ["END"], "no Enter published");

    // A user new on this node is announced as before.
    await bus.join({ ...request, username: "bob" });
    await commands.command(["SPUBLISH", KEYS.roomChannel("r"), "END2"]);
    await waitFor(() => heard.includes("END2"), "marker", 5000);
    assert.equal(heard.length, 3);
    assert.match(heard[1]!, /^e.*"sender_username":"bob"/);
  } finally {
    await bus.stop();
    await listener.close();
    await commands.close();
  }
});
